"""Fashion-MNIST (Zalando): 70,000 28x28 grey images of 10 clothing classes.

Sources, in order: Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist),
the cache folder, or a download from the upstream mirror (`download()`). Every file is checked
against the sha256 of its *decompressed* IDX content (Debian re-compresses the files, so the .gz
bytes differ from upstream's while the content is identical); downloads of the training files are
also checked against upstream's published .gz sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from fastdeepiot.errors import DataMissingError
from fastdeepiot.tasks.download import ChecksumError, cache_dir, fetch

CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRROR = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
CACHE_SUBDIR = "fashion-mnist"

# file -> (sha256 of the decompressed IDX bytes, sha256 of upstream's .gz or None if not pinned)
FILES = {
    "train-images-idx3-ubyte.gz": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels-idx1-ubyte.gz": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "t10k-images-idx3-ubyte.gz": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", None),
    "t10k-labels-idx1-ubyte.gz": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", None),
}

INSTALL_HINT = ("install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                "or download it with `fastdeepiot tasks --download fashion` "
                "(python: fastdeepiot.tasks.fashion.download())")


def data_dir() -> Path | None:
    """A folder holding all four files: $FASTDEEPIOT_FASHION_DIR, Debian's, or the cache's."""
    cands = [os.environ.get("FASTDEEPIOT_FASHION_DIR"), DEBIAN_DIR, cache_dir() / CACHE_SUBDIR]
    for c in cands:
        if c and all((Path(c) / f).is_file() for f in FILES):
            return Path(c)
    return None


def read_idx(payload: bytes) -> np.ndarray:
    """Parse an IDX file (big-endian header: 0x0000, type 0x08 = uint8, ndim, dims)."""
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != 0x08:
        raise DataMissingError("not an IDX uint8 file")
    ndim = payload[3]
    dims = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataMissingError(f"IDX file truncated: header says {dims}, holds {data.size} values")
    return data.reshape(dims)


def read_verified(path: Path, content_sha256: str | None) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        payload = f.read()
    if content_sha256 is not None:
        got = hashlib.sha256(payload).hexdigest()
        if got != content_sha256:
            raise ChecksumError(f"{path}: content sha256 {got} does not match the expected {content_sha256}")
    return read_idx(payload)


def download(mirror: str = MIRROR, files: dict | None = None, progress: bool = True) -> Path:
    """Download the four files into <cache>/fashion-mnist, each checked; returns the folder."""
    files = FILES if files is None else files
    for name, (content_sha, gz_sha) in files.items():
        p = fetch(mirror + name, f"{CACHE_SUBDIR}/{name}", gz_sha, progress=progress)
        try:
            read_verified(p, content_sha)
        except ChecksumError:
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".sha256").unlink(missing_ok=True)
            raise
    return cache_dir() / CACHE_SUBDIR


_memory: dict[str, tuple] = {}


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images (60000, 28, 28) uint8, train labels, test images (10000, 28, 28), test labels)."""
    d = data_dir()
    if d is None:
        raise DataMissingError(f"Fashion-MNIST is not installed; {INSTALL_HINT}")
    key = str(d)
    if key not in _memory:
        arr = [read_verified(d / f, FILES[f][0]) for f in
               ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
        _memory[key] = tuple(arr)
    return _memory[key]


def source_description() -> str:
    d = data_dir()
    return f"Fashion-MNIST ({d})" if d else "Fashion-MNIST (not installed: apt-get install dataset-fashion-mnist)"
