"""Commands from the operations centre to one device: ping, reboot, config (SPEC.md "Commands", "Config").

Each goes to `cmd/<fleet>/<id>/<type>` as the fleet's own account (fleet-ops), with a random cid, and is
answered by the device's Ack of that cid on `dt/<fleet>/<id>/ack`. The link subscribes before it
publishes, so an ack cannot slip past. It also subscribes to the device's retained state: the birth
tells the config version in force before anything is sent, and a reboot is proven by the birth of a new
boot id. Config is published retained (desired state: a sleeping device gets it when it next connects);
ping and reboot are not (a retained reboot would restart the device on every connect).
"""

from __future__ import annotations

import os
import queue
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.broker_address import CONNECT_TIMEOUT, BrokerAddress, BrokerUnreachable, default_broker, untrusted
from fleet.errors import FleetError

DEFAULT_TIMEOUT = 10.0


def new_cid() -> int:
    """A random command id (uint32, never 0), so acks of another process's commands never match ours."""
    return random.randrange(1, 1 << 32)


class DeviceLink:
    """fleet-ops on the broker, talking to one device: `open()`, `send()`, `wait_ack()`, `close()`."""

    def __init__(self, device: str, broker: BrokerAddress | None = None, home: Path | None = None) -> None:
        from fleet.broker import ops_secret
        from fleet.home import fleet_name

        self.device = device
        self.fleet = fleet_name(home)
        self.broker = broker or default_broker(home)
        self.states: list[Any] = []  # State messages in arrival order (the retained one first)
        self.acks: dict[int, Any] = {}  # cid -> Ack
        self._secret = ops_secret(home)
        self._inbox: queue.Queue = queue.Queue()
        self._client: Any = None

    def __enter__(self) -> DeviceLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect and subscribe to the device's state, then its acks; BrokerUnreachable, FleetError."""
        import paho.mqtt.client as mqtt

        from fleet.credentials import OPS_USER
        from protocols.topic import UP, Topic

        name = "fleet-cmd-%d-%04x" % (os.getpid(), random.randrange(1 << 16))
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, reconnect_on_failure=False)
        client.username_pw_set(OPS_USER, self._secret)
        client.connect_timeout = CONNECT_TIMEOUT
        if self.broker.tls:
            client.tls_set_context(self.broker.tls_context())  # the CA of --broker-ca, else the system's
        put = self._inbox.put
        client.on_connect = lambda c, u, flags, reason, props: put(("connect", reason))
        client.on_subscribe = lambda c, u, mid, reasons, props: put(("suback", reasons))
        client.on_publish = lambda c, u, mid, reason, props: put(("puback", mid))
        client.on_message = lambda c, u, m: put(("message", m.topic, m.payload))
        client.on_disconnect = lambda c, u, flags, reason, props: put(("disconnect", reason))
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=30)
        except ssl.SSLCertVerificationError as error:
            raise FleetError(untrusted(self.broker, error)) from None
        except (OSError, ValueError) as error:
            raise BrokerUnreachable("cannot reach the broker at %s (%s); check --broker (or FLEET_BROKER) and "
                                    "that it runs" % (self.broker, getattr(error, "strerror", None) or error)) from None
        self._client = client
        client.loop_start()
        reason = self._expect("connect", CONNECT_TIMEOUT)
        if reason is None:
            raise BrokerUnreachable("the broker at %s did not answer the fleet's CONNECT" % self.broker)
        if reason.is_failure:
            raise FleetError("the broker at %s refused the fleet's account fleet-ops (%s): it does not run this "
                             "fleet's password file; start it with FLEET_HOME/broker/mosquitto.conf"
                             % (self.broker, reason))
        # One subscription after the other: once the second SUBACK is in, the broker has sent the
        # retained state the first one matched (one connection, in order), so `states` holds it.
        for kind in ("state", "ack"):
            client.subscribe(str(Topic(UP, self.fleet, self.device, kind)), 1)
            reasons = self._expect("suback", CONNECT_TIMEOUT)
            if reasons is None or any(r.is_failure for r in reasons):
                raise FleetError("the broker at %s did not let fleet-ops subscribe to %s's %s (%s); check the "
                                 "ACL (`fleet broker config`)" % (self.broker, self.device, kind, reasons))

    @property
    def last_state(self) -> Any:
        """The newest State message of the device seen (retained or live), or None."""
        return self.states[-1] if self.states else None

    def send(self, message: Any) -> int:
        """Publish `message` (a protocols command) with the QoS and retain of its topic; wait for PUBACK.
        Returns the number of states seen before it (what came later is live, not the retained one)."""
        from protocols import messages, topics

        seen = len(self.states)

        topic = topics.down(self.fleet, self.device, message.KIND)
        info = self._client.publish(str(topic), messages.encode(message), qos=topic.qos, retain=topic.retain)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            event = self._next(left)
            if event is not None and event[0] == "puback" and event[1] == info.mid:
                return seen
        raise BrokerUnreachable("the broker at %s did not confirm the %s command" % (self.broker, message.KIND))

    def wait_ack(self, cid: int, timeout: float, then: str) -> Any:
        """The device's Ack of `cid`; FleetError "no answer from X within Ns: ...; <then>" after `timeout`."""
        deadline = time.monotonic() + timeout
        while cid not in self.acks:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FleetError("no answer from %s within %g s: it may be offline or asleep%s; %s"
                                 % (self.device, timeout, self._last_seen(), then))
            self._next(left)
        return self.acks[cid]

    def wait_birth(self, seen: int, boot: int, timeout: float) -> Any:
        """The first online State with a boot id other than `boot` among those after the first `seen`
        (`send`'s answer: an ack held in the outbox over the restart may come after the new birth), or
        None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for state in self.states[seen:]:
                if state.online and state.boot != boot:
                    return state
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._next(left)

    def _last_seen(self) -> str:
        state = self.last_state
        if state is None:
            return ""
        return " (its last state: %s, boot %d)" % ("online" if state.online else "offline, a last will", state.boot)

    def _expect(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self._next(left)
            if event is not None and event[0] == kind:
                return event[1]
        return None

    def _next(self, timeout: float) -> tuple | None:
        """Handle the next event within `timeout` and return it (None when none came)."""
        from protocols import messages, topics
        from protocols.errors import ProtocolError

        try:
            event = self._inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if event[0] == "disconnect" and self._client is not None:
            raise BrokerUnreachable("the broker at %s dropped the fleet's connection (%s)" % (self.broker, event[1]))
        if event[0] == "message":
            try:
                topic = topics.parse(event[1])
                message = messages.decode(topic, event[2])
            except ProtocolError:
                return event  # not readable: not an answer to us (the ingest quarantines it)
            if topic.kind == "state":
                self.states.append(message)
            elif topic.kind == "ack":
                self.acks.setdefault(message.cid, message)
        return event

    def close(self) -> None:
        """Disconnect (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()


def _device(device_id: str, home: Path | None = None) -> dict[str, Any]:
    """The registry record of a device that may be sent commands; FleetError when unknown or retired."""
    from fleet.registry import open_registry

    record = open_registry(home).get(device_id)
    if record["state"] == "retired":
        raise FleetError("%s is retired: its credential is revoked, so it cannot get commands" % device_id)
    return record


@dataclass
class PingResult:
    """A ping's answer: round trip in ms (from the echo the device returned), its boot and config."""

    device: str
    rtt_ms: float
    boot: int
    config: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "rtt_ms": self.rtt_ms, "boot": self.boot, "config": self.config}


def ping(device_id: str, timeout: float = DEFAULT_TIMEOUT, broker: BrokerAddress | None = None,
         home: Path | None = None) -> PingResult:
    """Ping one device and measure the round trip; FleetError on no answer within `timeout`."""
    from protocols.commands import Ping

    _device(device_id, home)
    cid = new_cid()
    with DeviceLink(device_id, broker, home) as link:
        started = time.monotonic()
        sent_ms = int(time.time() * 1000)
        link.send(Ping(cid, sent_ms))
        ack = link.wait_ack(cid, timeout, "a ping is not kept for it: try again when it is online")
        now_ms, local_ms = time.time() * 1000, (time.monotonic() - started) * 1000
    # The echo is the send time the device returned; a device that did not echo it is timed locally.
    rtt = now_ms - ack.result if isinstance(ack.result, int) and ack.result == sent_ms else local_ms
    return PingResult(device_id, round(rtt, 1), ack.boot, ack.config)


@dataclass
class RebootResult:
    """A reboot: the boot id that acked it, the new boot's birth (None when not waited for)."""

    device: str
    old_boot: int
    new_boot: int | None = None
    seconds: float | None = None  # from the command to the new birth
    reset: int | None = None  # the new birth's reset cause (SPEC.md "State")

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "old_boot": self.old_boot, "new_boot": self.new_boot,
                "seconds": self.seconds, "reset": self.reset}


def reboot(device_id: str, timeout: float = 60.0, wait: bool = True, broker: BrokerAddress | None = None,
           home: Path | None = None) -> RebootResult:
    """Reboot one device: ack within `timeout`, then (with `wait`) its birth with a new boot id."""
    from fleet.registry import open_registry
    from protocols.commands import Reboot

    _device(device_id, home)
    cid = new_cid()
    with DeviceLink(device_id, broker, home) as link:
        started = time.monotonic()
        seen = link.send(Reboot(cid))
        ack = link.wait_ack(cid, timeout, "a reboot is not kept for it (a retained one would loop): try again "
                            "when it is online")
        open_registry(home).append_history(device_id, "reboot", {"boot": ack.boot})
        result = RebootResult(device_id, ack.boot)
        if wait:
            birth = link.wait_birth(seen, ack.boot, max(1.0, timeout - (time.monotonic() - started)))
            if birth is None:
                raise FleetError("%s acknowledged the reboot (boot %d) but sent no birth of a new boot within %g s; "
                                 "see `fleet health` or the board's console" % (device_id, ack.boot, timeout))
            result.new_boot, result.reset = birth.boot, birth.reset
            result.seconds = round(time.monotonic() - started, 2)
    return result


@dataclass
class ConfigResult:
    """A config sent: its version and cid; the ack's status, reasons and version in force (None: not
    waited for)."""

    device: str
    version: int
    cid: int
    doc: dict[str, Any]
    status: str = "sent"  # sent | applied | refused
    reasons: list[str] = field(default_factory=list)
    in_force: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "version": self.version, "cid": self.cid, "status": self.status,
                "reasons": self.reasons, "in_force": self.in_force, "doc": self.doc}


def configure(device_id: str, sets: list[str], timeout: float = 30.0, wait: bool = True,
              broker: BrokerAddress | None = None, store_url: str | None = None,
              home: Path | None = None) -> ConfigResult:
    """Apply `sets` (KEY=VALUE) to the device's desired config, send it as a new version (retained), store
    it in the registry as desired, and (with `wait`) wait for the device's ack."""
    from fleet import config_edit
    from fleet.registry import now_utc, open_registry

    record = _device(device_id, home)
    desired_version, desired_doc = config_edit.desired(record)
    doc = config_edit.apply_sets(desired_doc, record["kind"], sets)  # bad input fails before the broker
    answer = (record.get("config") or {}).get("answer") or {}
    known = [record.get("config_version"), answer.get("config"), config_edit.store_config_version(device_id, store_url, home)]
    registry = open_registry(home)
    cid = new_cid()
    with DeviceLink(device_id, broker, home) as link:
        birth = link.last_state
        if birth is not None and birth.online:
            known.append(birth.config)
        version = config_edit.next_version(desired_version, *known)
        link.send(config_edit.build(cid, version, doc))
        # Desired from now on: the broker holds it retained for the device.
        stored: dict[str, Any] = {"version": version, "doc": config_edit.to_json(doc), "sent_at": now_utc(),
                                  "cid": cid}
        registry.update(device_id, config=stored)
        registry.append_history(device_id, "config sent", {"version": version, "set": list(sets)})
        result = ConfigResult(device_id, version, cid, stored["doc"])
        if not wait:
            return result
        ack = link.wait_ack(cid, timeout, "the config (version %d) is retained on the broker and applies when it "
                            "next connects; `fleet device show %s` shows when" % (version, device_id))
    result.status = "refused" if ack.status else "applied"
    result.reasons, result.in_force = list(ack.reasons or []), ack.config
    stored["answer"] = {"cid": cid, "status": result.status, "reasons": result.reasons, "config": ack.config,
                        "at": now_utc()}
    registry.update(device_id, config=stored, **({} if ack.config is None else {"config_version": ack.config}))
    registry.append_history(device_id, "config " + result.status,
                            {"version": version, "in_force": ack.config, "reasons": result.reasons})
    return result
