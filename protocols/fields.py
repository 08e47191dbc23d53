"""Field checks shared by the message classes: one place that says what a uint32, a text or a number is.

MicroPython's `bool` is not an `int` subclass while CPython's is, so every check excludes bool explicitly
and behaves the same on both. Every rejection goes through `bad`: one format string, one raise, which is
cheaper on the node's heap than a message per check.
"""

from protocols.errors import ProtocolError
from protocols.limits import MAX_ITEMS, MAX_TEXT

#: Protocol revision this code speaks (key 0 of every map message, element 0 of the telemetry envelope).
VERSION = 1
UINT32_MAX = 0xFFFFFFFF
#: SenML rule (RFC 8428 §4.5.3), also used for event times: below this a time is relative to "now".
RELATIVE_LIMIT = 1 << 28


def bad(name: str, rule: str, value=(), reason: str = "bad_field"):
    """Raise ProtocolError(reason, "<name> must be <rule>[, not <value[0]!r>]")."""
    raise ProtocolError(reason, name + " must be " + rule + (", not %r" % value if value else ""))


def is_int(value) -> bool:
    """True for an int that is not a bool (same answer on CPython and MicroPython)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """True for an int or a finite float, never a bool."""
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return is_int(value)


def uint(value, name: str, top: int = UINT32_MAX) -> int:
    """Return `value` if it is an int in 0..top, else raise ProtocolError("bad_field")."""
    if not is_int(value) or value < 0 or value > top:
        bad(name, "an integer 0..%d" % top, (value,))
    return value


def number(value, name: str):
    """Return `value` if it is an int or a finite float."""
    if not is_number(value):
        bad(name, "a finite number", (value,))
    return value


def text(value, name: str, longest: int = MAX_TEXT) -> str:
    """Return `value` if it is a non-empty str of at most `longest` characters."""
    if not isinstance(value, str) or not value or len(value) > longest:
        bad(name, "text of 1..%d characters" % longest, (value,))
    return value


def flag(value, name: str) -> bool:
    """Return `value` if it is a bool."""
    if not isinstance(value, bool):
        bad(name, "true or false", (value,))
    return value


def choice(value, name: str, allowed) -> int:
    """Return `value` if it is an int among `allowed`."""
    if not is_int(value) or value not in allowed:
        bad(name, "one of %r" % (tuple(allowed),), (value,))
    return value


def texts(value, name: str) -> list:
    """Return `value` as a list if it is an array of at most MAX_ITEMS texts."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS:
        bad(name, "an array of at most %d texts" % MAX_ITEMS)
    return [text(item, name) for item in value]


def table(value, name: str, check) -> dict:
    """Return a dict text -> check(item) if `value` is a map of at most MAX_ITEMS entries with text keys."""
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        bad(name, "a map of at most %d entries" % MAX_ITEMS)
    out = {}
    for key, item in value.items():
        out[text(key, name + " key", 32)] = check(item, name + "[" + str(key) + "]")
    return out


def require(obj, key: int, name: str):
    """The value of integer key `key` of a decoded map; ProtocolError("missing_field") when absent."""
    if key not in obj:
        raise ProtocolError("missing_field", "%s (key %d) is required" % (name, key))
    return obj[key]


def as_map(obj, name: str) -> dict:
    """`obj` if it is a decoded CBOR map, else ProtocolError("bad_message")."""
    if not isinstance(obj, dict):
        bad(name, "a CBOR map", (), "bad_message")
    return obj


def version(obj) -> int:
    """The protocol revision (key 0). Any revision >= 1 is read: fields are only ever added (SPEC.md)."""
    value = require(obj, 0, "version")
    if not is_int(value) or value < 1:
        bad("protocol version", "an integer >= 1", (value,), "bad_version")
    return value


def put(out: dict, key: int, value) -> None:
    """Set `out[key]` unless `value` is None (optional fields are left out, never sent as null)."""
    if value is not None:
        out[key] = value
