"""`fleet watch`: the frame drawn from a real SQLite store filled through `Store.ingest` with the bytes a
node publishes (protocols.up, up_status) read by the ingest's own decoder, `--once` through the CLI, and
Ctrl-C on a live `fleet watch` in a pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fleet.cli.watch import FeedTail, collect
from fleet.ingest.decode import decode
from fleet.registry import open_registry
from fleet.store import Batch, FleetAlarm, Inbound, Store, open_store
from fleet.watch_view import render
from protocols import up, up_status
from protocols.senml_pack import PackBuilder

NOW = 1_760_000_000.0  # the snapshot's clock; every message arrives shortly before it
FLEET = "city"
ROOT = Path(__file__).resolve().parents[1]
FLEET_BIN = ROOT / ".venv" / "bin" / "fleet"
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")


class Wire:
    """Messages as the ingest gets them: node-encoded bytes, decoded by fleet.ingest.decode."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.fleet_alarms: list[FleetAlarm] = []
        self.seq: dict[str, int] = {}

    def send(self, device: str, kind: str, encode: Any, received: float, *args: Any, **kw: Any) -> None:
        seq = self.seq.get(device, 0) + 1
        self.seq[device] = seq
        boot = kw.pop("boot", 1)
        payload = encode(boot, seq, *args, **kw)
        inbound = decode("dt/%s/%s/%s" % (FLEET, device, kind), payload, received, FLEET)
        assert isinstance(inbound, Inbound), inbound
        self.messages.append(inbound)

    def birth(self, device: str, received: float, boot: int = 1) -> None:
        self.send(device, "state", up_status.state, received, True, "1.4.2", 3, 1, boot=boot)

    def telemetry(self, device: str, received: float, readings: list[tuple[str, float, int]], ut: int) -> None:
        builder = PackBuilder()
        for name, value, at in readings:
            builder.add(name, value, at)
        self.send(device, "telemetry", up.telemetry, received, builder.pack(ut))

    def ingest(self, store: Store) -> None:
        store.ingest(Batch(messages=self.messages, fleet_alarms=self.fleet_alarms))
        self.messages, self.fleet_alarms = [], []


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    registry = open_registry(tmp_path)
    for device, kind, site in (("wl-01", "water-level", "Main St underpass"), ("wl-02", "water-level", "Harbour Rd"),
                               ("mh-01", "manhole-tilt", "Market Sq"), ("mh-02", "manhole-tilt", "Bridge St"),
                               ("wind-01", "wind-load", "Tower billboard")):
        registry.add({"id": device, "kind": kind, "site": site})
    return tmp_path


def fill(store: Store, now: float) -> None:
    """One device in each health state, three active alarms (one acked, one fleet-raised), a quarantined
    message, all arriving in the minutes (or hours) before `now`."""
    wire = Wire()
    # wl-01: healthy, floods (device alarm, unacked); level reported in mm every 15 min at most
    wire.birth("wl-01", now - 600)
    wire.telemetry("wl-01", now - 30, [("level", 380, -60), ("level", 412, -5)], 900)
    wire.send("wl-01", "event", up.event, now - 20, "flood", 1, 2, 412, 400, -95)
    wire.send("wl-01", "health", up_status.health, now - 10, 600, battery=3900)
    # wl-02: stale: said it would talk every minute, silent for three hours
    wire.birth("wl-02", now - 3 * 3600 - 100)
    wire.telemetry("wl-02", now - 3 * 3600, [("level", 7, 0)], 60)
    # mh-01: tilted (device warning, acked below), the fleet's own check caught a lift, then its will
    wire.birth("mh-01", now - 900, boot=4)
    wire.telemetry("mh-01", now - 300, [("tilt", 2.5, 0)], 3600)
    wire.send("mh-01", "event", up.event, now - 290, "tilt", 1, 1, 2.5, 2.0, -10)
    wire.fleet_alarms.append(FleetAlarm("mh-01", "lift", 1, 2, 9.5, 8.0, now - 200, now - 200))
    wire.send("mh-01", "state", up_status.state, now - 120, False, boot=4)
    # mh-02: degraded, low battery
    wire.birth("mh-02", now - 400)
    wire.telemetry("mh-02", now - 60, [("tilt", 0.25, 0)], 3600)
    wire.send("mh-02", "health", up_status.health, now - 50, 350, battery=3300)
    # zz-9: publishes, but nobody registered it
    wire.telemetry("zz-9", now - 15, [("load", 1234.5, 0)], 600)
    wire.ingest(store)
    tilt = next(a for a in store.alarms(active=True) if a.alarm == "tilt")
    store.ack_alarm(tilt.id, by="ana", note="crew sent", at=now - 100)
    bad = decode("dt/%s/zz-9/health" % FLEET, b"\xff\x00garbage", now - 5, FLEET)
    assert not isinstance(bad, Inbound)
    store.ingest(Batch(quarantined=[bad]))


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    """The fleet home's store filled by `fill` as of NOW (the tests pass NOW as the snapshot's clock)."""
    with open_store(home=home) as store:
        fill(store, NOW)
        yield store


@pytest.fixture
def store_now(home: Path) -> Iterator[Store]:
    """The same as of the real clock, for the command, which reads the clock itself."""
    with open_store(home=home) as store:
        fill(store, time.time())
        yield store


def text_of(renderable: Any, width: int = 200, height: int | None = None) -> str:
    console = Console(width=width, height=height or 25, record=True, file=open(os.devnull, "w"))
    console.print(renderable)
    console.file.close()
    return console.export_text()


def line_of(text: str, *words: str) -> str:
    """The one line of `text` holding every word."""
    found = [line for line in text.splitlines() if all(word in line for word in words)]
    assert len(found) == 1, (words, found, text)
    return found[0]


def test_frame_shows_alarms_first_then_devices_by_kind_then_the_feed(store: Store, home: Path) -> None:
    data = collect(store, FeedTail(), home=home, now=NOW)
    text = text_of(render(data))

    # the active alarms come before any device, the unacked ones first
    alarms_at, devices_at, events_at = (text.index(title) for title in ("active alarms (3)", "─ devices", "─ events"))
    assert alarms_at < devices_at < events_at
    alarms = text[alarms_at:devices_at]
    flood = line_of(alarms, "wl-01", "flood")
    lift = line_of(alarms, "mh-01", "lift")
    tilt = line_of(alarms, "mh-01", "tilt", "acked by ana: crew sent")
    assert "UNACKED" in flood and "UNACKED" in lift and "UNACKED" not in tilt
    assert alarms.index(flood) < alarms.index(tilt) and alarms.index(lift) < alarms.index(tilt)
    assert "FLEET" in lift and "FLEET" not in flood and "device" in flood
    assert "ALARM" in lift and "412" in flood and "400" in flood and "1m ago" in flood

    # devices by kind (registry order of kinds, the unregistered last), each with health and last values
    rows = {device: line_of(text[devices_at:events_at], " " + device + " ") for device in
            ("mh-01", "mh-02", "wl-01", "wl-02", "wind-01", "zz-9")}
    order = [text.index(rows[d], devices_at) for d in ("mh-01", "mh-02", "wl-01", "wl-02", "wind-01", "zz-9")]
    assert order == sorted(order)
    first = {device: row.strip("│ ") for device, row in rows.items()}
    assert first["mh-01"].startswith("manhole-tilt") and first["mh-02"].startswith("mh-02")
    assert first["wl-01"].startswith("water-level") and first["wl-02"].startswith("wl-02")
    assert first["wind-01"].startswith("wind-load") and first["zz-9"].startswith("unknown kind")
    assert "healthy" in rows["wl-01"] and "level 412 mm" in rows["wl-01"] and "Main St underpass" in rows["wl-01"]
    assert "stale" in rows["wl-02"] and "silent for 3h00m" in rows["wl-02"] and "level 7 mm" in rows["wl-02"]
    assert "offline" in rows["mh-01"] and "tilt 2.5 deg" in rows["mh-01"] and "last will of boot 4" in rows["mh-01"]
    assert "degraded" in rows["mh-02"] and "battery 3300 mV" in rows["mh-02"] and "tilt 0.25 deg" in rows["mh-02"]
    assert "never seen" in rows["wind-01"] and "never" in rows["wind-01"].split("never seen", 1)[1]
    assert "load 1234 N" in rows["zz-9"] or "load 1235 N" in rows["zz-9"]
    assert "not in the registry" in rows["zz-9"]

    # the feed: every item the store wrote, oldest first, below the devices
    feed = store.feed(limit=1000)
    assert len(feed) >= 9 and {item.kind for item in feed} >= {"alarm", "online", "offline", "quarantine"}
    events = text[events_at:]
    where = [events.index(line_of(events, " %s " % item.device, item.text)) for item in feed]
    assert where == sorted(where)
    assert "1 quarantined" in text[:alarms_at]


def test_live_frame_fills_the_screen_and_keeps_the_newest_events(store: Store, home: Path) -> None:
    wire = Wire()
    for boot in range(2, 42):  # 40 more feed lines: wind-01 rebooting
        wire.birth("wind-01", NOW - 100 + boot, boot=boot)
    wire.ingest(store)
    data = collect(store, FeedTail(), home=home, now=NOW)
    text = text_of(render(data, height=40), height=40)

    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 40  # exactly the terminal: nothing scrolls off the top
    titles = [next(i for i, line in enumerate(lines) if title in line)
              for title in ("─ active alarms (3)", "─ devices", "─ events")]
    assert titles == sorted(titles)
    assert "UNACKED" in line_of("\n".join(lines[titles[0]:titles[1]]), "wl-01", "flood")
    # the events panel runs to the last line and holds the newest items, oldest of them at the top
    shown = lines[titles[2] + 1:-1]
    feed = store.feed(limit=1000)
    assert len(feed) == 50 and len(shown) >= 20
    for line, item in zip(shown, feed[-len(shown):], strict=True):
        assert item.text in line and item.device in line
    assert "online: boot 41," in shown[-1]


def test_feed_tail_catches_up_in_pages_and_keeps_the_newest(store: Store) -> None:
    tail = FeedTail(keep=5)
    everything = store.feed(limit=1000)
    assert [i.id for i in tail.poll(store)] == [i.id for i in everything[-5:]]
    wire = Wire()
    wire.birth("wind-01", NOW)
    wire.ingest(store)
    newest = tail.poll(store)
    assert len(newest) == 5 and newest[-1].text.startswith("online: boot 1") and newest[-1].device == "wind-01"


def test_no_alarms_no_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    with open_store(home=tmp_path) as empty:
        text = text_of(render(collect(empty, FeedTail(), home=tmp_path, now=NOW)))
    assert "no active alarms" in text and "no devices registered or seen yet" in text and "no events yet" in text


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(FLEET_HOME=str(home), **extra)
    return env


def test_once_prints_one_frame(store_now: Store, home: Path) -> None:
    url = "sqlite:///%s" % (home / "fleet.db")
    done = subprocess.run([str(FLEET_BIN), "watch", "--once", "--store", url], env=_env(home, COLUMNS="220"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert out.index("─ active alarms (3)") < out.index("─ devices") < out.index("─ events")
    assert "level 412 mm" in line_of(out, " wl-01 ", "healthy")
    assert "offline" in line_of(out, " mh-01 ", "tilt 2.5 deg")
    assert "\x1b[" not in out  # plain text for scripts


def test_bad_store_url_is_one_line(home: Path) -> None:
    done = subprocess.run([str(FLEET_BIN), "watch", "--once", "--store", "mysql://x"], env=_env(home),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.startswith("fleet: bad store URL") and len(done.stderr.splitlines()) == 1


def _read_until(fd: int, pattern: str, timeout: float) -> str:
    """Output of the pty at `fd` (escapes removed) until `pattern` appears; fails with what came."""
    raw = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            raw += chunk
            if pattern in ANSI.sub("", raw.decode("utf-8", "replace")):
                return raw.decode("utf-8", "replace")
    pytest.fail("no %r on the terminal within %.0f s; got: %r" % (pattern, timeout, raw[-2000:]))


@pytest.mark.skipif(sys.platform != "linux", reason="pseudo-terminal test written for Linux")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_ends_live_view_cleanly(store_now: Store, home: Path, sig: int) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    proc = subprocess.Popen([str(FLEET_BIN), "watch", "--refresh", "0.2"], stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE, env=_env(home, TERM="xterm-256color"), close_fds=True)
    os.close(slave)
    try:
        _read_until(master, "─ events", 30)  # the first frame, down to its last panel
        _read_until(master, "─ active alarms (3)", 10)  # the top of the next: the loop is running
        proc.send_signal(sig)
        rc = proc.wait(timeout=10)
        tail = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            tail += chunk
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        os.close(master)
    assert rc == 0, stderr
    assert "Traceback" not in stderr and stderr == ""
    assert b"\x1b[?1049l" in tail  # the alternate screen was left: the terminal is restored
