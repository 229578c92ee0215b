"""The results database: every score the package computes, in one SQLite file.

A row is keyed by (model, benchmark, benchmark version, package version, weights hash, config hash): scoring the same
weights on the same benchmark version with the same package version and the same scoring configuration (the model's
region -> layer map, the benchmark's options, the arithmetic: ``runs.scoring.scoring_config``, stored in the row's
attrs as ``scoring_config``) again replaces the row (upsert); anything that could change the number gives a new row.
Databases written before the config hash existed are migrated on first use (their rows get an empty config hash,
so a sweep scores those pairs again rather than trusting a key that did not see the layers). Each row also records the time it took, the host and the creation time (ISO 8601, UTC),
plus the score's attributes as JSON (per-fold values and the like) for later inspection.

The file lives at ``data_home()/'results.sqlite'`` unless a path is given, is created on first use, and every write
is one transaction (with a generous busy timeout, so that parallel sweep workers can share it).
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import logging
import math
import os
import socket
import sqlite3
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from benchmarks_it_maps.home import _umask, atomic_file, data_home

logger = logging.getLogger(__name__)

DEFAULT_FILENAME = "results.sqlite"
#: Columns of the ``scores`` table, in order.
COLUMNS = ("id", "model", "benchmark", "benchmark_version", "package_version", "weights_hash", "config_hash",
           "score", "raw", "ceiling", "error", "layer", "seconds", "host", "created_at", "attrs_json")
KEY_COLUMNS = ("model", "benchmark", "benchmark_version", "package_version", "weights_hash", "config_hash")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    benchmark_version INTEGER NOT NULL,
    package_version TEXT NOT NULL,
    weights_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL DEFAULT '',
    score REAL,
    raw REAL,
    ceiling REAL,
    error REAL,
    layer TEXT,
    seconds REAL,
    host TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attrs_json TEXT NOT NULL DEFAULT '{}',
    UNIQUE (model, benchmark, benchmark_version, package_version, weights_hash, config_hash)
);
CREATE INDEX IF NOT EXISTS scores_model_benchmark ON scores (model, benchmark);
"""


def package_version() -> str:
    """The installed version of this package (``0+unknown`` when it is not installed)."""
    try:
        return version("brainscore-itmaps")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _scalar(value: Any) -> float | None:
    """A float from a number or a 0-d array/Score; None for None and for anything that is not a single number."""
    if value is None:
        return None
    try:
        array = np.asarray(getattr(value, "values", value), dtype=float)
    except (TypeError, ValueError):
        return None
    if array.size != 1:
        return None
    return float(array.reshape(()))


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Convert score attributes (numbers, arrays, xarray objects, dicts) to JSON; unknown objects become None."""
    if depth > 6:
        return None
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "values") and hasattr(value, "dims"):  # xarray objects
        value = value.values
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), depth) if value.ndim else _jsonable(value.item(), depth)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth) for v in value]  # nested lists (array rows) do not count as depth
    return None


def _dumps(attrs: Mapping[str, Any]) -> str:
    return json.dumps(_jsonable(dict(attrs)), allow_nan=False)  # NaN/inf were turned into null


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring a ``scores`` table written before the config hash existed to the current key (rows kept, config hash
    '' so they never match a new key). One transaction; a no-op when the table is current."""
    columns = [row[1] for row in connection.execute("PRAGMA table_info(scores)")]
    if "config_hash" in columns:
        return
    names = [c for c in COLUMNS if c in columns]
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("DROP INDEX IF EXISTS scores_model_benchmark")
        connection.execute("ALTER TABLE scores RENAME TO scores_before_config_hash")
        for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit half-way
            connection.execute(statement)
        connection.execute(f"INSERT INTO scores ({', '.join(names)}) "
                           f"SELECT {', '.join(names)} FROM scores_before_config_hash")
        connection.execute("DROP TABLE scores_before_config_hash")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    logger.info("results database migrated: key now includes the scoring configuration (config_hash)")


#: How long a write waits for another process's lock on the database (seconds; env BRAINSCORE_ITMAPS_DB_TIMEOUT).
LOCK_TIMEOUT_ENV = "BRAINSCORE_ITMAPS_DB_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 60.0


class ResultsDBError(ValueError):
    """The results database cannot be used (not a database, another schema, a folder, locked too long); one line
    naming the file and the fix."""


def _lock_timeout() -> float:
    try:
        return max(0.0, float(os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT_S


def _holders(path: Path) -> list[str]:
    """``pid (command)`` of other processes that have ``path`` open (from /proc; empty where it is not readable)."""
    target, found = str(path.resolve()), []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = fd_dir.parent.name
        if pid == str(os.getpid()):
            continue
        try:
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                command = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"pid {pid} ({' '.join(command.split())[:80]})")
        except OSError:
            continue
    return found


def _is_locked(error: sqlite3.Error) -> bool:
    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


class ResultsDB:
    """SQLite store of scores (see the module docstring). ``path=None`` uses ``data_home()/'results.sqlite'``."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else data_home() / DEFAULT_FILENAME

    # -- connection ------------------------------------------------------------------------------------------------
    def _while_locked(self, step, what: str):
        """Run ``step()``; while another process holds the database, say who (once) and retry until the timeout."""
        deadline, warned = time.monotonic() + _lock_timeout(), False
        while True:
            try:
                return step()
            except sqlite3.Error as error:
                if not _is_locked(error):
                    raise
                holders = ", ".join(_holders(self.path)) or "another process"
                if time.monotonic() >= deadline:
                    raise ResultsDBError(f"{self.path}: locked by {holders} for more than {_lock_timeout():g} s "
                                         f"({what}); wait for it to finish, stop it, or set {LOCK_TIMEOUT_ENV} "
                                         "to wait longer") from None
                if not warned:
                    logger.warning("%s is locked by %s; waiting up to %g s (%s)", self.path, holders,
                                   _lock_timeout(), what)
                    warned = True
                time.sleep(0.2)

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise ResultsDBError(f"{self.path}: is a folder, not a results database; pass --results FILE.sqlite "
                                 "or move the folder away")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ResultsDBError(f"{self.path}: cannot create its folder ({error.strerror}); pass --results "
                                 "FILE.sqlite in a writable folder") from None
        created = not self.path.exists()
        connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            columns = {row[1] for row in self._while_locked(
                lambda: connection.execute("PRAGMA table_info(scores)").fetchall(), "opening it")}
            # a table from before the config hash is migrated below; anything else missing is another schema
            missing = [c for c in COLUMNS if c not in columns and c != "config_hash"] if columns else []
            if not missing:
                self._while_locked(lambda: connection.executescript(_SCHEMA), "opening it")
                self._while_locked(lambda: _migrate(connection), "migrating it")
        except sqlite3.DatabaseError as error:
            connection.close()
            raise ResultsDBError(f"{self.path}: not a results database ({error}); move it away or pass --results "
                                 "NEW.sqlite") from None
        except BaseException:
            connection.close()
            raise
        if missing:
            connection.close()
            raise ResultsDBError(f"{self.path}: table 'scores' has another schema (no column(s) {missing}); it was "
                                 "not written by this package: pass --results NEW.sqlite")
        if created:
            os.chmod(self.path, 0o666 & ~_umask())  # SQLite creates 0644 whatever the umask
        return connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            self._while_locked(lambda: connection.execute("BEGIN IMMEDIATE"), "writing a score")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        finally:
            connection.close()

    # -- writing ---------------------------------------------------------------------------------------------------
    def record(self, model: str, benchmark: str, score: Any, *, benchmark_version: int | str,
               weights_hash: str | None, layer: str | None = None, seconds: float | None = None,
               package_version: str | None = None, raw: Any = None, ceiling: Any = None, error: Any = None,
               attrs: Mapping[str, Any] | None = None, config_hash: str | None = None) -> int:
        """Insert or replace the row for this key; returns its id.

        ``score`` is a Brain-Score ``Score`` (``raw``, ``ceiling``, ``error``, ``layer``, ``config_hash`` and its
        other attrs are read from it unless given explicitly) or a plain number.
        """
        if not model or not benchmark:
            raise ValueError("ResultsDB.record: 'model' and 'benchmark' must be non-empty strings")
        if benchmark_version is None:
            raise ValueError(f"ResultsDB.record({model!r}, {benchmark!r}): benchmark_version is required")
        score_attrs = dict(getattr(score, "attrs", {}) or {})
        value = _scalar(score)
        if value is None:
            raise ValueError(f"ResultsDB.record({model!r}, {benchmark!r}): score must be a number or a 0-d Score, "
                             f"got {type(score).__name__}")
        raw = _scalar(raw if raw is not None else score_attrs.get("raw"))
        ceiling = _scalar(ceiling if ceiling is not None else score_attrs.get("ceiling"))
        error = _scalar(error if error is not None else score_attrs.get("error"))
        if layer is None and score_attrs.get("layer") is not None:
            layer = str(score_attrs["layer"])
        if config_hash is None:
            config_hash = str(score_attrs.get("config_hash") or "")
        all_attrs = {**score_attrs, **dict(attrs or {})}
        row = dict(model=model, benchmark=benchmark, benchmark_version=benchmark_version,
                   package_version=package_version or globals()["package_version"](),
                   weights_hash=weights_hash or "", config_hash=config_hash, score=value, raw=raw, ceiling=ceiling, error=error,
                   layer=layer, seconds=None if seconds is None else float(seconds), host=socket.gethostname(),
                   created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   attrs_json=_dumps(all_attrs))
        names = [c for c in COLUMNS if c != "id"]
        updates = ", ".join(f"{c}=excluded.{c}" for c in names if c not in KEY_COLUMNS)
        sql = (f"INSERT INTO scores ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) "
               f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates}")
        with self._transaction() as connection:
            connection.execute(sql, [row[c] for c in names])
            (row_id,) = connection.execute(
                f"SELECT id FROM scores WHERE {' AND '.join(f'{c}=?' for c in KEY_COLUMNS)}",
                [row[c] for c in KEY_COLUMNS]).fetchone()
        logger.info("recorded %s on %s: %.4f (row %d in %s)", model, benchmark, value, row_id, self.path)
        return int(row_id)

    # -- reading ---------------------------------------------------------------------------------------------------
    def _select(self, where: Mapping[str, Any], limit: int | None = None) -> list[dict]:
        clauses = [f"{column}=?" for column, value in where.items() if value is not None]
        params = [value for value in where.values() if value is not None]
        sql = "SELECT * FROM scores" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += " ORDER BY created_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        if not self.path.exists():
            return []
        connection = self._connect()
        try:
            rows = self._while_locked(lambda: connection.execute(sql, params).fetchall(), "reading scores")
            return [self._row_dict(row) for row in rows]
        finally:
            connection.close()

    @staticmethod
    def _row_dict(row: sqlite3.Row) -> dict:
        result = dict(row)
        try:
            result["attrs"] = json.loads(result.get("attrs_json") or "{}")
        except json.JSONDecodeError:
            result["attrs"] = {}
        return result

    def get(self, model: str, benchmark: str, benchmark_version: int | str | None = None,
            package_version: str | None = None, weights_hash: str | None = None,
            config_hash: str | None = None) -> dict | None:
        """The newest row matching the given key parts (None parts match anything), as a dict; None if absent."""
        rows = self._select(dict(model=model, benchmark=benchmark, benchmark_version=benchmark_version,
                                 package_version=package_version, weights_hash=weights_hash,
                                 config_hash=config_hash), limit=1)
        return rows[0] if rows else None

    def has(self, model: str, benchmark: str, benchmark_version: int | str | None = None,
            package_version: str | None = None, weights_hash: str | None = None,
            config_hash: str | None = None) -> bool:
        """Whether :meth:`get` would find a row."""
        return self.get(model, benchmark, benchmark_version, package_version, weights_hash,
                        config_hash) is not None

    def rows(self, model: str | None = None, benchmark: str | None = None) -> list[dict]:
        """All rows (newest first), optionally filtered by model and/or benchmark."""
        return self._select(dict(model=model, benchmark=benchmark))

    def to_frame(self):
        """All rows as a pandas DataFrame with the table's columns (``attrs_json`` as text)."""
        rows = self.rows()
        return pd.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], columns=list(COLUMNS))

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write all rows to a CSV file (atomically); returns the path."""
        path = Path(path)
        rows = self.rows()
        with atomic_file(path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                for row in rows:
                    writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
        return path
