"""numpy -> JSON: the one helper every writer of JSON (time models, model trees, checkpoints' metrics,
reports) uses.

    to_jsonable(obj)      plain copy: dicts (str keys), lists (from tuples too), numpy scalars and arrays
                          as Python numbers and lists; anything else is kept as it is
    json_default(o)       the ``default=`` of json.dump(s): numpy scalars and arrays, else TypeError
    dump_json(path, obj)  write obj as JSON (json_default for numpy values), atomically
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastdeepiot.safeio import atomic_write_text


def to_jsonable(obj: Any) -> Any:
    """JSON-ready copy of obj (also what ``torch.load(weights_only=True)`` accepts): dict -> dict with
    str keys, list/tuple -> list, numpy bool/integer/floating -> bool/int/float, ndarray -> list."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, np.integer, np.floating, np.ndarray)):
        return json_default(obj)
    return obj


def json_default(o: Any) -> Any:
    """``json.dumps(obj, default=json_default)``: numpy values as Python ones; TypeError otherwise."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o)}")


def dump_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write obj to path as JSON (numpy values converted), atomically (a temporary file in the same folder,
    then a rename); returns the path."""
    return atomic_write_text(Path(path), json.dumps(obj, indent=indent, default=json_default))
