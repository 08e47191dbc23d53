"""`fleet provision` as library steps: a blank board on a serial port becomes a registered,
calibrated device whose birth and telemetry reach the broker under its own credential.

Order, and why:
 1. identify the board (uid, MicroPython, platform) and derive or check the device id;
 2. check the id and the board against the registry: a refusal comes before anything is written to the
    board (the board is only restarted, so its old agent runs again);
 3. flash the agent (`fleet.flash`: a no-op but for a hash check when the board holds this bundle);
 4. calibrate and read the sensor with the agent's own code, run on the board through the REPL: what
    the agent computes in the field is what is checked here (SENSE below);
 5. register the device with a fresh credential, state "provisioning" (the secret exists only in memory);
 6. write /device.json atomically (the secret goes only there), state "pending-selftest";
 7. rewrite the broker's passwd and acl and reload it; 8. restart the board;
 9. the end-to-end check (`fleet.selftest`), subscribed before the restart; PASS makes it "active".
A broker that cannot be reached leaves the device "pending-selftest": `fleet sync` completes it later.
Rerunning on the same board takes over its "provisioning"/"pending-selftest" record (new credential).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.broker_address import BrokerAddress
from fleet.errors import FleetError
from fleet.registry import Record, Registry
from fleet.selftest import FAIL, PASS, PENDING, Check

#: Default device id: kind prefix + the last 6 hex digits of the board's unique id.
KIND_PREFIX = {"manhole-tilt": "mh", "water-level": "wl", "wind-load": "wd"}
RERUNNABLE = ("provisioning", "pending-selftest")
RESTART_SETTLE_S = 0.5
SAMPLES, SAMPLE_MS = 5, 250  # the plausibility read: 1.25 s, long enough for a wind speed (500 ms)

#: Run on the board (raw REPL): the active app slot on sys.path, the agent's own sensor, calibrated
#: unless a calibration is given (K kind, C calibration, M measure), then sampled; one repr()'d dict
#: comes back. A transient or garbled reading (a knock on the cover, an HX711 pulse stretched by an
#: interrupt) gets four more tries, each after a longer pause (a stretch comes in bursts): the agent
#: would simply retry it at its next sample.
SENSE = """\
import sys, time
with open('/app/active') as f:
    sys.path.insert(0, '/app/' + f.read().strip())
import board
from agent.sensing import make_sensor
from agent import calibrate
K, C, M = %(args)r
r = {'faults': [], 'cal': C}
try:
    s = make_sensor(K, board.Board(), C)
    s.setup()
    for t in range(5 if M else 0):
        try:
            r['cal'] = calibrate.run(s)
            break
        except Exception as e:
            if t == 4 or not (getattr(e, 'transient', 0) or getattr(e, 'code', '').endswith('_garbage')):
                raise
            time.sleep_ms(200 * (t + 1))
    for i in range(%(n)d):
        time.sleep_ms(%(ms)d)
        try:
            s.sample(time.ticks_ms())
        except Exception as e:
            r['faults'].append(getattr(e, 'code', repr(e)))
    r['values'] = s.values()
except Exception as e:
    r['error'] = getattr(e, 'code', None) or repr(e)
    r['detail'] = str(e)
print(repr(r))
"""


@dataclass
class Request:
    """What the technician typed."""

    port: str
    kind: str
    site: str
    lat: float | None = None
    lon: float | None = None
    device_id: str | None = None
    broker: BrokerAddress | None = None
    mount_mm: int | None = None
    board: str | None = None
    baud: int = 115200
    timeout: float = 60.0


@dataclass
class Outcome:
    """How a provision ended: `result` PASS, FAIL or PENDING, with its checklist."""

    result: str
    device_id: str | None
    checks: list[Check]
    seconds: float
    record: Record | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "device": self.device_id, "seconds": round(self.seconds, 3),
                "checks": [c.as_dict() for c in self.checks], "record": self.record}


def default_device_id(kind: str, uid: str) -> str:
    """'wl-548123': the kind's prefix and the last six hex digits of the board's unique id."""
    return "%s-%s" % (KIND_PREFIX[kind], uid.lower()[-6:])


def check_device_id(device_id: str) -> str:
    """`device_id` when it is a valid topic segment (protocols/topic.py), else FleetError."""
    from protocols.errors import ProtocolError
    from protocols.topic import DEVICE_MAX, check_id

    try:
        return check_id(device_id, "device", DEVICE_MAX)
    except ProtocolError as error:
        raise FleetError("bad device id %r: %s; choose another --id" % (device_id, error.detail)) from None


def check_claim(registry: Registry, device_id: str, uid: str) -> Record | None:
    """The record a provision of board `uid` as `device_id` takes over (an unfinished one of this board),
    None for a new device; FleetError when the id or the board belongs to another device."""
    records = registry.all()
    mine = next((r for r in records if r["id"] == device_id), None)
    if mine is not None:
        if mine.get("uid") == uid and mine["state"] in RERUNNABLE:
            return mine
        if mine.get("uid") == uid and mine["state"] == "active":
            raise FleetError("device %s is already provisioned on this board and active; to provision the board "
                             "again, retire it (`fleet device retire %s`) and use another --id" % (device_id, device_id))
        raise FleetError("device id %r is already in the registry (%s at %s, %s); choose another --id"
                         % (device_id, mine["kind"], mine["site"], mine["state"]))
    for other in records:
        if other.get("uid") == uid and other["state"] != "retired":
            if other["state"] in RERUNNABLE:
                raise FleetError("board %s is already being provisioned as device %s (%s): rerun with --id %s to "
                                 "finish it" % (uid, other["id"], other["state"], other["id"]))
            raise FleetError("board %s is already device %s (%s); retire it first (`fleet device retire %s`)"
                             % (uid, other["id"], other["state"], other["id"]))
    return None


def sense_code(kind: str, calibration: dict[str, Any] | None) -> str:
    """The board-side code of step 4: calibrate (unless `calibration` is given) and sample."""
    return SENSE % {"args": (kind, calibration or {}, calibration is None), "n": SAMPLES, "ms": SAMPLE_MS}


def sense(session: Any, kind: str, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """Calibrate and read the sensor on the board: {cal, values, faults} or {error, detail, faults}."""
    return session.eval_code(sense_code(kind, calibration))


def implausible(kind: str, values: dict[str, float], calibration: dict[str, Any], faults: list[str]) -> list[str]:
    """Why readings taken right after calibration cannot be right ([] when they are plausible)."""
    needed = {"manhole-tilt": ("tilt", "accel"), "water-level": ("dist", "level"),
              "wind-load": ("wind",) + (("load",) if "tare" in calibration else ())}[kind]
    missing = [name for name in needed if not _finite(values.get(name))]
    if missing:
        why = " (sensor faults: %s)" % ", ".join(sorted(set(faults))) if faults else ""
        return ["no %s reading in %d samples%s" % (" or ".join(missing), SAMPLES, why)]
    problems = []
    if kind == "manhole-tilt":
        if not 0.8 * 9.80665 <= values["accel"] <= 1.2 * 9.80665:
            problems.append("|a| = %.2f m/s2 at rest, not about 9.8 (1 g)" % values["accel"])
        if values["tilt"] > 5.0:
            problems.append("tilt %.1f deg right after calibration (the cover moved?)" % values["tilt"])
    elif kind == "water-level":
        mount = calibration.get("mount_mm")
        if not 30 <= values["dist"] <= 4500:  # the A02YYUW's range (3 to 450 cm)
            problems.append("distance %.0f mm is outside the ranger's 30..4500 mm" % values["dist"])
        elif isinstance(mount, (int, float)) and values["dist"] > mount + 50:
            problems.append("the ranger sees %.0f mm, farther than the mount height %d mm" % (values["dist"], mount))
    else:
        if not 0 <= values["wind"] <= 75:
            problems.append("wind %.1f m/s is outside 0..75" % values["wind"])
        if "load" in needed and abs(values["load"]) > 5000:  # the cell's rating (agent/wind.py)
            problems.append("load %.0f N right after the tare" % values["load"])
    return problems


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def describe_calibration(kind: str, cal: dict[str, Any], measured: bool) -> str:
    """One line for the checklist."""
    if kind == "manhole-tilt":
        return "resting orientation (%.3f, %.3f, %.3f) g" % (cal["base_x"], cal["base_y"], cal["base_z"])
    if kind == "water-level":
        return "mount height %s mm (%s)" % (cal.get("mount_mm"), "measured to the dry street" if measured else "given")
    return "load cell tared at %s counts, %s m/s per Hz" % (_num(cal.get("tare")), _num(cal.get("wind_factor")))


def describe_values(values: dict[str, float]) -> str:
    from agent.calibrate import UNITS  # plain data: the agent's table of units (CPython imports it fine)

    return ", ".join("%s %s %s" % (name, _num(value), UNITS.get(name, "")) for name, value in sorted(values.items()))


def _num(value: Any) -> str:
    return "%.4g" % value if isinstance(value, float) else str(value)


def calibration_fix(code: str) -> str:
    """What to do about a sensor fault during calibration."""
    if code == "manhole_not_at_rest":
        return "close the cover and keep traffic off it for a few seconds, then rerun the same command"
    if code.startswith("level_"):
        return ("make sure the ranger sees the dry street (nothing in the way, cable seated), or give "
                "--mount-height MM; then rerun the same command")
    return "check the sensor's cable and mounting, then rerun the same command"


def identity_document(fleet: str, device_id: str, kind: str, broker: BrokerAddress, secret: str,
                      calibration: dict[str, Any]) -> dict[str, Any]:
    """The board's /device.json, as agent/identity.py reads it. Holds the secret: never log it."""
    return {"fleet": fleet, "id": device_id, "kind": kind, "broker": broker.for_device(), "user": device_id,
            "password": secret, "calibration": calibration}


# -- the run -------------------------------------------------------------------------------------------

_STATES = {
    "open": "the board and the registry are unchanged",
    "flashed": "the board has the agent %(version)s but no new identity, and nothing was registered; rerunning "
               "the same command starts over",
    "registered": "device %(id)s is registered as 'provisioning' but its identity may not have reached the board; "
                  "rerun the same command: it takes the record over with a new credential",
    "identity": "the board holds device %(id)s's identity and the registry has it as 'pending-selftest'; rerun "
                "the same command (it takes the record over with a new credential), or run `fleet sync` once "
                "the broker is reachable",
}
_STATES["restarted"] = _STATES["identity"]


@dataclass
class _Run:
    req: Request
    on_check: Callable[[Check], None]
    observer: Any
    started: float = field(default_factory=time.monotonic)
    checks: list[Check] = field(default_factory=list)
    stage: str = "open"
    session: Any = None
    device_id: str | None = None
    version: str = ""
    values: dict[str, float] = field(default_factory=dict)

    def check(self, name: str, status: str, detail: str, fix: str = "") -> Check:
        item = Check(name, status, detail, fix, round(time.monotonic() - self.started, 3))
        self.checks.append(item)
        self.on_check(item)
        return item

    def outcome(self, result: str, record: Record | None = None) -> Outcome:
        return Outcome(result, self.device_id, self.checks, time.monotonic() - self.started, record)

    def where(self) -> str:
        """The state things are in, for an error message."""
        return _STATES[self.stage] % {"id": self.device_id, "version": self.version}


def provision(req: Request, on_check: Callable[[Check], None] | None = None, observer: Any = None) -> Outcome:
    """Provision the board on `req.port` (see the module docstring); checks go to `on_check` as they end.

    FleetError (exit 3) when a step cannot be done, saying what state the board and registry are in."""
    from fleet.board_session import BoardSession
    from fleet.broker_address import check_certificate, default_broker, require_ca
    from fleet.home import fleet_name
    from fleet.registry import open_registry

    if req.mount_mm is not None and req.kind != "water-level":
        raise FleetError("--mount-height is for water-level devices, not %s" % req.kind)
    run = _Run(req, on_check or (lambda check: None), observer)
    broker = require_ca(req.broker or default_broker())
    check_certificate(broker)  # a wrong CA is refused before the board is touched, not after its restart
    fleet, registry = fleet_name(), open_registry()
    run.session = BoardSession.open(req.port, req.baud)
    try:
        return _provision(run, registry, fleet, broker)
    except FleetError as error:
        if run.stage != "restarted" and run.session is not None and not run.session.broken:
            with contextlib.suppress(FleetError):
                run.session.soft_reset()  # the board runs its agent (old or new) again
        raise FleetError("%s; %s" % (error, run.where()), exit_code=error.exit_code) from None
    finally:
        if run.session is not None:
            run.session.close()


def _provision(run: _Run, registry: Registry, fleet: str, broker: BrokerAddress) -> Outcome:
    req = run.req
    ident, board = _identify(run)
    run.device_id = check_device_id(req.device_id or default_device_id(req.kind, ident["uid"]))
    prior = check_claim(registry, run.device_id, ident["uid"])
    _flash(run, board, ident)
    calibration = _sense(run)
    if calibration is None:
        run.session.soft_reset()
        return run.outcome(FAIL)
    secret = _register(run, registry, prior, board, ident, calibration)
    doc = identity_document(fleet, run.device_id, req.kind, broker, secret, calibration)
    run.session.write_file_atomic("/device.json", json.dumps(doc, separators=(",", ":")).encode())
    registry.update(run.device_id, state="pending-selftest")
    registry.append_history(run.device_id, "identity written", {"fleet": fleet, "broker": str(broker)})
    run.stage = "identity"
    run.check("identity", PASS, "/device.json for %s (fleet %s, broker %s)" % (run.device_id, fleet, broker))
    _broker_files(run, registry)
    return _restart_and_check(run, registry, fleet, broker)


def _identify(run: _Run) -> tuple[dict[str, Any], str]:
    from fleet.flash import PLATFORM_BOARDS

    ident = run.session.identify()
    board = PLATFORM_BOARDS.get(ident["platform"])
    if not ident.get("uid"):
        raise FleetError("the board on %s reports no unique id (machine.unique_id), so it cannot be told apart "
                         "from others" % run.req.port)
    if board is None:
        raise FleetError("the board runs MicroPython on %r, for which there is no agent bundle" % ident["platform"])
    if run.req.board is not None and run.req.board != board:
        raise FleetError("--board %s, but the board on %s is %s" % (run.req.board, run.req.port, board))
    run.check("board", PASS, "%s %s, MicroPython %s, %d KB flash free" % (board, ident["uid"], ident["micropython"],
                                                                         ident["flash_free"] // 1024))
    return ident, board


def _flash(run: _Run, board: str, ident: dict[str, Any]) -> None:
    """Flash the agent built for `board` (only what differs is sent), then reopen the REPL session."""
    import tempfile

    from firmware.build import BuildError, build_bundle
    from fleet import __version__
    from fleet import flash as flashing
    from fleet.board_session import BoardSession

    with tempfile.TemporaryDirectory() as tmp:
        try:
            build_bundle(board, __version__, Path(tmp) / "bundle")
        except BuildError as error:
            raise FleetError(str(error)) from None
        bundle = flashing.Bundle(Path(tmp) / "bundle")
        try:
            summary = flashing.flash(run.session, bundle, run.observer, ident)
        finally:
            if run.observer is not None:
                run.observer.close()
    run.version, run.stage = bundle.version, "flashed"
    if summary["up_to_date"]:
        detail = "agent %s already installed (slot %s)" % (bundle.version, summary["slot"])
    else:
        detail = "agent %s flashed to slot %s: %d files, %d bytes in %.1f s" % (
            bundle.version, summary["slot"], len(summary["sent"]) + len(summary["copied"]), summary["bytes_sent"],
            summary["seconds"])
    run.check("agent", PASS, detail)
    run.session.close()  # flash() restarted the board: the agent runs; take the REPL back
    run.session = None
    # A Ctrl-C that reaches the board while it restarts is lost, and BoardSession.open then waits out its
    # whole first attempt (5 s): let the restart finish first (~0.1 s on the emulator and an ESP32).
    time.sleep(RESTART_SETTLE_S)
    run.session = BoardSession.open(run.req.port, run.req.baud)


def _sense(run: _Run) -> dict[str, Any] | None:
    """Calibrate and read the sensor; the calibration, or None after a FAIL check (nothing registered)."""
    req = run.req
    given = {"mount_mm": req.mount_mm} if req.mount_mm is not None else None
    answer = sense(run.session, req.kind, given)
    keep = "; nothing was registered (the board has the agent but no new identity)"
    if "error" in answer:
        code = str(answer["error"])
        run.check("calibration", FAIL, "%s%s" % (answer.get("detail") or code, keep), calibration_fix(code))
        return None
    cal = answer["cal"]
    run.check("calibration", PASS, describe_calibration(req.kind, cal, given is None))
    values = answer.get("values") or {}
    problems = implausible(req.kind, values, cal, answer.get("faults") or [])
    if problems:
        run.check("sensor", FAIL, "; ".join(problems) + keep, "check the sensor's cable and mounting (and "
                  "--mount-height if given), then rerun the same command")
        return None
    run.check("sensor", PASS, describe_values(values))
    run.values = values
    return cal


def _register(run: _Run, registry: Registry, prior: Record | None, board: str, ident: dict[str, Any],
              calibration: dict[str, Any]) -> str:
    """Register (or take over) the device with a fresh credential; the secret, for the board only."""
    from fleet.credentials import device_credential

    req, device_id = run.req, str(run.device_id)
    secret, credential = device_credential(device_id)
    fields = {"kind": req.kind, "site": req.site, "lat": req.lat, "lon": req.lon, "board": board,
              "uid": ident["uid"], "firmware": run.version, "calibration": calibration, "credential": credential,
              "state": "provisioning"}
    detail = {"port": req.port, "micropython": ident["micropython"], "agent": run.version,
              "readings": run.values}
    if prior is None:
        registry.add({"id": device_id, **fields})
    else:
        registry.update(device_id, **fields)
    registry.append_history(device_id, "reprovisioning" if prior else "provisioning", detail)
    run.stage = "registered"
    run.check("registry", PASS, "%s %s (%s at %s) with a new credential" % (
        device_id, "taken over" if prior else "registered", req.kind, req.site))
    return secret


def _broker_files(run: _Run, registry: Registry) -> None:
    from fleet.broker import reload_broker, write_broker_files

    files = write_broker_files(registry)
    reloaded = reload_broker(files.folder)
    run.check("broker", PASS, "passwd and acl rewritten (%d devices); %s" % (
        files.devices, "broker reloaded" if reloaded else "no running broker of %s to reload" % files.folder))


def _restart_and_check(run: _Run, registry: Registry, fleet: str, broker: BrokerAddress) -> Outcome:
    """Subscribe, restart the board, wait for its birth and telemetry; the device's final state."""
    from fleet.broker import ops_secret
    from fleet.broker_address import BrokerUnreachable
    from fleet.selftest import Expect, Watch, settle

    device_id = str(run.device_id)
    result = None
    with Watch(broker, fleet, {device_id: Expect(run.req.kind, run.version)}, ops_secret()) as watch:
        unreachable: BrokerUnreachable | None = None
        try:
            watch.open()  # before the restart: the birth and first telemetry then arrive live
        except BrokerUnreachable as error:
            unreachable = error
        run.session.hard_reset()
        run.stage = "restarted"
        run.check("restart", PASS, "the board restarted into the agent")
        if unreachable is None:
            try:
                result = watch.wait(run.req.timeout)[device_id]
            except BrokerUnreachable as error:
                unreachable = error
    if result is None:
        registry.append_history(device_id, "selftest pending", str(unreachable))
        run.check("end-to-end", PENDING, "%s; everything is recorded locally" % unreachable,
                  "run `fleet sync` when the broker is reachable")
        return run.outcome(PENDING, registry.get(device_id))
    for item in result.checks(run.req.timeout, run.req.port):
        run.check(item.name, item.status, item.detail, item.fix)
    return run.outcome(settle(registry, result, run.req.timeout), registry.get(device_id))
