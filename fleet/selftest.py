"""The end-to-end self-test, seen from the broker: a device's birth and telemetry reach Mosquitto under
its own credential. Shared by `fleet provision` (right after the board restarts) and `fleet sync` (later).

As the fleet's own account (fleet-ops) a `Watch` subscribes to `dt/<fleet>/<id>/#` of every device under
test and waits. A device passes once an online birth and a telemetry message *of the same boot id* have
arrived: telemetry is never retained (SPEC.md "Topics"), so it was published while we listened, and the
shared boot id ties the birth to that running boot; a retained birth left by an earlier boot (an earlier
provisioning attempt, say) never passes on its own. Only the device's own account may publish there (the
generated ACL), so the messages prove its new secret works. While waiting, a `rebirth` command goes to
every device not yet passed every few seconds, so a device that is already connected resends its birth
and values at once instead of at its next report (a rebirth sent before it subscribed is simply lost).

`settle` records a result in the registry (PASS: the device becomes active); `sync` is `fleet sync`:
the broker's files brought up to date, then the check of every device still pending it.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.broker_address import (
    CONNECT_TIMEOUT,
    BrokerAddress,
    BrokerUnreachable,
    default_broker,
    require_ca,
    untrusted,
)
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.registry import Registry

#: The sensor kind a device names in its birth (agent/app.py KIND_NAMES), by registry kind.
BIRTH_KINDS = {"manhole-tilt": "manhole", "water-level": "water", "wind-load": "billboard"}
REBIRTH_EVERY = 3.0  # seconds between rebirth commands to a device that has not passed yet
PASS, FAIL, PENDING = "PASS", "FAIL", "PENDING"


@dataclass
class Check:
    """One line of a checklist: `status` PASS, FAIL or PENDING; `fix` says what to do when not PASS."""

    name: str
    status: str
    detail: str = ""
    fix: str = ""
    seconds: float | None = None  # when it ended, from the start of the run

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Expect:
    """What a device under test should say in its birth: registry kind and firmware (None: any)."""

    kind: str
    firmware: str | None = None


@dataclass
class DeviceResult:
    """What arrived from one device: online births and telemetry by boot id, and notes on the rest."""

    device_id: str
    expect: Expect
    births: dict[int, Any] = field(default_factory=dict)
    telemetry: dict[int, Any] = field(default_factory=dict)
    offline: bool = False  # its retained state was a last will
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None  # from the start of the wait to the proof

    @property
    def boot(self) -> int | None:
        """The boot id with both a birth and telemetry (the proof), else None."""
        both = [boot for boot in self.telemetry if boot in self.births]
        return both[-1] if both else None

    def mismatch(self) -> str | None:
        """What the proven boot's birth says that this fleet did not install, else None."""
        if self.boot is None:
            return None
        birth, want_kind = self.births[self.boot], BIRTH_KINDS.get(self.expect.kind)
        if birth.kind is not None and birth.kind != want_kind:
            return "it reports sensor kind %r, not %r (%s)" % (birth.kind, want_kind, self.expect.kind)
        if self.expect.firmware is not None and birth.firmware != self.expect.firmware:
            return "it runs firmware %s, not %s" % (birth.firmware, self.expect.firmware)
        return None

    @property
    def finished(self) -> bool:
        return self.boot is not None

    @property
    def passed(self) -> bool:
        return self.boot is not None and self.mismatch() is None

    def checks(self, timeout: float, port: str | None = None) -> list[Check]:
        """The birth and telemetry lines of the checklist (`port`: the board's, named in what to do)."""
        found = [self._birth_check(timeout), self._telemetry_check(timeout)]
        if port:
            for item in found:
                item.fix = item.fix.replace("--port PORT", "--port " + port)
        return found

    def _birth_check(self, timeout: float) -> Check:
        wrong = self.mismatch()
        if wrong:
            return Check("birth", FAIL, wrong, "the board does not run what this fleet installed as %s: rerun "
                         "`fleet provision` on it" % self.device_id)
        if self.boot is None and self.telemetry:
            return Check("birth", FAIL, "telemetry of boot %d arrived but no birth of that boot within %.0f s"
                         % (next(iter(self.telemetry)), timeout),
                         "the agent did not announce itself: see the board's console (`fleet console --port "
                         "PORT`), then run `fleet sync`")
        boot = self.boot if self.boot is not None else (max(self.births) if self.births else None)
        if boot is None:
            seen = "its last state is offline (a last will)" if self.offline else "nothing arrived"
            return Check("birth", FAIL, "no birth from %s within %.0f s: %s%s" % (self.device_id, timeout, seen,
                                                                                 self._noted()),
                         "the board did not connect with its new credential: check its network and that it "
                         "reaches the broker (`fleet console --port PORT` shows the agent's messages, or why it "
                         "crashed) and that "
                         "the broker was reloaded with the new passwd; then run `fleet sync`")
        birth = self.births[boot]
        return Check("birth", PASS, "online, firmware %s, boot %d" % (birth.firmware, boot))

    def _telemetry_check(self, timeout: float) -> Check:
        if self.boot is not None:
            status = PASS if self.passed else FAIL
            return Check("telemetry", status, describe_telemetry(self.telemetry[self.boot]),
                         "" if self.passed else "see the birth line")
        if not self.births:
            return Check("telemetry", FAIL, "not checked: no birth", "see the birth line")
        return Check("telemetry", FAIL, "the device is online but sent no telemetry of boot %d within %.0f s%s"
                     % (max(self.births), timeout, self._noted()),
                     "check the sensor on the board's console (`fleet console --port PORT`), then run `fleet sync`")

    def _noted(self) -> str:
        return " (%s)" % "; ".join(self.notes[:3]) if self.notes else ""


def describe_telemetry(message: Any) -> str:
    """'level 0 mm, dist 2501 mm': the records of a telemetry message, short."""
    try:
        records = message.records(int(time.time()))
    except Exception as error:  # noqa: BLE001 - a display helper: the check already passed
        return "telemetry received (%s)" % error
    return ", ".join("%s %g%s" % (r.name, r.value, " " + r.unit if r.unit else "") for r in records
                     if r.value is not None) or "telemetry received"


class Watch:
    """fleet-ops on the broker, watching devices: `open()` (BrokerUnreachable, FleetError), then `wait()`."""

    def __init__(self, broker: BrokerAddress, fleet: str, expected: dict[str, Expect], secret: str,
                 rebirth_every: float = REBIRTH_EVERY) -> None:
        from fleet.credentials import OPS_USER

        self.broker = broker
        self.fleet = fleet
        self.results = {device: DeviceResult(device, expect) for device, expect in expected.items()}
        self.rebirth_every = rebirth_every
        self._inbox: queue.Queue = queue.Queue()
        self._cids = itertools.count(random.randrange(1, 1 << 30))
        self._client = self._make_client(OPS_USER, secret)

    def _make_client(self, user: str, secret: str) -> Any:
        import paho.mqtt.client as mqtt

        name = "fleet-selftest-%d-%04x" % (os.getpid(), random.randrange(1 << 16))
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, reconnect_on_failure=False)
        client.username_pw_set(user, secret)
        client.connect_timeout = CONNECT_TIMEOUT
        if self.broker.tls:
            client.tls_set_context(self.broker.tls_context())
        put = self._inbox.put
        client.on_connect = lambda c, u, flags, reason, props: put(("connect", reason))
        client.on_subscribe = lambda c, u, mid, reasons, props: put(("suback", reasons))
        client.on_message = lambda c, u, m: put(("message", m.topic, m.payload))
        client.on_disconnect = lambda c, u, flags, reason, props: put(("disconnect", reason))
        return client

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect as fleet-ops and subscribe to every device's up topics."""
        from protocols.topic import check_id

        try:
            self._client.connect(self.broker.host, self.broker.port, keepalive=30)
        except ssl.SSLCertVerificationError as error:
            # Not a broker that is down: the node, checking it the same way, would refuse it too.
            raise FleetError(untrusted(self.broker, error)) from None
        except (OSError, ValueError) as error:
            raise BrokerUnreachable("cannot reach the broker at %s (%s)"
                                    % (self.broker, getattr(error, "strerror", None) or error)) from None
        self._client.loop_start()
        reason = self._expect("connect", CONNECT_TIMEOUT)
        if reason is None:
            raise BrokerUnreachable("the broker at %s did not answer the fleet's CONNECT" % self.broker)
        if reason.is_failure:
            raise FleetError("the broker at %s refused the fleet's own account fleet-ops (%s): it does not run this "
                             "fleet's password file; start it with FLEET_HOME/broker/mosquitto.conf (or reload it), "
                             "then run `fleet sync`" % (self.broker, reason))
        topics = [("dt/%s/%s/#" % (self.fleet, check_id(device, "device", 32)), 1) for device in self.results]
        self._client.subscribe(topics)
        if self._expect("suback", CONNECT_TIMEOUT) is None:
            raise BrokerUnreachable("the broker at %s did not confirm the fleet's subscription" % self.broker)

    def _expect(self, kind: str, timeout: float) -> Any:
        """The payload of the next `kind` event within `timeout` (messages meanwhile are handled)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._inbox.get(timeout=left)
            except queue.Empty:
                break
            if event[0] == kind:
                return event[1]
            self._handle(event, 0.0)
        return None

    def wait(self, timeout: float) -> dict[str, DeviceResult]:
        """Wait until every device passed or failed, or `timeout` seconds went by; the results."""
        started = time.monotonic()
        deadline = started + timeout
        next_rebirth = started
        while not all(r.finished for r in self.results.values()):
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_rebirth:
                self._rebirth()
                next_rebirth = now + self.rebirth_every
            try:
                event = self._inbox.get(timeout=max(0.0, min(deadline, next_rebirth) - now))
            except queue.Empty:
                continue
            self._handle(event, time.monotonic() - started)
        return self.results

    def _rebirth(self) -> None:
        from protocols import messages, topics
        from protocols.commands import Rebirth

        for device, result in self.results.items():
            if not result.finished:
                topic = topics.down(self.fleet, device, "rebirth")
                self._client.publish(str(topic), messages.encode(Rebirth(next(self._cids) & 0xFFFFFFFF)),
                                     qos=topic.qos, retain=topic.retain)

    def _handle(self, event: tuple, elapsed: float) -> None:
        if event[0] == "disconnect":
            raise BrokerUnreachable("the broker at %s dropped the fleet's connection (%s)" % (self.broker, event[1]))
        if event[0] != "message":
            return
        from protocols import messages, topics
        from protocols.errors import ProtocolError

        try:
            topic = topics.parse(event[1])
        except ProtocolError:
            return  # not a topic of ours: not this check's business
        result = self.results.get(topic.device)
        if result is None or result.finished or topic.kind not in ("state", "telemetry"):
            return
        try:
            message = messages.decode(topic, event[2])
        except ProtocolError as error:
            result.notes.append("an unreadable %s message: %s" % (topic.kind, error))
            return
        if topic.kind == "telemetry":
            result.telemetry.setdefault(message.boot, message)
        elif message.online:
            result.births[message.boot] = message
        else:
            result.offline = not result.births
        if result.finished and result.seconds is None:
            result.seconds = round(elapsed, 3)

    def close(self) -> None:
        """Disconnect (idempotent)."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()


def settle(registry: Registry, result: DeviceResult, timeout: float) -> str:
    """Record a self-test result in the registry: PASS makes the device active; PASS or FAIL."""
    if result.passed:
        registry.update(result.device_id, state="active")
        registry.append_history(result.device_id, "selftest passed", {"boot": result.boot, "seconds": result.seconds})
        return PASS
    failed = [c.detail for c in result.checks(timeout) if c.status != PASS]
    registry.append_history(result.device_id, "selftest failed", "; ".join(failed))
    return FAIL


# -- fleet sync ----------------------------------------------------------------------------------------

@dataclass
class SyncOutcome:
    """What `fleet sync` did: the broker files, each pending device's checks, unfinished provisionings."""

    broker: str
    devices: dict[str, tuple[str, list[Check]]]
    interrupted: list[str]

    @property
    def result(self) -> str:
        return FAIL if any(status != PASS for status, _ in self.devices.values()) else PASS

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "broker": self.broker, "interrupted": self.interrupted,
                "devices": [{"device": device, "result": status, "checks": [c.as_dict() for c in checks]}
                            for device, (status, checks) in sorted(self.devices.items())]}


def sync(broker: BrokerAddress | None = None, timeout: float = 60.0) -> SyncOutcome:
    """Rewrite and reload the broker's files, then run the end-to-end check of every device pending it.

    FleetError (BrokerUnreachable) when the broker cannot be reached: the devices stay pending."""
    from fleet.broker import ops_secret, reload_broker, write_broker_files
    from fleet.home import fleet_name
    from fleet.registry import open_registry

    registry = open_registry()
    files = write_broker_files(registry)
    reloaded = reload_broker(files.folder)
    done = "passwd and acl rewritten (%d devices); %s" % (
        files.devices, "broker reloaded" if reloaded else "no running broker of %s to reload" % files.folder)
    pending = registry.find(state="pending-selftest")
    interrupted = [r["id"] for r in registry.find(state="provisioning")]
    if not pending:
        return SyncOutcome(done, {}, interrupted)
    broker = require_ca(broker or default_broker())
    expected = {r["id"]: Expect(r["kind"], r.get("firmware")) for r in pending}
    with Watch(broker, fleet_name(), expected, ops_secret()) as watch:
        try:
            watch.open()
            results = watch.wait(timeout)
        except BrokerUnreachable as error:
            raise FleetError("%s; %d device(s) stay pending their self-test: run `fleet sync` again once the "
                             "broker runs" % (error, len(pending))) from None
    devices = {}
    for device_id, result in results.items():
        devices[device_id] = (settle(registry, result, timeout), result.checks(timeout))
    return SyncOutcome(done, devices, interrupted)
