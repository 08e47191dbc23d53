"""Size limits of the wire contract (SPEC.md "Limits"), enforced by senders and receivers alike.

Why these numbers: the node has about 110 KB of heap (ESP32 without PSRAM). The MQTT client reads a whole
PUBLISH into one buffer that the agent allocates once at start-up; 1 KiB plus topic and header keeps that
buffer small enough to be found in a fragmented heap and leaves room for the outbox. The largest message
we define (a config document with a few alarms) is a few hundred bytes, telemetry packs tens of bytes.
"""

from protocols.errors import ProtocolError

#: Largest MQTT payload (bytes) either side sends or accepts.
MAX_PAYLOAD = 1024
#: Deepest nesting of arrays/maps in a payload (the top-level container counts as 1). Telemetry needs 3
#: (envelope, pack, record), config needs 3 (document, alarms, one alarm); one level spare.
MAX_DEPTH = 4
#: Most SenML records in one pack (a backfill is split into several packs beyond this).
MAX_RECORDS = 64
#: Longest text field (names, reasons, versions, URLs) in characters.
MAX_TEXT = 200
#: Most entries in any array or map inside a message other than a SenML pack.
MAX_ITEMS = 32
#: Longest topic (bytes); see protocols.topic for the parts.
MAX_TOPIC = 64


def check_size(data) -> None:
    """Reject a payload larger than MAX_PAYLOAD (before decoding, after encoding)."""
    if len(data) > MAX_PAYLOAD:
        raise ProtocolError("too_large", "payload of %d bytes exceeds %d" % (len(data), MAX_PAYLOAD))


def check_depth(obj, limit: int = MAX_DEPTH) -> None:
    """Reject a decoded value nested deeper than `limit` containers (iterative: no recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple)):
            children = item
        elif isinstance(item, dict):
            children = list(item.keys()) + list(item.values())
        else:
            continue
        if depth > limit:
            raise ProtocolError("too_deep", "nesting deeper than %d" % limit)
        for child in children:
            stack.append((child, depth + 1))
