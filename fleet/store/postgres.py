"""The server store: PostgreSQL through psycopg 3.

The connection is in autocommit mode and every transaction is explicit, so a reader (fleet watch) never
sits idle inside a transaction. The bulk paths use COPY: the batch's dedupe keys go into a temporary table
and one INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING says which were new; the readings of the
new messages are then COPYed straight into `readings` (they need no conflict check of their own).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from fleet.errors import FleetError
from fleet.store.schema import READING_COLUMNS, SEEN_COLUMNS
from fleet.store.sqlstore import SqlStore

#: pg_advisory_xact_lock key serialising schema creation (CREATE ... IF NOT EXISTS races otherwise).
SCHEMA_LOCK = 0x63697479666C74  # "cityflt"
CONNECT_TIMEOUT_S = 5


@lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the shared SQL never holds a literal `?` or `%`)."""
    return sql.replace("?", "%s")


def describe(url: str) -> str:
    """`user@host:port/db` of a PostgreSQL URL, without its password (for messages)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # any parse failure: show nothing of the URL
        return "the given PostgreSQL URL"
    return "%s@%s:%s/%s" % (info.get("user", ""), info.get("host", "localhost"), info.get("port", 5432),
                            info.get("dbname", ""))


class PostgresStore(SqlStore):
    """Store in the PostgreSQL database named by `url` (postgresql://user@host:port/db)."""

    dialect = "postgresql"
    bucket = "floor(time / ?)"
    lock_rows = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        # the URL without its password: `url` shows up in messages and logs
        super().__init__(re.sub(r"^(\w+://[^:/@]*):[^@/]*@", r"\1:***@", url))
        import psycopg

        self._db: Any = None
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            with self._transaction():
                self._execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
                self._create_schema()
            self._execute("CREATE TEMP TABLE IF NOT EXISTS seen_in (device TEXT, boot BIGINT, seq BIGINT, "
                          "kind TEXT, received DOUBLE PRECISION) ON COMMIT DELETE ROWS")
        except psycopg.Error as error:
            self.close()
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FleetError("cannot open store %s (%s); check the server runs and the URL names an existing "
                             "database" % (describe(url), reason)) from None

    @property
    def db(self) -> Any:
        if self._db is None:
            raise FleetError("store %s is closed" % self.url)
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(_pg(sql), params or None)

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self.db.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        with self.db.transaction():
            yield

    def _claim(self, keys: list[tuple[str, int, int, str, float]]) -> set[tuple[str, int, int]]:
        if not keys:
            return set()
        with self.db.cursor() as cursor:
            with cursor.copy("COPY seen_in (%s) FROM STDIN" % ", ".join(SEEN_COLUMNS)) as copy:
                for key in keys:
                    copy.write_row(key)
            # In key order: two workers of a shared subscription may claim the same resent keys, and
            # inserting them in opposite orders deadlocks (measured with 4 workers).
            cursor.execute("INSERT INTO seen SELECT %s FROM seen_in ORDER BY device, boot, seq ON CONFLICT DO NOTHING "
                           "RETURNING device, boot, seq" % ", ".join(SEEN_COLUMNS))
            # seen_in empties itself at commit (ON COMMIT DELETE ROWS); one claim per transaction.
            return {(device, int(boot), int(seq)) for device, boot, seq in cursor.fetchall()}

    def _add_readings(self, rows: list[tuple[Any, ...]]) -> None:
        with self.db.cursor() as cursor, \
                cursor.copy("COPY readings (%s) FROM STDIN" % ", ".join(READING_COLUMNS)) as copy:
            for row in rows:
                copy.write_row(row)
