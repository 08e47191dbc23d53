"""`fleet readings` and `fleet summary`: a device's stored readings, raw or per interval.

Also the pieces the operations-centre commands share (alarms.py, health.py): the `--store` option, opening
the store, and reading and writing times (ISO-8601 UTC, or relative like 30m/1h/2d)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fleet.errors import EXIT_USAGE, FleetError

if TYPE_CHECKING:
    from fleet.store.base import Store

F = TypeVar("F", bound=Callable[..., Any])

STORE_HELP = ("Store URL: sqlite:///ABS/PATH.db or postgresql://USER@HOST:PORT/DB "
              "[default: $FLEET_STORE, else sqlite in FLEET_HOME/fleet.db].")
WHEN_HELP = "ISO-8601 time (UTC unless it has an offset), or a time ago: 90s, 30m, 1h, 2d, 1w."
FORMATS = ("table", "csv", "json")
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def store_option(command: F) -> F:
    """The `--store URL` option every operations command takes (also $FLEET_STORE)."""
    return click.option("--store", "store_url", envvar="FLEET_STORE", default=None, metavar="URL",
                        help=STORE_HELP)(command)


@contextmanager
def opened_store(url: str | None) -> Iterator[Store]:
    """The store at `url` (None: the default), closed afterwards."""
    from fleet.store import open_store

    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds of "90", "90s", "30m", "1h", "2d" or "1w"; FleetError (usage) otherwise."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise FleetError("bad %s %r: use a positive number with s, m, h, d or w, e.g. 30m or 1h" % (what, text),
                         exit_code=EXIT_USAGE)
    return float(match.group(1)) * UNITS_S[match.group(2) or "s"]


def parse_when(text: str, now: float, option: str = "time") -> float:
    """Unix seconds of an ISO-8601 time (naive = UTC) or of a relative time ago ("30m", "2d")."""
    if _DURATION.match(text):
        return now - parse_duration(text, option)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FleetError("bad %s %r: use ISO-8601 like 2025-01-31T12:00:00Z or a time ago like 30m, 1h, 2d"
                         % (option, text), exit_code=EXIT_USAGE) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def iso(t: float | None) -> str:
    """ISO-8601 UTC of Unix seconds ("" for None); fractions only when there are some."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds" if t % 1 else "seconds")\
        .replace("+00:00", "Z")


def _range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    now = time.time()
    start = parse_when(since, now, "--since") if since else None
    end = parse_when(until, now, "--until") if until else None
    if start is not None and end is not None and end <= start:
        raise FleetError("--until (%s) must be later than --since (%s)" % (iso(end), iso(start)),
                         exit_code=EXIT_USAGE)
    return start, end


def _check_known(store: Store, device_id: str) -> None:
    """FleetError when the store never saw `device_id` and the registry does not know it either."""
    if store.status(device_id):
        return
    from fleet.registry import open_registry

    if not any(r.get("id") == device_id for r in open_registry().all()):
        raise FleetError("no device %r: not in the registry and never seen; `fleet health` lists them"
                         % device_id)


def _value(value: Any) -> str:
    return "" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


def _short(value: Any) -> Any:
    """A whole float as an int, for people (412 mm, not 412.0 mm)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _emit(fmt: str, columns: tuple[str, ...], rows: list[dict[str, Any]], empty: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _value(row.get(k)) for k in columns} for row in rows)
        click.echo(out.getvalue(), nl=False)
    elif not rows:
        click.echo(empty)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*(_value(_short(row.get(k))) for k in columns))
        Console(soft_wrap=True).print(table)


@click.command("readings")
@click.argument("device_id", metavar="ID")
@click.option("--since", default=None, help="From this time on. " + WHEN_HELP)
@click.option("--until", default=None, help="Before this time. " + WHEN_HELP)
@click.option("--name", default=None, help="Only this measurement, e.g. level.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the latest N readings of the range.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table for people; csv or json (times as ISO-8601 UTC and Unix seconds) for scripts.")
@store_option
def readings(device_id: str, since: str | None, until: str | None, name: str | None, limit: int | None,
             fmt: str, store_url: str | None) -> None:
    """Show the stored readings of device ID, oldest first, at the time each was measured.

    Backfilled readings (sent after a network loss) are marked historical.

    \b
    Examples:
      fleet readings wl-4f81c2 --since 2h
      fleet readings wl-4f81c2 --since 2025-01-31T00:00Z --until 2025-02-01T00:00Z --format csv > jan31.csv
      fleet readings mh-0042 --name tilt --format json
    """
    start, end = _range(since, until)
    with opened_store(store_url) as store:
        found = store.readings(device_id, since=start, until=end, name=name, limit=limit)
        if not found:
            _check_known(store, device_id)
    rows = [{**asdict(r), "iso": iso(r.time)} for r in found]
    columns: tuple[str, ...] = ("iso", "time", "name", "value", "unit", "boot", "seq", "historical")
    if fmt == "table":
        columns = ("time", "name", "value", "unit", "boot", "seq", "historical")
        for row in rows:
            row["time"] = row["iso"]
    _emit(fmt, columns, rows, "no readings of %s in that range" % device_id)


@click.command("summary")
@click.argument("device_id", metavar="ID")
@click.option("--interval", default="1h", show_default=True, help="Length of each interval: 15m, 1h, 1d...")
@click.option("--since", default=None, help="From this time on. " + WHEN_HELP)
@click.option("--until", default=None, help="Before this time. " + WHEN_HELP)
@click.option("--name", default=None, help="Only this measurement, e.g. level.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table for people; csv or json for scripts.")
@store_option
def summary(device_id: str, interval: str, since: str | None, until: str | None, name: str | None, fmt: str,
            store_url: str | None) -> None:
    """Show count, min, max and mean of each numeric measurement of device ID per interval.

    Intervals start at multiples of their length since the Unix epoch (UTC), so hours start on the hour.

    \b
    Examples:
      fleet summary wl-4f81c2 --since 1d
      fleet summary ww-77a1c0 --interval 15m --since 6h --name gust --format csv
    """
    interval_s = parse_duration(interval, "--interval")
    start, end = _range(since, until)
    with opened_store(store_url) as store:
        rows = [r for r in store.summary(device_id, interval_s, since=start, until=end)
                if name is None or r.name == name]
        if not rows:
            _check_known(store, device_id)
    out = [{**asdict(r), "iso": iso(r.start)} for r in rows]
    columns: tuple[str, ...] = ("iso", "start", "name", "count", "min", "max", "mean")
    if fmt == "table":
        columns = ("start", "name", "count", "min", "max", "mean")
        for row in out:
            row["start"], row["mean"] = row["iso"], "%.4g" % row["mean"]
    _emit(fmt, columns, out, "no numeric readings of %s in that range" % device_id)
