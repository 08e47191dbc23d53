"""OTA campaigns: which devices get a release, in which waves, and when a campaign stops itself.

A campaign is one JSON document, FLEET_HOME/campaigns/<id>.json (ids c1, c2, ...), replaced atomically
(`fleet.home.write_atomic`) as it changes. `Campaign` is its pure state machine: no broker, no clock (the
caller passes `now`), no files; it answers each event with the actions to publish:

- ("offer", device, cid): the retained offer of the release as update `cid`;
- ("cancel", device, cid): a live cancel of `cid` (the device stops and discards its download);
- ("clear", device, cid): an empty retained payload on the device's offer topic.

Device states: pending -> offered -> downloading -> verifying -> staged -> done, or failed (reason),
rolled_back (reason), timed_out (no outcome within the time-out from its offer). Waves are cumulative
shares of the selected devices, each at least one device; a wave starts only when every device of the
waves before it has an outcome. The campaign aborts as soon as failures (failed, rolled back, timed out)
exceed `max_failures` of the devices with an outcome, once at least `min_devices` have one; then every
open offer is cancelled and cleared and no device starts. A rolled-back report is final: a device that
rolled back is never counted as done, whatever else it reported.

Below the state machine: the campaign files (`load`, `save`, control flags, the rollout lock) and
`run_rollout`, which drives a campaign with fleet/ota/server.py until it ends.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import queue
import random
import re
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from fleet.broker_address import BrokerAddress
from fleet.errors import EXIT_USAGE, FleetError
from fleet.home import fleet_home, private_dir, write_atomic
from fleet.ota.server import OtaServer, Release, ReleaseInfo

PENDING, OFFERED, DOWNLOADING, VERIFYING, STAGED = "pending", "offered", "downloading", "verifying", "staged"
DONE, FAILED, ROLLED_BACK, TIMED_OUT = "done", "failed", "rolled_back", "timed_out"
DEVICE_STATES = (PENDING, OFFERED, DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK, TIMED_OUT)
FAILURES = (FAILED, ROLLED_BACK, TIMED_OUT)
OUTCOMES = (DONE, *FAILURES)
IN_FLIGHT = (OFFERED, DOWNLOADING, VERIFYING, STAGED)
#: progress state of protocols.ota -> device state
FROM_PROGRESS = {1: DOWNLOADING, 2: VERIFYING, 3: STAGED, 4: DONE, 5: FAILED, 6: ROLLED_BACK}
RUNNING, PAUSED, FINISHED, ABORTED = "running", "paused", "done", "aborted"
ENDED = (FINISHED, ABORTED)
CANCELLED = "CANCELLED"

Action = tuple[str, str, int]


# ---- the numbers of a campaign ----
def parse_share(text: str, what: str) -> Fraction:
    """A share "5%" (or "5") as a Fraction 0..1; FleetError (usage) otherwise."""
    raw = text.strip().removesuffix("%").strip()
    try:
        share = Fraction(raw) / 100
    except (ValueError, ZeroDivisionError):
        share = Fraction(-1)
    if not 0 <= share <= 1:
        raise FleetError("bad %s %r: use a percentage 0..100, e.g. 5%%" % (what, text), exit_code=EXIT_USAGE)
    return share


def parse_waves(text: str) -> list[Fraction]:
    """"1%,10%,50%,100%": increasing cumulative shares ending at 100%."""
    try:
        shares = [parse_share(part, "wave") for part in text.split(",") if part.strip()]
    except FleetError:
        shares = []
    if not shares or shares[-1] != 1 or any(s <= 0 for s in shares) \
            or any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
        raise FleetError("bad --waves %r: give increasing cumulative shares of the devices that end at 100%%, "
                         "e.g. 1%%,10%%,50%%,100%%" % text, exit_code=EXIT_USAGE)
    return shares


def wave_sizes(count: int, shares: list[Fraction]) -> list[int]:
    """Cumulative device counts of each wave for `count` devices: the share rounded up, each wave at least
    one device more than the one before; waves left with no device are dropped."""
    sizes: list[int] = []
    for share in shares:
        size = min(count, max(sizes[-1] + 1 if sizes else 1, math.ceil(count * share)))
        if not sizes or size > sizes[-1]:
            sizes.append(size)
    return sizes


def should_abort(failures: int, tried: int, max_failures: Fraction, min_devices: int) -> bool:
    """True when `failures` of the `tried` devices (those with an outcome) exceed the share allowed, once
    at least `min_devices` have tried."""
    return tried >= max(1, min_devices) and failures > max_failures * tried


# ---- selection ----
SELECT_KEYS = ("id", "kind", "site", "state", "board")


def parse_select(text: str | None) -> dict[str, list[str]]:
    """"kind=water-level,site=harbour": key -> accepted values (a key given twice accepts either)."""
    wanted: dict[str, list[str]] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in SELECT_KEYS or not value:
            raise FleetError("bad --select %r: use KEY=VALUE[,KEY=VALUE...] with KEY one of %s (id takes * and ?)"
                             % (text, ", ".join(SELECT_KEYS)), exit_code=EXIT_USAGE)
        wanted.setdefault(key, []).append(value)
    return wanted


def select_devices(records: list[dict[str, Any]], wanted: dict[str, list[str]],
                   board: str) -> tuple[list[str], list[str]]:
    """(ids of the matching devices, ids left out because the registry says they are another board).
    Retired devices are left out unless `state` is selected."""
    from fnmatch import fnmatchcase

    chosen, other_board = [], []
    for record in records:
        if record.get("state") == "retired" and "state" not in wanted:
            continue
        if any(not any(fnmatchcase(str(record.get(key)), value) if key == "id" else record.get(key) == value
                       for value in values) for key, values in wanted.items()):
            continue
        if record.get("board") and record["board"] != board:
            other_board.append(record["id"])
        else:
            chosen.append(record["id"])
    return sorted(chosen), sorted(other_board)


# ---- the state machine ----
class Campaign:
    """One campaign's document and its transitions (see the module docstring)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    @classmethod
    def create(cls, campaign_id: str, release: dict[str, Any], devices: list[str], shares: list[Fraction],
               max_failures: Fraction, min_devices: int, timeout_s: float, now: float, select: str = "",
               cids: list[int] | None = None) -> Campaign:
        """A new running campaign over `devices` (shuffled into waves, seeded by the id), before wave 1."""
        order = sorted(devices)
        random.Random(campaign_id).shuffle(order)
        sizes = wave_sizes(len(order), shares)
        cids = cids or [random.randrange(1, 1 << 32) for _ in order]
        table: dict[str, dict[str, Any]] = {}
        wave = 0
        for index, name in enumerate(order):
            while index >= sizes[wave]:
                wave += 1
            table[name] = {"wave": wave, "cid": cids[index], "state": PENDING, "reason": None, "percent": None,
                           "offered_at": None, "ended_at": None, "key": None, "note": None, "skipped": False}
        return cls({"id": campaign_id, "release": release, "select": select,
                    "waves": ["%s%%" % _percent(s) for s in shares], "sizes": sizes,
                    "max_failures": "%s%%" % _percent(max_failures), "min_devices": min_devices,
                    "timeout_s": timeout_s, "state": RUNNING, "wave": -1, "reason": None, "created_at": now,
                    "ended_at": None, "devices": table})

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def state(self) -> str:
        return str(self.doc["state"])

    @property
    def devices(self) -> dict[str, dict[str, Any]]:
        return self.doc["devices"]

    def counts(self) -> dict[str, int]:
        """Devices per state (every state listed)."""
        out = dict.fromkeys(DEVICE_STATES, 0)
        for dev in self.devices.values():
            out[dev["state"]] += 1
        return out

    def tried(self) -> tuple[int, int]:
        """(devices with an outcome, failures among them); devices skipped (already running the release)
        did not try."""
        ended = [dev for dev in self.devices.values() if dev["state"] in OUTCOMES and not dev["skipped"]]
        return len(ended), sum(1 for dev in ended if dev["state"] in FAILURES)

    # ---- events ----
    def step(self, now: float, firmware: dict[str, str]) -> list[Action]:
        """Time-outs, the abort threshold and the next wave at time `now`; `firmware`: each device's
        running version from its last birth (a device already running the release is done, not offered)."""
        if self.state in ENDED:
            return []
        actions: list[Action] = []
        for name, dev in self.devices.items():
            if dev["state"] in IN_FLIGHT and now >= dev["offered_at"] + self.doc["timeout_s"]:
                staged = dev["state"] == STAGED
                self._end(dev, TIMED_OUT, None, now)
                actions += ([] if staged else [("cancel", name, dev["cid"])]) + [("clear", name, dev["cid"])]
        tried, failures = self.tried()
        if should_abort(failures, tried, Fraction(self.doc["max_failures"].rstrip("%")) / 100,
                        self.doc["min_devices"]):
            counts = self.counts()
            return actions + self.abort("%d of %d devices failed (more than %s): failed %d, rolled back %d, "
                                        "timed out %d" % (failures, tried, self.doc["max_failures"],
                                                          counts[FAILED], counts[ROLLED_BACK], counts[TIMED_OUT]),
                                        now)
        while self._wave_complete():
            if self.doc["wave"] + 1 >= len(self.doc["sizes"]):
                self.doc.update(state=FINISHED, ended_at=now)
                break
            if self.state != RUNNING:
                break
            actions += self._start_wave(now, firmware)
        return actions

    def progress(self, device: str, cid: int, boot: int, seq: int, state: int, percent: int | None,
                 reason: str | None, now: float) -> list[Action]:
        """A progress report (protocols.ota.OtaProgress fields) of `device` about update `cid`."""
        dev = self.devices.get(device)
        if dev is None or dev["cid"] != cid or dev["state"] in (PENDING, ROLLED_BACK) or state not in FROM_PROGRESS:
            return []
        new, key, was = FROM_PROGRESS[state], [boot, seq], dev["state"]
        if new != ROLLED_BACK:
            if dev["key"] is not None and key <= dev["key"]:
                return []  # older than what we know (a resend, or out of order): arrival order is not seq order
            if was in OUTCOMES and (new not in OUTCOMES or (was == TIMED_OUT and reason == CANCELLED)):
                return []  # in-flight news after the outcome, or our own cancel echoed
        dev["key"] = max(key, dev["key"] or key)
        if percent is not None:
            dev["percent"] = percent
        if new == was:
            return []
        if new in OUTCOMES:
            self._end(dev, new, reason, now)
            return [] if was in OUTCOMES else [("clear", device, cid)]
        dev.update(state=new, reason=None)
        return []

    def pulled(self, device: str, cid: int) -> None:
        """The first pull of `cid` arrived: an offered device is downloading."""
        dev = self.devices.get(device)
        if dev is not None and dev["cid"] == cid and dev["state"] == OFFERED:
            dev["state"] = DOWNLOADING

    def pause(self) -> None:
        """No wave starts until `resume` (devices already offered go on)."""
        if self.state == RUNNING:
            self.doc["state"] = PAUSED

    def resume(self) -> None:
        if self.state == PAUSED:
            self.doc["state"] = RUNNING

    def abort(self, reason: str, now: float) -> list[Action]:
        """End the campaign: cancel and clear every open offer; pending devices never get one."""
        if self.state in ENDED:
            return []
        actions: list[Action] = []
        for name, dev in self.devices.items():
            if dev["state"] in (OFFERED, DOWNLOADING, VERIFYING):
                self._end(dev, FAILED, CANCELLED, now)
                actions += [("cancel", name, dev["cid"]), ("clear", name, dev["cid"])]
            elif dev["state"] == STAGED:
                actions.append(("clear", name, dev["cid"]))  # installed on trial: too late to cancel
        self.doc.update(state=ABORTED, reason=reason, ended_at=now)
        return actions

    # ---- inside ----
    def _wave_complete(self) -> bool:
        current = self.doc["wave"]
        return all(dev["state"] in OUTCOMES for dev in self.devices.values() if dev["wave"] <= current)

    def _start_wave(self, now: float, firmware: dict[str, str]) -> list[Action]:
        self.doc["wave"] += 1
        version = self.doc["release"]["version"]
        actions: list[Action] = []
        for name, dev in sorted(self.devices.items()):
            if dev["wave"] != self.doc["wave"]:
                continue
            if firmware.get(name) == version:
                self._end(dev, DONE, None, now)
                dev.update(skipped=True, note="already running %s" % version)
            else:
                dev.update(state=OFFERED, offered_at=now)
                actions.append(("offer", name, dev["cid"]))
        return actions

    @staticmethod
    def _end(dev: dict[str, Any], state: str, reason: str | None, now: float) -> None:
        dev.update(state=state, reason=reason if state in (FAILED, ROLLED_BACK) else None, ended_at=now)


def _percent(share: Fraction) -> str:
    value = share * 100
    return str(value.numerator) if value.denominator == 1 else ("%.6g" % float(value))


def summary(campaign: Campaign) -> dict[str, Any]:
    """The campaign's standing: state, wave (1-based), counts, devices with an outcome and failures."""
    tried, failures = campaign.tried()
    doc = campaign.doc
    return {"id": campaign.id, "state": campaign.state, "reason": doc["reason"], "release": doc["release"],
            "wave": doc["wave"] + 1, "waves": len(doc["sizes"]), "sizes": doc["sizes"], "tried": tried,
            "failures": failures, "counts": campaign.counts(), "devices": len(campaign.devices)}


def progress_line(campaign: Campaign) -> str:
    """One line of counts, as a rollout prints it whenever they change."""
    c = campaign.counts()
    flying = c[OFFERED] + c[DOWNLOADING] + c[VERIFYING] + c[STAGED]
    return ("wave %d/%d: done %d, in flight %d (offered %d, downloading %d, verifying %d, staged %d), failed %d, "
            "rolled back %d, timed out %d, pending %d" % (
                campaign.doc["wave"] + 1, len(campaign.doc["sizes"]), c[DONE], flying, c[OFFERED], c[DOWNLOADING],
                c[VERIFYING], c[STAGED], c[FAILED], c[ROLLED_BACK], c[TIMED_OUT], c[PENDING]))


# ---- campaign files ----
CAMPAIGNS = "campaigns"
LOCK_FILE = "rollout.lock"
CONTROLS = ("pause", "resume", "abort")
POLL_S = 0.2
SAVE_EVERY_S = 1.0
_ID = re.compile(r"c([1-9][0-9]{0,8})")
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_timeout(text: str) -> float:
    """Seconds of "90", "90s", "30m", "2h" or "1d"; FleetError (usage) otherwise."""
    match = _DURATION.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise FleetError("bad --timeout %r: use a positive number with s, m, h or d, e.g. 30m" % text,
                         exit_code=EXIT_USAGE)
    return float(match.group(1)) * _UNITS[match.group(2)]


def campaigns_dir(home: Path | None = None) -> Path:
    """FLEET_HOME/campaigns (created 0700 when missing)."""
    return private_dir((home or fleet_home()) / CAMPAIGNS)


def campaign_ids(folder: Path) -> list[str]:
    """Ids of the stored campaigns, oldest first."""
    found = [(int(m.group(1)), m.group(0)) for m in (_ID.fullmatch(p.stem) for p in folder.glob("c*.json")) if m]
    return [name for _, name in sorted(found)]


def load(campaign_id: str | None = None, home: Path | None = None) -> Campaign:
    """Campaign `campaign_id`, or the newest one; FleetError when there is none."""
    folder = campaigns_dir(home)
    if campaign_id is None:
        ids = campaign_ids(folder)
        if not ids:
            raise FleetError("no campaigns yet; start one with `fleet ota rollout RELEASE`")
        campaign_id = ids[-1]
    if not _ID.fullmatch(campaign_id):
        raise FleetError("bad campaign id %r: campaigns are c1, c2, ...; `fleet ota status` shows the newest"
                         % campaign_id, exit_code=EXIT_USAGE)
    try:
        return Campaign(json.loads((folder / (campaign_id + ".json")).read_text()))
    except FileNotFoundError:
        raise FleetError("no campaign %s; `fleet ota status` shows the newest" % campaign_id) from None
    except (OSError, ValueError) as error:
        raise FleetError("cannot read campaign %s (%s)" % (campaign_id, error)) from None


def save(campaign: Campaign, folder: Path) -> None:
    write_atomic(folder / (campaign.id + ".json"), (json.dumps(campaign.doc, indent=1) + "\n").encode())


class RolloutLock:
    """One rollout at a time per fleet home: an exclusive flock on campaigns/rollout.lock (released by the
    kernel when the process dies), naming the campaign it runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd = -1

    def __enter__(self) -> RolloutLock:
        self.fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip()
            os.close(self.fd)
            raise FleetError("a rollout is running (campaign %s); wait for it to end, or `fleet ota abort %s`"
                             % (holder or "?", holder or "CAMPAIGN")) from None
        return self

    def claim(self, campaign_id: str) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, campaign_id.encode(), 0)

    def __exit__(self, *exc: object) -> None:
        os.ftruncate(self.fd, 0)
        os.close(self.fd)


def running_rollout(home: Path | None = None) -> str | None:
    """Id of the campaign a live rollout process runs, or None."""
    path = campaigns_dir(home) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 64).decode(errors="replace").strip() or None
    finally:
        os.close(fd)
    return None


def _take_control(campaign_id: str, folder: Path) -> str | None:
    # renamed before it is read: a flag written meanwhile is the next one, never lost
    path, taken = folder / (campaign_id + ".control"), folder / (".%s.control.taken" % campaign_id)
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None
    command = taken.read_text().strip()
    taken.unlink()
    return command if command in CONTROLS else None


def control(campaign_id: str, command: str, broker: BrokerAddress | None = None, home: Path | None = None,
            wait_s: float = 15.0) -> Campaign:
    """pause, resume or abort a campaign: a flag its rollout applies within POLL_S; abort with no rollout
    running cancels and clears the offers itself. Returns the campaign once it shows the change."""
    campaign = load(campaign_id, home)
    if campaign.state in ENDED:
        raise FleetError("campaign %s has already ended (%s)" % (campaign.id, campaign.state))
    folder = campaigns_dir(home)
    if running_rollout(home) != campaign.id:
        if command != "abort":
            raise FleetError("campaign %s has no running rollout (it stopped while %s); `fleet ota abort %s` "
                             "clears its offers" % (campaign.id, campaign.state, campaign.id))
        return _abort_here(campaign, folder, broker, home)
    write_atomic(folder / (campaign.id + ".control"), command.encode())
    wanted = {"pause": (PAUSED,), "resume": (RUNNING, FINISHED), "abort": (ABORTED, FINISHED)}[command]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        campaign = load(campaign.id, home)
        if campaign.state in wanted or (command == "pause" and campaign.state in ENDED):
            return campaign
        time.sleep(POLL_S / 2)
    raise FleetError("the rollout of campaign %s did not take the %s within %g s; is it stuck? (`fleet ota "
                     "status %s`)" % (campaign.id, command, wait_s, campaign.id))


def _abort_here(campaign: Campaign, folder: Path, broker: BrokerAddress | None, home: Path | None) -> Campaign:
    server = _server(home, broker)
    server.start()
    try:
        server.apply(campaign.abort("aborted by the operator (no rollout was running)", time.time()),
                     ReleaseInfo.from_dict(campaign.doc["release"]))
        server.flush()
    finally:
        server.stop()
    save(campaign, folder)
    return campaign


# ---- the rollout ----
def run_rollout(ref: str, select: str | None = None, waves: str = "1%,10%,50%,100%", max_failures: str = "5%",
                min_devices: int = 1, timeout: str = "30m", broker: BrokerAddress | None = None,
                home: Path | None = None, echo: Callable[[str], None] = lambda line: None) -> Campaign:
    """Run a campaign of release `ref` until it is done or aborted (Ctrl-C aborts it); returns it."""
    from fleet.ota.store import find_release
    from fleet.registry import open_registry

    shares, limit = parse_waves(waves), parse_share(max_failures, "--max-failures")
    timeout_s = parse_timeout(timeout)
    if min_devices < 1:
        raise FleetError("--min-devices must be at least 1", exit_code=EXIT_USAGE)
    release = Release(find_release(ref, home))
    chosen, other = select_devices(open_registry(home).all(), parse_select(select), release.info.board)
    if other:
        echo("left out %d device(s) the registry lists as another board than %s: %s"
             % (len(other), release.info.board, ", ".join(other[:10]) + (" ..." if len(other) > 10 else "")))
    if not chosen:
        raise FleetError("no device matches --select %r; `fleet devices` lists them" % (select or ""))
    folder = campaigns_dir(home)
    with RolloutLock(folder) as lock:
        events: queue.Queue = queue.Queue()
        server = _server(home, broker, release, lambda *event: events.put(event))
        server.start()
        try:
            ids = campaign_ids(folder)
            campaign = Campaign.create("c%d" % (int(ids[-1][1:]) + 1 if ids else 1), release.info.as_dict(), chosen,
                                       shares, limit, min_devices, timeout_s, time.time(), select or "")
            lock.claim(campaign.id)
            save(campaign, folder)
            echo("campaign %s: release %d (%s) to %d devices in waves of %s, abort above %s failures once %d "
                 "tried, time-out %gs per device" % (campaign.id, release.info.seq, release.info.version, len(chosen),
                                                     "/".join(map(str, campaign.doc["sizes"])),
                                                     campaign.doc["max_failures"], min_devices, timeout_s))
            try:
                _drive(campaign, server, events, folder, echo)
            except KeyboardInterrupt:
                server.apply(campaign.abort("interrupted", time.time()), release.info)
                server.flush()
                save(campaign, folder)
                echo("campaign %s aborted: interrupted; its offers are cleared" % campaign.id)
                raise
        finally:
            server.stop()
    return campaign


def _server(home: Path | None, broker: BrokerAddress | None, release: Release | None = None,
            on_event: Callable[..., None] | None = None) -> OtaServer:
    from fleet.broker import ops_secret
    from fleet.broker_address import default_broker
    from fleet.home import fleet_name

    return OtaServer(fleet_name(home), broker or default_broker(home), ops_secret(home), release, on_event)


def _drive(campaign: Campaign, server: OtaServer, events: queue.Queue, folder: Path,
           echo: Callable[[str], None]) -> None:
    info = ReleaseInfo.from_dict(campaign.doc["release"])
    saved, saved_at, shown, wave = "", 0.0, "", campaign.doc["wave"]
    while True:
        actions: list[Action] = []
        command = _take_control(campaign.id, folder)
        if command == "pause":
            campaign.pause()
        elif command == "resume":
            campaign.resume()
        elif command == "abort":
            actions += campaign.abort("aborted by the operator", time.time())
        try:
            event = events.get(timeout=0 if command else POLL_S)
            while True:
                kind, device, message = event
                if kind == "progress":
                    actions += campaign.progress(device, message.cid, message.boot, message.seq, message.state,
                                                 message.percent, message.reason, time.time())
                elif kind == "pull":
                    campaign.pulled(device, message.cid)
                event = events.get_nowait()
        except queue.Empty:
            pass
        actions += campaign.step(time.time(), dict(server.births))
        server.apply(actions, info)
        if actions:
            server.flush()
        for name, dev in campaign.devices.items():
            if name in server.served:
                dev["sent"] = server.served[name].bytes
        if campaign.doc["wave"] != wave:
            wave = campaign.doc["wave"]
            offered = sum(1 for d in campaign.devices.values() if d["wave"] == wave and not d["skipped"])
            echo("wave %d/%d started: %d device(s) offered, %d of %d devices in the campaign so far"
                 % (wave + 1, len(campaign.doc["sizes"]), offered, campaign.doc["sizes"][wave], len(campaign.devices)))
        text = json.dumps(campaign.doc, indent=1) + "\n"
        ended = campaign.state in ENDED
        if text != saved and (command or ended or time.monotonic() - saved_at >= SAVE_EVERY_S or actions):
            write_atomic(folder / (campaign.id + ".json"), text.encode())
            saved, saved_at = text, time.monotonic()
        line = progress_line(campaign) + (" [paused]" if campaign.state == PAUSED else "")
        if line != shown:
            echo(line)
            shown = line
        if ended:
            return
