"""The boundary for files fastdeepiot writes: check an output path before any work, write it atomically.

    out = check_output(path, kind="timemodel", inputs=[db], force=force)   # before any work
    atomic_write_text(out, text)                                           # after it
    with atomic_path(out) as tmp: torch.save(obj, tmp)                     # for writers that take a path

Promises (docs/promises.md):

- An output path that resolves to an input of the same command (or a SQLite store's -wal/-shm/-journal
  file) is refused.
- A directory, a missing folder, or a folder we cannot write to is refused before any work starts.
- An existing file of another kind (a measurement database, a time model, a checkpoint, ...) is not
  overwritten without `force`; a file of the same kind is replaced (re-running a command updates its output).
- Every artifact is written to a temporary file in the same folder and renamed over the target, so a killed
  or failing command leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from fastdeepiot.errors import UserError

# ------------------------------------------------------------------------------------------ file kinds

KIND_NAMES = {
    "sqlite": "a SQLite database (a measurement store?)",
    "timemodel": "a fastdeepiot time model",
    "checkpoint": "a PyTorch checkpoint",
    "exported": "a torch.export program",
    "zip": "a zip archive",
    "pickle": "a Python pickle",
    "plan": "a fastdeepiot compression plan",
    "metrics": "a fastdeepiot train metrics file",
    "report": "a fastdeepiot compression report",
    "json": "a JSON file",
    "csv": "a CSV file",
    "parquet": "a Parquet file",
    "png": "a PNG image",
    "pdf": "a PDF document",
    "svg": "an SVG image",
    "onnx": "an ONNX model",
    "text": "a text file",
    "binary": "a binary file",
    "empty": "an empty file",
}

_SNIFF_BYTES = 4096


def sniff(path: str | os.PathLike) -> str:
    """The kind of an existing regular file, from its first bytes (see KIND_NAMES)."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "empty"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(_LEGACY_TORCH):
        return "checkpoint"  # torch.save's format before its zip archives
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\x08") and b"\x12\x07pytorch" in head[:16]:
        return "onnx"  # a ModelProto: ir_version, then producer_name "pytorch"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the window is still text
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return "binary"
    s = text.lstrip()
    if s.startswith("{") or s.startswith("["):
        return _json_kind(path, text)
    if (s.startswith("<?xml") or s.startswith("<svg")) and "<svg" in s:
        return "svg"
    first = s.splitlines()[0] if s else ""
    if first.startswith("kind,family,config_key"):
        return "csv"
    return "text"


# torch.save(..., _use_new_zipfile_serialization=False): pickle protocol 2, then torch's magic number as a long
_LEGACY_TORCH = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _zip_kind(path) -> str:
    """torch.save writes a zip holding <archive>/data.pkl; torch.export.save one holding <archive>/archive_format.
    Any other zip (.npz, .docx, a user's archive) is not ours to replace."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "binary"
    tails = {n.split("/", 1)[1] for n in names if "/" in n}
    if "data.pkl" in tails:
        return "checkpoint"
    if "archive_format" in tails:
        return "exported"
    return "zip"


_JSON_FORMATS = {"fastdeepiot.timemodel": "timemodel", "fastdeepiot.compression.plan": "plan"}
# Our JSON documents without a "format" key, told by the top-level keys their writers always put there:
# `train`'s metrics (--metrics-json) and the .report.json of `compress` and `baseline` (one kind: both are a
# compression's report, and either replaces the other at the same -o)
_JSON_KEYS = {"metrics": {"accuracy", "macro_f1", "best_val_accuracy"},
              "report": {"base", "final", "settings", "plan"}}


def _json_kind(path, head: str) -> str:
    """The kind of a JSON document: by its top-level "format" (a whole small file is parsed; a large one is
    judged by its first "format" key, which our writers put first), else by its keys (`_JSON_KEYS`), else
    "json"."""
    if os.path.getsize(path) <= _PARSE_LIMIT:
        try:
            with open(path, "rb") as f:
                obj = json.loads(f.read())
        except (ValueError, RecursionError):
            obj = None  # damaged: judged by its first bytes, as a large one
        else:
            if not isinstance(obj, dict):
                return "json"
            fmt = obj.get("format")
            if isinstance(fmt, str):
                return _JSON_FORMATS.get(fmt, "json")
            return next((kind for kind, keys in _JSON_KEYS.items() if keys <= obj.keys()), "json")
    m = re.match(r'\s*\{\s*"format"\s*:\s*"([^"]*)"', head)
    return _JSON_FORMATS.get(m.group(1), "json") if m else "json"


_PARSE_LIMIT = 64 * 1024**2


# --------------------------------------------------------------------------------- checking outputs


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


SQLITE_SIDECARS = ("-wal", "-shm", "-journal")  # the files SQLite keeps beside a database X: X-wal, X-shm, X-journal


def sqlite_sidecar_of(p: str | os.PathLike) -> str | None:
    """The database a path would be a SQLite sidecar of (its name less the suffix), or None. SQLite deletes or
    rewrites such a file whenever that database is opened, whatever it holds."""
    name = os.fspath(p)
    return next((name[:-len(s)] for s in SQLITE_SIDECARS if name.endswith(s) and len(name) > len(s)), None)


def refuse_sidecar_name(p: str | os.PathLike, label: str) -> None:
    """UserError for a file name ending in -wal, -shm or -journal (see `sqlite_sidecar_of`)."""
    db = sqlite_sidecar_of(p)
    if db is not None:
        raise UserError(f"{label}: a name ending in {', '.join(SQLITE_SIDECARS)} is one SQLite keeps beside a "
                        f"database ({db}), and opening that database deletes or rewrites it; "
                        "choose another name")


def _input_aliases(p: Path) -> list[Path]:
    """An input and the files SQLite keeps beside it (writing over those corrupts the store)."""
    return [p] + [Path(str(p) + s) for s in SQLITE_SIDECARS]


def check_output(path: str | os.PathLike, *, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
                 force: bool = False, option: str = "output") -> Path:
    """Refuse (UserError) an output path that would lose data or cannot be written, before any work.

    kind: what will be written there (a key of KIND_NAMES); an existing file of that kind, or an empty one,
    is replaced.
    inputs: the command's input files. option: how the message names the path (e.g. '-o')."""
    p = Path(path)
    label = f"{option} {p}" if option else str(p)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise UserError(f"{label}: not a file name")
    for inp in inputs:
        if inp is None:
            continue
        for alias in _input_aliases(Path(inp)):
            if _same_file(p, alias):
                raise UserError(f"{label} is an input of this command ({inp}); writing it would destroy "
                                f"the input: choose another output path")
    refuse_sidecar_name(p, label)
    if p.is_dir():
        raise UserError(f"{label} is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"{label}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UserError(f"{label}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{label}: cannot write in folder {parent} (permission denied)")
    if p.exists() or p.is_symlink():
        if not p.exists():
            raise UserError(f"{label} is a broken symbolic link")
        if not p.is_file():
            raise UserError(f"{label} exists and is not a regular file")
        if not os.access(p, os.W_OK):
            raise UserError(f"{label} exists and is read-only; remove it or choose another path")
        try:
            found = sniff(p)
        except OSError as e:
            raise UserError(f"{label}: cannot read the existing file ({e.strerror})") from None
        compatible = {kind, "empty"}
        if found not in compatible and not force:
            raise UserError(f"{label} exists and is {KIND_NAMES.get(found, found)}, not "
                            f"{KIND_NAMES.get(kind, kind)}; refusing to overwrite it (choose another path, "
                            f"or pass --force)")
    return p


# ----------------------------------------------------------------------------------- atomic writing


def _mode_for(target: Path) -> int:
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _tmp_name(target: Path) -> Path:
    # keeps the suffix last, for writers that pick the format from it (matplotlib, pyarrow)
    return target.with_name(f".{target.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{target.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and rename it over `path`,
    on failure remove it (the old file, if any, is untouched)."""
    target = Path(path)
    target = target.parent.resolve() / target.name if target.parent.exists() else target
    tmp = _tmp_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        os.chmod(tmp, _mode_for(target))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:  # disk full, permissions changed under us, ...: the user's to fix
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside the outputs, for a writer that writes several files by name; move each
    into place with `os.replace` (same file system: atomic per file). Removed afterwards."""
    folder = Path(folder) if str(folder) else Path(".")
    tmp = folder / f".fastdeepiot.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
