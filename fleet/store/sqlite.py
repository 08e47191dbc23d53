"""The embedded store: one SQLite file in WAL mode (readers never wait for the writer, nor it for them).

The connection runs in autocommit mode and every transaction is explicit: the ingest's is
BEGIN IMMEDIATE (takes the write lock at once, so two writers queue on busy_timeout instead of failing
half-way with SQLITE_BUSY on lock upgrade). synchronous=NORMAL: in WAL mode a commit survives a killed
process (SIGKILL of the ingest loses nothing it committed); only an OS crash or power cut may lose the
last commits, which the broker then has already acknowledged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from fleet.store.schema import READING_COLUMNS
from fleet.store.sqlstore import SqlStore

BUSY_TIMEOUT_MS = 10000
CLAIM_CHUNK = 300  # keys per lookup query: 900 variables, far below SQLite's limit


class SqliteStore(SqlStore):
    """Store in the SQLite file `path`."""

    dialect = "sqlite"
    bucket = "CAST(time / ? AS INTEGER)"  # times are positive: truncation is floor

    def __init__(self, path: Path, url: str | None = None) -> None:
        super().__init__(url or "sqlite:///%s" % path)
        self.path = path
        if not path.parent.is_dir():
            raise FleetError("cannot open store %s: folder %s does not exist" % (self.url, path.parent))
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
            self._db.execute("PRAGMA busy_timeout = %d" % BUSY_TIMEOUT_MS)
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL journal mode (got %s)" % mode)
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction():
                self._create_schema()
        except sqlite3.Error as error:
            self.close()
            raise FleetError("cannot open store %s: %s" % (self.url, error)) from None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise FleetError("store %s is closed" % self.url)
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(sql, params)

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.db.executemany(sql, rows)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        db = self.db
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # also when COMMIT itself failed: never leave it open
                db.execute("ROLLBACK")
            raise

    def _claim(self, keys: list[tuple[str, int, int, str, float]]) -> set[tuple[str, int, int]]:
        # Which keys exist: one indexed join per chunk of keys (a VALUES list), then one
        # executemany for the rest. Measured ~2x faster than an INSERT per key with its rowcount. The
        # write transaction holds the database lock, so no key can appear in between.
        db = self.db
        known: set[tuple[str, int, int]] = set()
        for start in range(0, len(keys), CLAIM_CHUNK):
            chunk = keys[start:start + CLAIM_CHUNK]
            sql = ("SELECT s.device, s.boot, s.seq FROM (VALUES %s) AS v JOIN seen AS s ON s.device = v.column1 "
                   "AND s.boot = v.column2 AND s.seq = v.column3" % ", ".join(["(?, ?, ?)"] * len(chunk)))
            known.update(db.execute(sql, [v for key in chunk for v in key[:3]]).fetchall())
        new = [key for key in keys if key[:3] not in known]
        db.executemany("INSERT INTO seen (device, boot, seq, kind, received) VALUES (?, ?, ?, ?, ?)", new)
        return {key[:3] for key in new}

    def _add_readings(self, rows: list[tuple[Any, ...]]) -> None:
        self.db.executemany("INSERT INTO readings (%s) VALUES (%s)"
                            % (", ".join(READING_COLUMNS), ", ".join("?" * len(READING_COLUMNS))), rows)
