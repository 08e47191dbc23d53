"""One MQTT message from a device -> an `Inbound` for the store, or a `Quarantined` saying why not.

Pure: no broker, no store, no clock (the caller passes `received`), so the service and the tests call it
alike. Validation is the wire contract's own (`protocols.messages.decode_up`, SPEC.md), read through
`fleet.ingest.payload`, which gives the same result faster; telemetry is resolved against the arrival
time (SPEC.md "Times": below 2**28 a time is relative to receipt) by `fleet.ingest.readings`.
"""

from __future__ import annotations

from typing import Any

from fleet.ingest.payload import decode_up
from fleet.ingest.readings import resolve
from fleet.store.model import Inbound, Quarantined
from protocols.errors import ProtocolError
from protocols.topic import UP, parse

#: Reason of a message on a topic of another fleet (the subscription never delivers one; a pure check).
WRONG_FLEET = "wrong_fleet"
#: Reason of a message the decoder failed on in a way the contract has no code for (a decoder bug).
DECODER_ERROR = "decoder_error"


def decode(topic: str | bytes, payload: bytes, received: float, fleet: str) -> Inbound | Quarantined:
    """The message `payload` that arrived on `topic` at `received` (Unix seconds), for fleet `fleet`."""
    text = topic.decode("utf-8", "replace") if isinstance(topic, (bytes, bytearray)) else str(topic)
    payload = bytes(payload)
    try:
        parsed = parse(topic)
        if parsed.direction != UP:
            raise ProtocolError("bad_topic", "%r is a command topic, not a device's" % text)
        if parsed.fleet != fleet:
            return Quarantined(received, text, WRONG_FLEET, "fleet %r, this is %r" % (parsed.fleet, fleet), payload)
        message = decode_up(parsed.kind, payload)
        return _inbound(parsed.device, parsed.kind, message, received)
    except ProtocolError as error:
        return Quarantined(received, text, error.reason, error.detail or str(error), payload)
    except Exception as error:  # noqa: BLE001 - one bad message must never stop the others (issue 6)
        return Quarantined(received, text, DECODER_ERROR, "%s: %s" % (type(error).__name__, error), payload)


def _inbound(device: str, kind: str, message: Any, received: float) -> Inbound:
    inbound = Inbound(device, kind, message.boot, message.seq, received, message)
    if kind == "telemetry":
        resolve(device, message.boot, message.seq, message.pack, received, inbound.readings, inbound.ut)
    return inbound
