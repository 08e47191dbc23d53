"""The fleet's side of the OTA transfer (SPEC.md "OTA"): offers, chunks for pulls, and what devices report.

`OtaServer` is the fleet's operations account (fleet-ops) on the broker, run by a rollout:

- it publishes offers (retained on `cmd/<fleet>/<id>/ota`), clears them (an empty retained payload) and
  sends cancels (live);
- it answers each pull (`dt/<fleet>/+/pull`) of a cid it serves with the asked chunks of the release's
  stored files: index 0 the signed envelope (release.cbor), i >= 1 files/<manifest path i-1>.z, all held
  in memory (a release is ~65 KB); a pull of a cid it cancelled gets the cancel offer again;
- it hands every progress report (`dt/<fleet>/+/ota`), the first pull of a cid, and each birth
  (`dt/<fleet>/+/state`: the retained ones on subscribing give every device's running firmware) to
  `on_event(kind, device, value)`, called on paho's network thread.

Chunks are published from that network thread as pulls arrive: a window is at most 8 chunks, so what is
in flight stays bounded by what the devices ask for.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.broker_address import CONNECT_TIMEOUT, BrokerAddress, BrokerUnreachable, untrusted
from fleet.errors import FleetError

#: Chunk messages paho may have unacknowledged at once (the devices' windows, 8 chunks each, add up).
MAX_INFLIGHT = 1000


@dataclass(frozen=True)
class ReleaseInfo:
    """What an offer says about a release: its seq, version, envelope size and SHA-256 (and its board)."""

    seq: int
    version: str
    size: int
    sha256: bytes
    board: str = ""

    def offer(self, cid: int, cancel: bool = False) -> Any:
        """The OtaOffer of this release as update `cid`."""
        from protocols.ota import OtaOffer

        return OtaOffer(cid, self.version, self.seq, self.size, self.sha256, cancel)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "version": self.version, "size": self.size, "sha256": self.sha256.hex(),
                "board": self.board}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ReleaseInfo:
        return cls(int(doc["seq"]), str(doc["version"]), int(doc["size"]), bytes.fromhex(doc["sha256"]),
                   str(doc.get("board", "")))


class Release:
    """A stored release, checked as a device would check it (`verify_release`), held in memory."""

    def __init__(self, folder: Path) -> None:
        from fleet.ota.store import FILES, RELEASE_FILE, SUFFIX, own_trust, verify_release

        self.folder = Path(folder)
        manifest = verify_release(self.folder, own_trust(self.folder))
        envelope = (self.folder / RELEASE_FILE).read_bytes()
        self.manifest = manifest
        self.info = ReleaseInfo(manifest.seq, manifest.version, len(envelope), hashlib.sha256(envelope).digest(),
                                manifest.board)
        #: stored form of file index i (0: the envelope)
        self.stored = [envelope] + [(self.folder / FILES / (entry[0] + SUFFIX)).read_bytes()
                                    for entry in manifest.files]


@dataclass
class Served:
    """What the server sent one device: pulls answered, chunks and data bytes."""

    pulls: int = 0
    chunks: int = 0
    bytes: int = 0
    by_index: dict[int, int] = field(default_factory=dict)  # file index -> data bytes sent


class OtaServer:
    """fleet-ops on the broker, serving one release: `start()`, `serve()`, `offer()`, `clear()`, `stop()`."""

    def __init__(self, fleet: str, broker: BrokerAddress, secret: str, release: Release | None = None,
                 on_event: Callable[[str, str, Any], None] | None = None) -> None:
        self.fleet = fleet
        self.broker = broker
        self.release = release
        self.on_event = on_event or (lambda kind, device, value: None)
        self.births: dict[str, str] = {}  # device -> firmware of its last birth seen
        self.served: dict[str, Served] = {}
        self._secret = secret
        self._serving: dict[str, int] = {}  # device -> cid whose pulls are answered
        self._cancelled: dict[str, int] = {}  # device -> cid whose pulls get a cancel
        self._pulled: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[Any] = []  # MQTTMessageInfo of offers/clears not yet confirmed
        self._client: Any = None

    # ---- connection ----
    def start(self) -> None:
        """Connect as fleet-ops and subscribe; returns once the retained births have arrived."""
        import paho.mqtt.client as mqtt

        from fleet.credentials import OPS_USER

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id="fleet-ota-%d-%04x" % (os.getpid(), random.randrange(1 << 16)))
        client.username_pw_set(OPS_USER, self._secret)
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_inflight_messages_set(MAX_INFLIGHT)
        if self.broker.tls:
            client.tls_set_context(self.broker.tls_context())  # the CA of --broker-ca, else the system's
        client.on_connect = self._on_connect
        client.on_subscribe = lambda c, u, mid, reasons, props: self._inbox.put(("suback", mid, reasons))
        client.on_message = self._on_message
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=30)
        except ssl.SSLCertVerificationError as error:
            raise FleetError(untrusted(self.broker, error)) from None
        except (OSError, ValueError) as error:
            raise BrokerUnreachable("cannot reach the broker at %s (%s); check --broker (or FLEET_BROKER) and "
                                    "that it runs" % (self.broker, getattr(error, "strerror", None) or error)) from None
        self._client = client
        client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        subscribed = 0
        while subscribed < 2:
            try:
                event = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise BrokerUnreachable("the broker at %s did not answer the fleet's CONNECT/SUBSCRIBE"
                                        % self.broker) from None
            if event[0] == "connect" and event[1].is_failure:
                self.stop()
                raise FleetError("the broker at %s refused the fleet's account fleet-ops (%s): it does not run "
                                 "this fleet's password file" % (self.broker, event[1]))
            if event[0] == "suback":
                if any(reason.is_failure for reason in event[2]):
                    self.stop()
                    raise FleetError("the broker at %s did not let fleet-ops subscribe to the devices' OTA "
                                     "topics; check the ACL (`fleet broker config`)" % self.broker)
                subscribed += 1

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._inbox.put(("connect", reason))
        if reason.is_failure:
            return
        _no_delay(client)
        # Births first, alone: once the second SUBACK is in, the retained births have all been delivered
        # (one connection, in order), so `births` holds every device's firmware. Again after a reconnect.
        base = "dt/%s/+/" % self.fleet
        client.subscribe(base + "state", 1)
        client.subscribe([(base + "ota", 1), (base + "pull", 1)])

    def stop(self) -> None:
        """Disconnect (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    # ---- what is served ----
    def serve(self, device: str, cid: int) -> None:
        """Answer the pulls of `device` for update `cid`."""
        with self._lock:
            self._serving[device] = cid
            self._cancelled.pop(device, None)

    def withdraw(self, device: str, cid: int, cancel: bool) -> None:
        """Stop serving `device`'s update `cid`; with `cancel`, its later pulls get the cancel offer."""
        with self._lock:
            if self._serving.get(device) == cid:
                del self._serving[device]
            if cancel:
                self._cancelled[device] = cid

    # ---- publishing (from the caller's thread) ----
    def offer(self, device: str, cid: int, info: ReleaseInfo, cancel: bool = False) -> None:
        """Publish the offer of `info` as `cid`: retained, or with `cancel` live (a cancel never stays)."""
        self._publish(device, "ota", self._encode(info.offer(cid, cancel)), retain=not cancel)

    def apply(self, actions: list[tuple[str, str, int]], info: ReleaseInfo) -> None:
        """Carry out a campaign's actions (fleet/ota/campaign.py): ("offer" | "cancel" | "clear", device,
        cid). An offer starts serving the device's pulls of `cid`; a cancel or clear ends it."""
        for what, device, cid in actions:
            if what == "offer":
                self.serve(device, cid)
                self.offer(device, cid, info)
            elif what == "cancel":
                self.withdraw(device, cid, cancel=True)
                self.offer(device, cid, info, cancel=True)
            elif what == "clear":
                self.withdraw(device, cid, cancel=False)
                self.clear(device)
            else:
                raise ValueError("unknown campaign action %r" % (what,))

    def clear(self, device: str) -> None:
        """Remove the retained offer of `device` (an empty retained payload)."""
        self._publish(device, "ota", b"", retain=True)

    def flush(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait until the broker confirmed every offer, cancel and clear published so far."""
        pending, self._pending = self._pending, []
        deadline = time.monotonic() + timeout
        for info in pending:
            try:
                info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
            if not info.is_published():
                raise BrokerUnreachable("the broker at %s did not confirm the OTA offers within %g s; run "
                                        "`fleet ota abort` when it is back" % (self.broker, timeout))

    def _publish(self, device: str, kind: str, payload: bytes, retain: bool) -> None:
        from protocols.topics import down

        info = self._client.publish(str(down(self.fleet, device, kind)), payload, qos=1, retain=retain)
        self._pending.append(info)

    @staticmethod
    def _encode(message: Any) -> bytes:
        from protocols.messages import encode

        return encode(message)

    # ---- paho's network thread ----
    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from protocols.errors import ProtocolError
        from protocols.messages import decode
        from protocols.topics import parse

        try:
            topic = parse(msg.topic)
            if not msg.payload:
                return  # a cleared retained message
            message = decode(topic, msg.payload)
        except ProtocolError:
            return  # not readable: the ingest quarantines it; nothing for us
        device = topic.device
        if topic.kind == "state":
            if message.online:
                self.births[device] = message.firmware
                self.on_event("birth", device, message)
        elif topic.kind == "ota":
            self.on_event("progress", device, message)
        elif topic.kind == "pull":
            self._answer(client, device, message)

    def _answer(self, client: Any, device: str, pull: Any) -> None:
        from protocols.ota import CHUNK, Chunk
        from protocols.topics import down

        with self._lock:
            serving = self._serving.get(device) == pull.cid
            cancelled = self._cancelled.get(device) == pull.cid
        if cancelled and self.release is not None:
            payload = self._encode(self.release.info.offer(pull.cid, cancel=True))
            client.publish(str(down(self.fleet, device, "ota")), payload, qos=1, retain=False)
            return
        if not serving or self.release is None or pull.index >= len(self.release.stored):
            return  # not ours to answer (SPEC: no answer; the device gives up after a few tries)
        if (device, pull.cid) not in self._pulled:
            self._pulled.add((device, pull.cid))
            self.on_event("pull", device, pull)
        data = self.release.stored[pull.index]
        total = len(data)
        topic = str(down(self.fleet, device, "chunk"))
        stats = self.served.setdefault(device, Served())
        stats.pulls += 1
        offset = min(pull.offset, total)
        for _ in range(pull.count):
            piece = data[offset:offset + CHUNK]
            client.publish(topic, self._encode(Chunk(pull.cid, pull.index, offset, piece, total)), qos=1)
            stats.chunks += 1
            stats.bytes += len(piece)
            stats.by_index[pull.index] = stats.by_index.get(pull.index, 0) + len(piece)
            offset += len(piece)
            if offset >= total:
                break


def _no_delay(client: Any) -> None:
    """Send small packets at once: with Nagle's algorithm a chunk or an offer waits for the ACK of the
    previous packet, which the broker delays by up to 40 ms (each window of a download would pay it)."""
    import socket

    sock = client.socket()
    if sock is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
