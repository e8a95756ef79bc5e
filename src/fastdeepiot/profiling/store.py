"""The measurement store: one SQLite file per device, every measurement with its conditions.

Durability: WAL journal, synchronous=FULL, one transaction per measurement. A profiler killed at any
moment (kill -9) loses at most the measurement in flight; re-running resumes because a measurement's
key (device, configuration) is UNIQUE and the profiler skips keys already stored. Two profilers on one
file do not corrupt it: SQLite serialises writers (busy timeout) and `INSERT OR IGNORE` keeps the first
of two racing measurements of the same key.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from fastdeepiot.errors import StoreError, UserError
from fastdeepiot.safeio import atomic_path, refuse_sidecar_name

SCHEMA_VERSION = 1
APPLICATION_ID = 0x46444954  # "FDIT": marks the file as ours (PRAGMA application_id)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY, hash TEXT UNIQUE NOT NULL, fingerprint_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conditions (
    id INTEGER PRIMARY KEY, hash TEXT UNIQUE NOT NULL, device_id INTEGER NOT NULL REFERENCES devices(id),
    conditions_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    conditions_id INTEGER NOT NULL REFERENCES conditions(id),
    kind TEXT NOT NULL CHECK (kind IN ('layer', 'network')),
    family TEXT NOT NULL,
    config_key TEXT NOT NULL,
    config_json TEXT NOT NULL,
    median_ms REAL NOT NULL, p10_ms REAL NOT NULL, p90_ms REAL NOT NULL,
    rel_iqr REAL NOT NULL, n_calls INTEGER NOT NULL, remeasured INTEGER NOT NULL,
    source TEXT NOT NULL,
    measured_at TEXT NOT NULL,
    UNIQUE (device_id, config_key));
CREATE INDEX IF NOT EXISTS measurements_family ON measurements(device_id, family);
"""


@functools.lru_cache(maxsize=1)
def _schema_columns() -> dict[str, set[str]]:
    """Each table's columns as `_SCHEMA` creates them (what an opened store is checked against)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    finally:
        conn.close()


FINGERPRINT_KEYS = {"backend": str, "processor": str, "threads": int, "dtype": str}  # Backend.fingerprint()


def fingerprint_problem(fp) -> str | None:
    """What makes `fp` no device fingerprint (None when it is one): an object holding at least the
    entries `Backend.fingerprint()` gives (backend, processor, dtype as text; threads a whole number >= 1),
    all JSON. Checked where a store is opened to record and on every device a store holds."""
    if not isinstance(fp, dict):
        return f"a {type(fp).__name__}, not an object"
    for k, t in FINGERPRINT_KEYS.items():
        if k not in fp:
            return f"no {k!r} entry"
        v = fp[k]
        if not isinstance(v, t) or isinstance(v, bool) or (t is int and v < 1) or (t is str and not v):
            return f"{k!r} is {v!r}"
    try:
        json.dumps(fp, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        return f"not JSON ({e})"
    return None


def _hash(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Measurement:
    kind: str
    family: str
    config_key: str
    config: dict
    median_ms: float
    p10_ms: float
    p90_ms: float
    rel_iqr: float
    n_calls: int
    remeasured: int
    source: str
    measured_at: str
    device: dict
    conditions: dict


class Store:
    """Open with `Store.open(path, fingerprint=...)` to write, or `Store.open(path)` to read."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self.conn = conn
        self.path = path
        self._device_id: int | None = None
        self._device: dict | None = None  # the fingerprint the store was opened to record (`_bind_device`)
        self._conditions_id: int | None = None
        self.closed = False

    # ------------------------------------------------------------------ opening and checking
    @classmethod
    def open(cls, path: str | os.PathLike, fingerprint: dict | None = None, *, create: bool = False,
             force: bool = False) -> "Store":
        """Open (and with `create`, make) a store. With a `fingerprint`, the file must hold
        measurements of that device only, unless `force` (then the new device is added beside)."""
        if not isinstance(path, (str, os.PathLike)):
            raise UserError(f"a measurement database path must be a str or os.PathLike, got {type(path).__name__}")
        path = os.fsdecode(os.fspath(path))
        if fingerprint is not None:  # refused before the file is touched
            why = fingerprint_problem(fingerprint)
            if why:
                raise UserError(f"fingerprint must be a device fingerprint (backend.fingerprint()): {why}")
        refuse_sidecar_name(path, path)
        _check_sidecars(path)
        exists = os.path.exists(path)
        if not exists and not create:
            raise StoreError(f"{path}: no such measurement database")
        if exists and os.path.isdir(path):
            raise StoreError(f"{path}: is a directory, not a measurement database")
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise StoreError(f"{path}: not a readable SQLite database ({e})") from None
        if has_tables and app_id != APPLICATION_ID:
            conn.close()
            raise StoreError(f"{path}: a SQLite file, but not a fastdeepiot measurement database")
        store = cls(conn, path)
        try:
            if not has_tables:
                if not create:
                    raise StoreError(f"{path}: empty file, not a fastdeepiot measurement database")
                store._create()
            store._check_schema()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreError(f"{path}: database is corrupt ({ok}); re-profile into a new file")
            if fingerprint is not None:
                store._bind_device(fingerprint, force)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            conn.close()
            raise StoreError(f"{path}: corrupt measurement database ({e})") from None
        except StoreError:
            conn.close()
            raise
        return store

    def _create(self) -> None:
        with self._tx():
            self.conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                              (str(SCHEMA_VERSION),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (_now(),))

    def _check_schema(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no schema version; not a fastdeepiot measurement database")
        if str(row[0]) != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: schema version {row[0]}, this fastdeepiot reads "
                             f"version {SCHEMA_VERSION}")
        for table, columns in _schema_columns().items():  # a damaged table definition (a renamed column)
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            if not columns <= have:
                raise StoreError(f"{self.path}: corrupt measurement database (table {table} lacks "
                                 f"{', '.join(sorted(columns - have))})")

    def _bind_device(self, fingerprint: dict, force: bool) -> None:
        h = _hash(fingerprint)
        held = [(r[0], self._fingerprint_json(r[1])) for r in self.conn.execute(
            "SELECT hash, fingerprint_json FROM devices")]  # a damaged device is refused, ours too
        others = [fp for hh, fp in held if hh != h]
        if others and not force:
            raise StoreError(
                f"{self.path} holds measurements of another device ({_describe(others[0])}), "
                f"not of {_describe(fingerprint)}; use another --db, or --force to add this device")
        with self._tx():
            self.conn.execute("INSERT OR IGNORE INTO devices (hash, fingerprint_json) VALUES (?, ?)",
                              (h, json.dumps(fingerprint, sort_keys=True)))
        self._device_id = self.conn.execute("SELECT id FROM devices WHERE hash=?", (h,)).fetchone()[0]
        self._device = fingerprint

    def check_device(self, fingerprint: dict) -> None:
        """StoreError unless the store was opened to record measurements of the device `fingerprint`
        describes (`Store.open(path, fingerprint)`): another device's times must not land under its name."""
        bound = self._device
        if self.closed:
            raise StoreError(f"{self.path} is closed; open it again (Store.open(path, backend.fingerprint())) "
                             "to record measurements")
        if bound is None:
            raise StoreError(f"{self.path} was opened to read; open it with the device's fingerprint "
                             "(Store.open(path, backend.fingerprint(), create=True)) to record measurements")
        if _hash(bound) != _hash(fingerprint):
            raise StoreError(f"{self.path} is open for {_describe(bound)}, not for {_describe(fingerprint)}: "
                             "open it with this backend's fingerprint")

    def set_conditions(self, conditions: dict) -> None:
        """The conditions recorded with every following measurement (versions, platform, ...)."""
        if self._device_id is None:
            raise StoreError(f"{self.path} was opened to read; open it with the device's fingerprint "
                             "(Store.open(path, backend.fingerprint(), create=True)) to record measurements")
        h = _hash(conditions)
        with self._tx():
            self.conn.execute("INSERT OR IGNORE INTO conditions (hash, device_id, conditions_json) "
                              "VALUES (?, ?, ?)", (h, self._device_id,
                                                   json.dumps(conditions, sort_keys=True)))
        self._conditions_id = self.conn.execute(
            "SELECT id FROM conditions WHERE hash=?", (h,)).fetchone()[0]

    # ------------------------------------------------------------------ writing
    def _tx(self):
        conn = self.conn

        class _Tx:
            def __enter__(self_):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_, exc_type, *_):
                conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Tx()

    def measured_keys(self) -> set[str]:
        """Configuration keys already measured for the bound device (what a resumed run skips)."""
        return {r[0] for r in self.conn.execute(
            "SELECT config_key FROM measurements WHERE device_id=?", (self._device_id,))}

    def add(self, *, kind: str, family: str, config_key: str, config: dict, timing, source: str) -> bool:
        """Record one measurement in its own transaction. False if the key was already stored."""
        if self._conditions_id is None:
            raise StoreError("call set_conditions() before add(): the conditions are recorded with every measurement")
        with self._tx():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO measurements (device_id, conditions_id, kind, family, config_key,"
                " config_json, median_ms, p10_ms, p90_ms, rel_iqr, n_calls, remeasured, source,"
                " measured_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (self._device_id, self._conditions_id, kind, family, config_key,
                 json.dumps(config, sort_keys=True), timing.median_ms, timing.p10_ms, timing.p90_ms,
                 timing.rel_iqr, timing.n_calls, timing.remeasured, source, _now()))
        return cur.rowcount == 1

    # ------------------------------------------------------------------ reading
    def _query(self, sql: str, args=()) -> list:
        """All rows of a read query; a damaged file is a StoreError, not a crash."""
        try:
            return self.conn.execute(sql, args).fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise StoreError(f"{self.path}: corrupt measurement database ({e})") from None

    def _json(self, text, what: str) -> dict:
        try:
            obj = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            raise StoreError(f"{self.path}: corrupt measurement database (unreadable {what})")
        return obj

    def _fingerprint_json(self, text) -> dict:
        """A device the store holds: unreadable or not a fingerprint (`fingerprint_problem`) is damage."""
        fp = self._json(text, "device")
        why = fingerprint_problem(fp)
        if why:
            raise StoreError(f"{self.path}: corrupt measurement database (unreadable device: {why})")
        return fp

    def devices(self) -> list[dict]:
        return [self._fingerprint_json(r[0]) for r in self._query("SELECT fingerprint_json FROM devices")]

    def measurements(self, *, kind: str | None = None, family: str | None = None,
                     device: dict | None = None) -> Iterator[Measurement]:
        q = ("SELECT m.*, d.fingerprint_json, c.conditions_json FROM measurements m "
             "JOIN devices d ON d.id = m.device_id JOIN conditions c ON c.id = m.conditions_id WHERE 1=1")
        args: list = []
        if kind:
            q += " AND m.kind=?"
            args.append(kind)
        if family:
            q += " AND m.family=?"
            args.append(family)
        if device is not None:
            q += " AND d.hash=?"
            args.append(_hash(device))
        q += " ORDER BY m.id"
        try:
            for r in self.conn.execute(q, args):
                ms = (r["median_ms"], r["p10_ms"], r["p90_ms"], r["rel_iqr"])  # a median of 0 is no measurement
                if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in ms) or ms[0] <= 0:
                    raise StoreError(f"{self.path}: corrupt measurement database (measurement "
                                     f"{str(r['config_key'])[:80]} has an impossible time)")
                yield Measurement(
                    kind=r["kind"], family=r["family"], config_key=r["config_key"],
                    config=self._json(r["config_json"], "configuration"), median_ms=r["median_ms"],
                    p10_ms=r["p10_ms"], p90_ms=r["p90_ms"], rel_iqr=r["rel_iqr"], n_calls=r["n_calls"],
                    remeasured=r["remeasured"], source=r["source"], measured_at=r["measured_at"],
                    device=self._fingerprint_json(r["fingerprint_json"]),
                    conditions=self._json(r["conditions_json"], "conditions"))
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise StoreError(f"{self.path}: corrupt measurement database ({e})") from None

    def latest_conditions(self, device: dict) -> dict:
        """The conditions of the device's most recent measurement ({} when it has none)."""
        rows = self._query(
            "SELECT c.conditions_json FROM measurements m JOIN devices d ON d.id = m.device_id "
            "JOIN conditions c ON c.id = m.conditions_id WHERE d.hash=? ORDER BY m.id DESC LIMIT 1",
            (_hash(device),))
        return self._json(rows[0][0], "conditions") if rows else {}

    def has(self, config_key: str) -> bool:
        """Whether the bound device already has a measurement of this key (stored by anyone)."""
        return self.conn.execute("SELECT 1 FROM measurements WHERE device_id=? AND config_key=?",
                                 (self._device_id, config_key)).fetchone() is not None

    def count(self) -> int:
        return self._query("SELECT count(*) FROM measurements")[0][0]

    def close(self) -> None:
        self.conn.close()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


EXPORT_COLUMNS = ["kind", "family", "config_key", "median_ms", "p10_ms", "p90_ms", "rel_iqr", "n_calls",
                  "remeasured", "source", "measured_at", "backend", "processor", "threads", "dtype",
                  "conditions_json", "config_json"]


def export_rows(store: Store) -> Iterable[dict]:
    for m in store.measurements():
        yield {"kind": m.kind, "family": m.family, "config_key": m.config_key, "median_ms": m.median_ms,
               "p10_ms": m.p10_ms, "p90_ms": m.p90_ms, "rel_iqr": m.rel_iqr, "n_calls": m.n_calls,
               "remeasured": m.remeasured, "source": m.source, "measured_at": m.measured_at,
               "backend": m.device.get("backend"), "processor": m.device.get("processor"),
               "threads": m.device.get("threads"), "dtype": m.device.get("dtype"),
               "conditions_json": json.dumps(m.conditions, sort_keys=True),
               "config_json": json.dumps(m.config, sort_keys=True)}


def write_csv(store: Store, f: IO[str]) -> int:
    """Write every measurement as CSV to an open text stream (standard output for `export --csv -`)."""
    n = 0
    w = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
    w.writeheader()
    for row in export_rows(store):
        w.writerow(row)
        n += 1
    return n


def export_csv(store: Store, path: str) -> int:
    """Write every measurement to CSV (atomically: a temporary file in the same folder, then a rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        return write_csv(store, f)


def parquet_modules():
    """(pyarrow, pyarrow.parquet); StoreError where pyarrow is not installed (`export` asks before it
    writes anything)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError("Parquet export needs pyarrow (pip install pyarrow)") from None
    return pa, pq


def export_parquet(store: Store, path: str) -> int:
    pa, pq = parquet_modules()
    rows = list(export_rows(store))
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: [] for c in EXPORT_COLUMNS})
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))
    return len(rows)


def _describe(fp: dict) -> str:
    return f"{fp.get('backend')} on {fp.get('processor')}, {fp.get('threads')} thread(s)"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


_SIDECAR_MAGIC = {"-wal": (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"), "-journal": (b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7",),
                  "-shm": ((3007000).to_bytes(4, "little"), (3007000).to_bytes(4, "big"))}


def _check_sidecars(path: str) -> None:
    """StoreError when a file named like one SQLite keeps beside `path` (X-wal, X-shm, X-journal) exists and is
    not SQLite's: opening the database would delete or rewrite it (a user's file of that name is lost)."""
    for suffix, magics in _SIDECAR_MAGIC.items():
        side = path + suffix
        try:
            with open(side, "rb") as f:
                head = f.read(8)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreError(f"{side}: cannot read it ({e.strerror}); SQLite keeps a file of that name beside {path}") from None
        if not head.strip(b"\x00") or any(head.startswith(m) for m in magics):
            continue  # empty or zeroed (SQLite resets them), or SQLite's own
        raise StoreError(f"{side} exists and is not SQLite's own file of {path}; opening {path} would delete or "
                         f"rewrite it: move it away first")
