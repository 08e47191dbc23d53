"""The fleet's storage: `open_store(url)` -> a `Store` (SQLite embedded by default, or PostgreSQL).

    store = open_store()                                   # sqlite:///<FLEET_HOME>/fleet.db
    store = open_store("sqlite:///var/lib/fleet/fleet.db")
    store = open_store("postgresql://postgres@127.0.0.1:5432/fleet")

The data model (`fleet.store.model`) and the interface (`fleet.store.base.Store`) are the contract of
ISSUE6 "Data model" and "Store".
"""

from __future__ import annotations

from pathlib import Path

from fleet.errors import FleetError
from fleet.store.base import Store
from fleet.store.model import (
    AlarmRow,
    Batch,
    BatchResult,
    DeviceStatus,
    FeedItem,
    FleetAlarm,
    Gap,
    Inbound,
    Quarantined,
    Reading,
    SummaryRow,
)

__all__ = ["AlarmRow", "Batch", "BatchResult", "DeviceStatus", "FeedItem", "FleetAlarm", "Gap", "Inbound",
           "Quarantined", "Reading", "Store", "SummaryRow", "default_url", "open_store"]

DB_FILE = "fleet.db"
URL_FORMS = "sqlite:///absolute/path/fleet.db or postgresql://user@host:port/database"


def default_url(home: Path | None = None) -> str:
    """The embedded store of the fleet home: sqlite:///<home>/fleet.db."""
    from fleet.home import fleet_home

    return "sqlite:///%s" % ((home or fleet_home()) / DB_FILE)


def open_store(url: str | None = None, home: Path | None = None) -> Store:
    """Open (creating the schema when missing) the store at `url`; None is the fleet home's SQLite file.

    FleetError with one line for a URL of another form or a database that cannot be opened."""
    if url is None:
        url = default_url(home)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path.startswith("/") or path.strip("/") == "":
            raise FleetError("bad store URL %r: a SQLite store needs an absolute path, e.g. %s"
                             % (url, "sqlite:///var/lib/fleet/fleet.db"))
        from fleet.store.sqlite import SqliteStore

        return SqliteStore(Path("/" + path.lstrip("/")), url)
    if url.startswith(("postgresql://", "postgres://")):
        from fleet.store.postgres import PostgresStore

        return PostgresStore(url)
    raise FleetError("bad store URL %r: use %s" % (url, URL_FORMS))
