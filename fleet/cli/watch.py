"""`fleet watch`: the live terminal view of the fleet, redrawn every few seconds from the store.

`collect` reads one snapshot (registry + store), `fleet.watch_view.render` draws it, `LiveWatch` keeps a
rich Live screen up to date (also used by `fleet demo`), and the command loops until Ctrl-C, which ends
it cleanly with exit code 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import click

from fleet.store.model import FeedItem, Reading

#: Feed items kept for the view (the screen shows the newest that fit).
FEED_KEEP = 200
#: Feed items asked for per query while catching up.
FEED_PAGE = 1000


@click.command("watch")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The store: sqlite:///path.db or postgresql://user@host:port/db (default: FLEET_HOME/fleet.db).")
@click.option("--refresh", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True, metavar="SECONDS",
              help="Seconds between redraws.")
@click.option("--once", is_flag=True, help="Print one frame to stdout and exit (for scripts).")
def watch(store_url: str | None, refresh: float, once: bool) -> None:
    """Watch the fleet live: active alarms first, devices by kind with health and last values, events.

    Ctrl-C ends it (exit code 0).

    \b
    Example:
      fleet watch --refresh 5
      fleet watch --once --store sqlite:///var/lib/fleet/fleet.db
    """
    stop = threading.Event()
    if not once:
        # Ctrl-C (and SIGTERM) only ask the loop to stop, so no KeyboardInterrupt can land in the middle of
        # a store query or a redraw: the screen is restored and the exit is clean.
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    from fleet.store import open_store

    try:
        store = open_store(store_url)
        try:
            if once:
                _print_once(store)
            else:
                _loop(store, refresh, stop)
        finally:
            store.close()
    finally:
        if not once:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _print_once(store: Any) -> None:
    from rich.console import Console

    from fleet.watch_view import render

    # A pipe has no width: 120 columns unless COLUMNS says otherwise (rich's default of 80 wraps the tables).
    width = None if os.isatty(1) or os.environ.get("COLUMNS") else 120
    Console(width=width, soft_wrap=False).print(render(collect(store, FeedTail())))


def _loop(store: Any, refresh: float, stop: threading.Event) -> None:
    view = LiveWatch(store)
    try:
        while not stop.is_set():
            view.refresh()
            stop.wait(refresh)
    finally:
        view.close()


class LiveWatch:
    """A full-screen rich Live view of the fleet; `refresh()` reads the store and redraws, `close()` ends it."""

    def __init__(self, store: Any, home: Path | None = None, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.store = store
        self.home = home
        self.feed = FeedTail()
        self.console = console if console is not None else Console()
        self.live = Live(console=self.console, screen=True, auto_refresh=False, redirect_stdout=False,
                         redirect_stderr=False)
        self.live.start()

    def refresh(self) -> None:
        """Read a new snapshot and draw it to fit the terminal."""
        from fleet.watch_view import render

        data = collect(self.store, self.feed, home=self.home)
        self.live.update(render(data, self.console.height), refresh=True)

    def close(self) -> None:
        """Leave the live screen (the terminal gets its previous contents back)."""
        self.live.stop()


class FeedTail:
    """The newest feed items, caught up with the store on each poll (oldest first)."""

    def __init__(self, keep: int = FEED_KEEP) -> None:
        self.items: deque[FeedItem] = deque(maxlen=keep)
        self.after = 0

    def poll(self, store: Any) -> list[FeedItem]:
        """Fetch every item newer than the last seen and return the newest `keep`."""
        while True:
            batch = store.feed(after_id=self.after, limit=FEED_PAGE)
            self.items.extend(batch)
            if batch:
                self.after = batch[-1].id
            if len(batch) < FEED_PAGE:
                return list(self.items)


def collect(store: Any, feed: FeedTail, home: Path | None = None, now: float | None = None) -> Any:
    """One `WatchData` snapshot: registry devices (not retired) and every device the store has seen, with
    newest readings and health, the active alarms and the feed."""
    from fleet.home import fleet_name
    from fleet.registry import open_registry
    from fleet.watch_view import UNKNOWN_KIND, DeviceView, WatchData

    now = time.time() if now is None else now
    records = {r["id"]: r for r in open_registry(home).all()}
    statuses = {s.device: s for s in store.status(now=now)}
    views = []
    for device in sorted(set(statuses) | set(records)):
        record = records.get(device)
        if record is not None and record.get("state") == "retired":
            continue
        status = statuses.get(device)
        view = DeviceView(device=device, kind=record["kind"] if record else UNKNOWN_KIND,
                          site=record.get("site") if record else None, status=status)
        if status is not None:
            view.latest = latest_readings(store, device, status.ut)
        view.health, view.reason = device_health(record, status, now)
        views.append(view)
    return WatchData(now=now, fleet=fleet_name(home), devices=views, alarms=store.alarms(active=True),
                     feed=feed.poll(store), quarantined=store.quarantine_count(), source=store.url)


def latest_readings(store: Any, device: str, names: dict[str, int]) -> dict[str, Reading]:
    """The newest reading of each measurement of `device`, by name."""
    latest = getattr(store, "latest", None)
    if latest is not None:
        return dict(latest(device))
    # Until the store answers this in one query: the newest reading, then the newest of each other name
    # the device declared a heartbeat (`ut`) for, which the agent does for every name it reports.
    out: dict[str, Reading] = {}
    for reading in store.readings(device, limit=1):
        out[reading.name] = reading
    for name in names:
        if name not in out:
            for reading in store.readings(device, name=name, limit=1):
                out[name] = reading
    return out


def device_health(record: dict[str, Any] | None, status: Any, now: float) -> tuple[str, str]:
    """(state, reasons) of one device, judged by `fleet.health.evaluate`."""
    from fleet.health import evaluate

    # Gaps only feed the assessment's informational count, which the view does not show: skip the query.
    verdict = evaluate(record, status, (), now)
    return verdict.state, "; ".join(reason.text for reason in verdict.reasons)
