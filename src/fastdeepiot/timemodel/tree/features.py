"""The design matrix of one layer family: ``featurize(configs)`` and the staircase/cache columns.

``featurize(configs)`` turns a list of ``LayerConfig`` of one family into a DataFrame
(``featurize_columns(configs)``: the same columns as a dict of numpy arrays, what prediction reads) with
  * the family parameters (numbers; string parameters such as an activation ``kind`` or pooling
    ``mode`` as string columns, split one-vs-rest),
  * the physical features from ``LayerConfig.features()`` (flops, input_bytes, output_bytes,
    weight_bytes, out_elements, steps, ...),
  * ``working_set_bytes`` = input_bytes + output_bytes + weight_bytes (splits on it find cache sizes),
  * ``{w}_mod{q}`` = w % q for every width parameter w of the family and q in 4, 8, 16, 32, 64
    (a split "w % q == 0" separates aligned from unaligned widths),
  * ``flops_pad{q}`` = flops * prod_w ceil(w/q)*q / w over the padded widths of the family (for
    convolutions out_channels and in_channels per group; linear: out/in_features; RNNs: hidden and
    input size; element-wise: channels) -- a leaf feature, not a split candidate,
  * ``kernel_path`` when ``paths`` is given: the code path the backend runs each configuration through
    (``graph.paths.kernel_paths``; a string column, so a categorical split candidate).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

DEFAULT_QUANTA = (4, 8, 16, 32, 64)
# Leaf regression features, in this order, when present (and not all zero).
# score_bytes (attention's seq_len x seq_len scores), activation_bytes (a whole module's intermediates)
# and rows (independent normalisations of LayerNorm / GroupNorm) exist only in issue 17's families;
# steps and step_weight_bytes (the recurrent weights read again at every step) only in the RNN families.
DEFAULT_LEAF_FEATURES = ("flops", "input_bytes", "output_bytes", "weight_bytes", "steps", "score_bytes",
                         "activation_bytes", "rows", "step_weight_bytes")
WORK_FEATURE = "flops"
PAD_RE = re.compile(r"^flops_pad(\d+)$")  # the padded variants of WORK_FEATURE
PATH_COLUMN = "kernel_path"  # the column `paths` fills (graph.paths.kernel_paths; this package does not import graph)
MOD_RE = re.compile(r"^(.+)_mod(\d+)$")  # w % q columns


def _pad_widths(family: str, columns: Iterable[str], width_params: Sequence[str]) -> list[str]:
    cols = set(columns)
    if family.startswith("conv"):
        out = [c for c in ("out_channels", "cin_per_group") if c in cols]
        return out
    return [w for w in width_params if w in cols]


def add_staircase_features(df, width_cols: Sequence[str], pad_cols: Sequence[str] | None = None,
                           quanta: Sequence[int] = DEFAULT_QUANTA, work_col: str = WORK_FEATURE):
    """Add the derived staircase/cache columns (in place; returns df). See the module docstring.

    df: a DataFrame or a dict of equally long column arrays. width_cols get ``{w}_mod{q}`` columns;
    pad_cols (default width_cols) scale ``work_col`` into ``flops_pad{q}``. ``working_set_bytes`` is
    added when the three byte columns are present.
    """
    pad_cols = list(width_cols) if pad_cols is None else list(pad_cols)
    n = len(df) if not isinstance(df, dict) else len(next(iter(df.values()), ()))
    for w in width_cols:
        v = np.asarray(df[w], dtype=float)
        for q in quanta:
            df[f"{w}_mod{q}"] = np.mod(v, q)
    if work_col in df and pad_cols:
        work = np.asarray(df[work_col], dtype=float)
        for q in quanta:
            scale = np.ones(n)
            for w in pad_cols:
                v = np.maximum(np.asarray(df[w], dtype=float), 1.0)
                scale *= np.ceil(v / q) * q / v
            df[f"flops_pad{q}"] = work * scale
    if all(c in df for c in ("input_bytes", "output_bytes", "weight_bytes")):
        df["working_set_bytes"] = (np.asarray(df["input_bytes"], float) + np.asarray(df["output_bytes"], float)
                                   + np.asarray(df["weight_bytes"], float))
    return df


def featurize(configs, quanta: Sequence[int] = DEFAULT_QUANTA, paths: Sequence[str] | None = None):
    """Design matrix (pandas DataFrame, one row per config) for configs of a single family."""
    cols = featurize_columns(configs, quanta, paths)
    return cols if isinstance(cols, pd.DataFrame) else pd.DataFrame(cols)


def featurize_columns(configs, quanta: Sequence[int] = DEFAULT_QUANTA, paths: Sequence[str] | None = None):
    """``featurize`` as a dict of column arrays (float64, or object for string parameters), in the
    DataFrame's column order; a DataFrame where the configurations do not all have the same columns
    (pandas fills the gaps with NaN, which the estimators then refuse)."""
    configs = list(configs)
    if not configs:
        raise ValueError("featurize: no configurations given")
    fams = {c.family for c in configs}
    if len(fams) != 1:
        raise ValueError(f"featurize: configurations of one family expected, got {sorted(fams)}")
    family = configs[0].family_obj
    rows = []
    for c in configs:
        r: dict[str, Any] = {k: v for k, v in c.params.items() if isinstance(v, str)}
        r.update(c.features())
        rows.append(r)
    df = _columns(rows)
    if df is None:
        df = pd.DataFrame(rows)
    widths = [w for w in family.width_params if w in df]
    add_staircase_features(df, widths, _pad_widths(family.name, list(df), widths), quanta)
    if paths is not None:
        if len(paths) != len(configs):
            raise ValueError(f"featurize: {len(paths)} kernel paths for {len(configs)} configurations")
        df[PATH_COLUMN] = np.array(list(paths), dtype=object)
    return df


def _columns(rows: list[dict]) -> dict | None:
    """The rows as column arrays (string columns as object arrays), or None where they differ in
    their keys or mix strings and numbers in a column."""
    keys = rows[0].keys()
    if any(r.keys() != keys for r in rows):
        return None
    out = {}
    for k in keys:
        vals = [r[k] for r in rows]
        n_str = sum(isinstance(v, str) for v in vals)
        if n_str == len(vals):
            out[k] = np.array(vals, dtype=object)
        elif n_str == 0:
            out[k] = np.array(vals, dtype=float)
        else:
            return None
    return out
