"""The node's encoders of its messages (SPEC.md): one function per up message, CBOR bytes out.

Two modules hold them. This one has what the node sends all the time, telemetry and event, and the checks
and encoding every message shares; it stays resident. The messages sent now and then (state: birth and
will, health, ack, ota_progress, pull) are in protocols.up_status, which the node loads for each message
and drops afterwards (agent/transient.py), so their code does not stay on its heap. up_status imports the
helpers here; this module never imports it.

Each returns exactly the bytes `messages.encode(<Class>(...))` gives for the same arguments (Telemetry,
Event, State, Health, Ack, OtaProgress, Pull; tests/test_protocols_up*.py prove it on CPython and in the
VM), without the message classes: those check everything a fleet may read and are too big for the node's
heap. Here the values come from the agent's own code, so only what the wire needs is checked: the CBOR
type of each field and its range (SPEC.md tables). A bad value raises ProtocolError("bad_field", "key
<n>: <value>"), a payload over SPEC.md's 1024 bytes ProtocolError("too_large"). Nesting is bounded by the
encoder's depth limit (SPEC.md's 4; an ack's result 2 inside it), where a tag would count as a level: no
node message has one.

Keys and limits are literals (SPEC.md is their source): one name each would cost the node's heap.
"""

from protocols.cbor import dumps
from protocols.errors import ProtocolError


def _bad(key, value):
    raise ProtocolError("bad_field", "key %d: %r" % (key, value))


def _int(key, value, low=0, high=0xFFFFFFFF):
    # An int in low..high, never a bool (an int on CPython, not on MicroPython).
    if not isinstance(value, int) or value is True or value is False or not low <= value <= high:
        _bad(key, value)
    return value


def _text(key, value, longest=200):
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        _bad(key, value)
    return value


def _number(key, value):
    # an int or a finite float: value - value is 0 for those only (inf - inf and nan - nan are nan)
    if isinstance(value, float) and value - value == 0 or isinstance(value, int) and value is not True \
            and value is not False:
        return value
    _bad(key, value)


def _encode(obj, boot, seq, depth=4):
    # The common keys 0 version, 1 boot id, 2 seq (SPEC.md "Common fields"), then the size limit.
    obj[0] = 1
    obj[1] = _int(1, boot)
    obj[2] = _int(2, seq)
    data = dumps(obj, depth)
    if len(data) > 1024:  # protocols.limits.MAX_PAYLOAD
        raise ProtocolError("too_large", "payload of %d bytes" % len(data))
    return data


def telemetry(boot, seq, pack):
    """`[1, boot, seq] + pack`: a SenML pack (senml_pack.PackBuilder.pack()) behind the header."""
    if not isinstance(pack, list) or not pack:
        raise ProtocolError("senml_pack", "a SenML pack is a non-empty array of records")
    return _encode([0, 0, 0] + pack, boot, seq)


def event(boot, seq, name, state, level, value, threshold, since):
    """Alarm `name` went to `state` (1 raised, 0 cleared) at `level` (1 warning, 2 alarm); `value` confirmed
    it, `threshold` was crossed, `since` is when the condition began (SenML time rule)."""
    return _encode({3: _text(3, name, 32), 4: _int(4, state, 0, 1), 5: _int(5, level, 1, 2),
                    6: _number(6, value), 7: _number(7, threshold), 8: _number(8, since)}, boot, seq)
