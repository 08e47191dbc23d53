"""The JSON form of CBOR test vectors (protocols/vectors/README.md) <-> Python values.

Runs under CPython and under MicroPython (tests/test_vectors.py and tests/test_protocols_up_vm.py load it
inside the VM), so it uses only what both have: no typing at runtime, no f-strings with `=`, binascii
instead of bytes.hex(). `check_up_vector` runs a device message vector through the node's encoders.
"""

import binascii
import struct

from protocols.cbor import Tag, dumps, loads

#: Integers beyond this magnitude are written as {"$int": "..."}: JSON readers in other languages lose them.
SAFE_INT = 2**53 - 1


class VectorFormError(ValueError):
    """A vector file that does not follow protocols/vectors/README.md."""


def from_json(node):
    """The Python value that the JSON form `node` stands for."""
    if isinstance(node, dict):
        if len(node) == 1:
            for key in node:
                if key.startswith("$"):
                    return _special(key, node[key])
        return {key: from_json(node[key]) for key in node}
    if isinstance(node, list):
        return [from_json(item) for item in node]
    return node


def _special(kind, arg):
    if kind == "$bytes":
        return binascii.unhexlify(arg)
    if kind == "$map":
        result = {}
        for pair in arg:
            if not isinstance(pair, list) or len(pair) != 2:
                raise VectorFormError("$map entries are [key, value] pairs, got {!r}".format(pair))
            key = from_json(pair[0])
            if key in result:
                raise VectorFormError("duplicate key {!r} in $map".format(key))
            result[key] = from_json(pair[1])
        return result
    if kind == "$tag":
        if not isinstance(arg, list) or len(arg) != 2:
            raise VectorFormError("$tag takes [number, value], got {!r}".format(arg))
        return Tag(from_json(arg[0]), from_json(arg[1]))
    if kind == "$float":
        return _float(arg)
    if kind == "$int":
        return int(arg)
    raise VectorFormError("unknown special form {}".format(kind))


def _float(text):
    if text == "NaN":
        return float("nan")
    if text == "Infinity":
        return float("inf")
    if text == "-Infinity":
        return float("-inf")
    return float(text)


def to_json(value):
    """The JSON form of `value` (inverse of `from_json`); int-keyed maps list pairs in encoded-key order."""
    if value is None or value is True or value is False or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -SAFE_INT <= value <= SAFE_INT else {"$int": str(value)}
    if isinstance(value, float):
        if value != value:
            return {"$float": "NaN"}
        if value in (float("inf"), float("-inf")):
            return {"$float": "Infinity" if value > 0 else "-Infinity"}
        if value == 0 and _negative(value):
            return {"$float": "-0.0"}
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": binascii.hexlify(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, Tag):
        return {"$tag": [to_json(value.tag), to_json(value.value)]}
    if isinstance(value, dict):
        plain = True
        for key in value:
            if not isinstance(key, str) or key.startswith("$"):
                plain = False
        if plain:
            return {key: to_json(value[key]) for key in value}
        keys = sorted(value, key=dumps)
        return {"$map": [[to_json(key), to_json(value[key])] for key in keys]}
    raise VectorFormError("no JSON form for {!r}".format(value))


def _negative(x):
    return struct.pack(">d", x)[0] & 0x80 != 0


def same(a, b):
    """Strict equality for vectors: types must match, NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if a != a:
            return b != b
        return a == b and _negative(a) == _negative(b)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return False
        for i in range(len(a)):
            if not same(a[i], b[i]):
                return False
        return True
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for key in a:
            if key not in b or not same(a[key], b[key]):
                return False
        return True
    if isinstance(a, Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


def check_vector(vector):
    """Run one vector (an entry of a file's "vectors" list) through protocols.cbor: None, or what failed."""
    data = binascii.unhexlify(vector["hex"])
    if "error" in vector:
        try:
            got = loads(data)
        except ValueError as error:
            if vector["error"] not in str(error):
                return "error {!r} does not mention {!r}".format(str(error), vector["error"])
            return None
        return "decoded to {!r} instead of failing".format(got)
    value = from_json(vector["value"])
    if not vector.get("decode_only"):
        encoded = binascii.hexlify(dumps(value)).decode()
        if encoded != vector["hex"]:
            return "encodes as {}".format(encoded)
    try:
        decoded = loads(data)
    except ValueError as error:
        return "decode failed: {}".format(error)
    if not same(decoded, value):
        return "decodes as {!r}".format(decoded)
    return None


#: Keys of the optional arguments of each encoder after (boot, seq), in argument order.
_UP_KEYS = {"event": range(3, 9), "state": range(3, 8), "health": range(3, 15), "ack": range(3, 8),
            "ota": range(3, 8), "pull": range(3, 7)}
#: The encoder of a topic type, where it is not named as the type.
_UP_NAMES = {"ota": "ota_progress"}
#: The encoders protocols.up holds (the node keeps them resident); the others are protocols.up_status's.
_RESIDENT = ("telemetry", "event")


def up_call(vector):
    """(encoder name, its arguments) that should give the bytes of a message vector, or None when the node
    has no encoder for it (commands)."""
    parts = vector["topic"].split("/")
    kind = parts[3]
    if parts[0] != "dt":
        return None
    value = from_json(vector["value"])
    if kind == "telemetry":
        return kind, [value[1], value[2], value[3:]]
    return _UP_NAMES.get(kind, kind), [value[1], value[2]] + [value.get(key) for key in _UP_KEYS[kind]]


def check_up_vector(vector):
    """Run one device message vector (protocols/vectors/messages.json) through the node's encoder of it
    (protocols.up or up_status): None, or what failed."""
    from protocols import up, up_status

    call = up_call(vector)
    if call is None:
        return None
    try:
        encode = getattr(up if call[0] in _RESIDENT else up_status, call[0])
        encoded = binascii.hexlify(encode(*call[1])).decode()
    except ValueError as error:
        return "raised {}".format(error)
    if encoded != vector["hex"]:
        return "encodes as {}".format(encoded)
    return None
