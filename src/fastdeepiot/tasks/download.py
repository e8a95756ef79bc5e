"""Download with a checksum, into the cache folder (~/.cache/fastdeepiot, or $FASTDEEPIOT_CACHE).

Only urllib; `url` may also be a file:// URL or a local path (used by the tests: no network).
A file whose sha256 does not match is never kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from fastdeepiot.errors import UserError


class ChecksumError(UserError):
    """A downloaded (or cached) file does not have the expected sha256."""


class DownloadError(UserError):
    """A download failed (no network, wrong URL, ...)."""


def cache_dir() -> Path:
    """The cache folder: $FASTDEEPIOT_CACHE, else ~/.cache/fastdeepiot (created on demand)."""
    root = os.environ.get("FASTDEEPIOT_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "fastdeepiot"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open(url: str, timeout: float):
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else url
        return open(path, "rb")
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme in {url!r}")
    req = urllib.request.Request(url, headers={"User-Agent": "fastdeepiot"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked above


def fetch(url: str, filename: str, sha256: str | None, *, timeout: float = 120.0,
          progress: bool = False) -> Path:
    """The cached file `filename`, downloading it from `url` first if needed, checked against `sha256`.

    `sha256=None` means the publisher gives no checksum: the digest of the first download is
    recorded next to the file (``<filename>.sha256``) and every later use is checked against it.
    """
    dest = cache_dir() / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    pinned = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (pinned.read_text().strip() if pinned.exists() else None)
    if dest.exists():
        got = sha256_file(dest)
        if expected is None or got == expected:
            return dest
        dest.unlink()  # corrupt or stale: download again
    part = dest.with_name(dest.name + ".part")
    try:
        with _open(url, timeout) as src, open(part, "wb") as out:
            if progress:
                print(f"downloading {url} -> {dest}")
            shutil.copyfileobj(src, out, 1 << 20)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {e}") from e
    got = sha256_file(part)
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; "
                            "the file was deleted (retry, or check the URL)")
    part.replace(dest)
    if sha256 is None and not pinned.exists():
        pinned.write_text(got + "\n")
    return dest
