"""The `fleet watch` picture: a snapshot of the fleet (`WatchData`) in, a rich renderable out.

Pure: no store, no clock, no terminal. `fleet.cli.watch` gathers the snapshot and redraws it; tests
render snapshots made from a real store. Top to bottom: a title line, the active alarms (the first thing
an operator must see), the devices grouped by kind, and the latest events, newest at the bottom.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleet.store.model import AlarmRow, DeviceStatus, FeedItem, Reading

UNKNOWN_KIND = "unknown kind"  # devices the store has seen that the registry does not know
LEVELS = {1: "warning", 2: "ALARM"}
HEALTH_STYLES = {"healthy": "green", "degraded": "yellow", "stale": "magenta", "offline": "bold red",
                 "never seen": "dim"}
FEED_STYLES = {"alarm": "red", "clear": "green", "online": "cyan", "offline": "yellow", "ack": "blue",
               "quarantine": "magenta"}
# Lines a bordered panel holding a table with a header adds to its rows.
PANEL_FRAME = 3


@dataclass(slots=True)
class DeviceView:
    """One device line: who it is, what the store knows, its newest value per measurement, its health."""

    device: str
    kind: str  # UNKNOWN_KIND when not registered
    site: str | None
    status: DeviceStatus | None  # None: never seen
    latest: dict[str, Reading] = field(default_factory=dict)
    health: str = "never seen"  # fleet.health states: healthy|degraded|stale|offline|never seen
    reason: str = ""  # why it is not healthy


@dataclass(slots=True)
class WatchData:
    """Everything one frame shows."""

    now: float
    fleet: str
    devices: list[DeviceView]
    alarms: list[AlarmRow]  # active ones, any order
    feed: list[FeedItem]  # oldest first
    quarantined: int = 0
    source: str = ""  # where the data comes from (the store), for the title


def render(data: WatchData, height: int | None = None) -> RenderableType:
    """The frame for `data`. With `height` (a terminal's lines) a Layout filling exactly that many lines,
    the feed cut to its newest items that fit; without, every part at its natural height (`--once`)."""
    alarms = alarms_panel(data)
    devices = devices_panel(data)
    if height is None:
        return Group(title_line(data), alarms, devices, feed_panel(data, None))
    alarm_lines = min(_alarm_rows(data) + PANEL_FRAME, max(PANEL_FRAME + 1, height // 3))
    device_lines = min(len(data.devices) + PANEL_FRAME, max(PANEL_FRAME + 1, height - alarm_lines - 6))
    feed_lines = max(height - 1 - alarm_lines - device_lines, 2)
    layout = Layout()
    layout.split_column(Layout(title_line(data), size=1), Layout(alarms, size=alarm_lines),
                        Layout(devices, size=device_lines),
                        Layout(feed_panel(data, feed_lines - 2), size=feed_lines))
    return layout


def title_line(data: WatchData) -> Text:
    """Fleet name, counts, and the snapshot's time."""
    active = len(data.alarms)
    unacked = sum(1 for alarm in data.alarms if alarm.acked_at is None)
    text = Text.assemble(("cityfleet ", "bold"), ("fleet %s" % data.fleet, "bold cyan"),
                         "  %d devices  " % len(data.devices))
    text.append("%d active alarms (%d unacked)" % (active, unacked), style="bold red" if unacked else "green")
    if data.quarantined:
        text.append("  %d quarantined" % data.quarantined, style="magenta")
    text.append("  %s" % time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.now)))
    if data.source:
        text.append("  %s" % data.source, style="dim")
    return text


def alarms_panel(data: WatchData) -> Panel:
    """Active alarms, unacknowledged first, then level, then newest; unacked ones highlighted."""
    if not data.alarms:
        return Panel(Text("no active alarms", style="green"), title="active alarms", title_align="left",
                     border_style="green", box=box.ROUNDED)
    table = Table("id", "level", "device", "alarm", "raised by", "value", "threshold", "since", "ack",
                  box=None, pad_edge=False)
    ordered = sorted(data.alarms, key=lambda a: (a.acked_at is not None, -a.level, -a.raised_at, -a.id))
    for alarm in ordered:
        unacked = alarm.acked_at is None
        style = ("bold white on red" if alarm.level >= 2 else "bold black on yellow") if unacked else "dim"
        ack = "UNACKED" if unacked else "acked by %s%s" % (alarm.acked_by, ": " + alarm.note if alarm.note else "")
        source = Text("FLEET", style="bold magenta") if alarm.source == "fleet" else Text("device")
        table.add_row(str(alarm.id), LEVELS.get(alarm.level, str(alarm.level)), alarm.device, alarm.alarm,
                      source, number(alarm.raise_value), number(alarm.threshold),
                      "%s ago" % age(data.now - alarm.raised_at), ack, style=style)
    border = "red" if any(a.acked_at is None for a in data.alarms) else "yellow"
    return Panel(table, title="active alarms (%d)" % len(data.alarms), title_align="left",
                 border_style=border, box=box.ROUNDED)


def devices_panel(data: WatchData) -> Panel:
    """Devices grouped by kind (unregistered ones last), each with health, newest values, last seen."""
    table = Table("kind", "device", "site", "health", "last values", "last seen", "boot", "firmware",
                  box=None, pad_edge=False)
    previous = None
    for view in sorted(data.devices, key=lambda v: (v.kind == UNKNOWN_KIND, v.kind, v.device)):
        kind = Text(view.kind, style="bold") if view.kind != previous else Text("")
        previous = view.kind
        status = view.status
        health = Text(view.health, style=HEALTH_STYLES.get(view.health, ""))
        if view.reason:
            health.append(": " + view.reason, style="dim")
        seen = "never" if status is None or status.last_seen is None else "%s ago" % age(data.now - status.last_seen)
        table.add_row(kind, view.device, view.site or "", health, last_values(view.latest), seen,
                      "" if status is None or status.boot is None else str(status.boot),
                      "" if status is None or status.firmware is None else status.firmware)
    if not data.devices:
        table.add_row("", Text("no devices registered or seen yet", style="dim"))
    return Panel(table, title="devices", title_align="left", box=box.ROUNDED)


def feed_panel(data: WatchData, lines: int | None) -> Panel:
    """The newest `lines` feed items (all when None), oldest at the top so new ones scroll in below."""
    items = data.feed if lines is None else data.feed[-lines:] if lines > 0 else []
    table = Table.grid(padding=(0, 1), expand=True)
    for _ in range(4):
        table.add_column()
    for item in items:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(item.time)), item.device,
                      Text(item.kind, style=FEED_STYLES.get(item.kind, "")), item.text)
    if not items:
        table.add_row(Text("no events yet", style="dim"))
    return Panel(table, title="events", title_align="left", box=box.ROUNDED)


def last_values(latest: dict[str, Reading]) -> str:
    """"level 0.412 m, tilt 2.5 deg": each measurement's newest value with its unit, by name."""
    parts = []
    for name in sorted(latest):
        reading = latest[name]
        unit = " %s" % reading.unit if reading.unit else ""
        parts.append("%s %s%s" % (name, number(reading.value), unit))
    return ", ".join(parts) or "-"


def number(value: float | str | bool | None) -> str:
    """A value short enough for a table cell: 4 significant digits, no exponent below 10^6."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1e4:
        return "%.0f" % value
    return "%.4g" % value


def age(seconds: float) -> str:
    """A duration as "12s", "5m", "3h", "2d" (negative, a clock ahead of ours, counts as 0)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def _alarm_rows(data: WatchData) -> int:
    # rows of the alarm table; with none, the panel holds one line of text and no header
    return len(data.alarms) if data.alarms else 0
