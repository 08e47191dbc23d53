"""CBOR decoder (RFC 8949), the reading half of `protocols.cbor`; runs on MicroPython 1.29 and CPython.

`loads(data)` reads one item. It accepts non-preferred (longer) heads and floats, and indefinite-length
strings, arrays and maps (RFC 8949 §3.2.2-3), which the encoder never emits. Every tag decodes as
`Tag(number, content)`, tag 1 (epoch time) too, whose content must be a number; bignums (tags 2/3) stay
`Tag(2, b"...")`. Simple values other than false/true/null (undefined, simple(0..19), simple(32..255)) are
rejected. Nesting is limited to `max_depth` containers (arrays, maps and tags each count 1; the top-level
container is depth 1).

Hostile input raises `CBORDecodeError` (a ValueError) naming the problem and its byte offset; a length is
checked against the bytes that remain before anything is allocated (an array of n items needs at least n
bytes, a map 2n), and the depth limit bounds recursion. MicroPython's str() accepts overlong UTF-8 and
surrogates, so there text with non-ASCII bytes is validated here (RFC 3629). On ESP32 (single-precision
floats) a received double is rounded to single precision.

Apart from the encoder because the node decodes only commands, which are rare: it imports this module
for a command and drops it afterwards (agent/transient.py). `Tag` lives here too: only the fleet and
tests write tags, and the encoder imports it only when it meets a value it does not know.
"""

import struct

from protocols.cbor import MAX_DEPTH, CBOREncodeError, CBORError
from protocols.cbor_lite import half_to_float


class CBORDecodeError(CBORError):
    """Malformed, unsupported or hostile input; `offset` is the byte where the problem was found."""

    def __init__(self, what, offset, reason="bad_cbor"):
        self.offset = offset
        super().__init__(reason, "%s at byte %d" % (what, offset))


class Tag:
    """A tagged item (RFC 8949 §3.4): tag number `tag` and its content `value`."""

    def __init__(self, tag, value):
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag < 0x10000000000000000:
            raise CBOREncodeError("tag number %r (must be an int in 0..2**64-1)" % (tag,))
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


def loads(data, max_depth=MAX_DEPTH):
    """The value of the one CBOR item in `data` (bytes-like); CBORDecodeError for anything else."""
    decoder = _Decoder(data, max_depth)
    value = decoder.item(0)
    if decoder.pos != len(decoder.data):
        raise CBORDecodeError("trailing bytes after the item", decoder.pos)
    return value


class _Decoder:
    def __init__(self, data, max_depth):
        self.data = memoryview(data)
        self.pos = 0
        self.max_depth = max_depth

    def need(self, n, what):
        # Every length is checked against what remains before it is used to allocate or loop.
        if n > len(self.data) - self.pos:
            raise CBORDecodeError("truncated input: %s: %d bytes needed, %d left"
                                  % (what, n, len(self.data) - self.pos), self.pos)

    def head(self):
        """(major type, additional info, argument or None for indefinite, offset of the head)."""
        start = self.pos
        self.need(1, "the head")
        ib = self.data[start]
        self.pos = start + 1
        ai = ib & 31
        return ib >> 5, ai, ai if ai < 24 else self.argument(ib >> 5, ai, start), start

    def argument(self, major, ai, start):
        # The argument of a head whose additional information is 24..31 (RFC 8949 §3).
        if ai == 31:
            if major in (0, 1, 6):
                raise CBORDecodeError("indefinite length not allowed for major type %d" % major, start)
            return None
        if ai > 27:
            raise CBORDecodeError("reserved additional information %d" % ai, start)
        size = 1 << (ai - 24)
        self.need(size, "the argument")
        arg = struct.unpack_from(_ARG_FORMATS[ai - 24], self.data, self.pos)[0]
        self.pos += size
        return arg

    def item(self, depth):
        # head() inlined: this runs once per data item, and a call plus a tuple cost on MicroPython.
        start = self.pos
        data = self.data
        if start >= len(data):
            self.need(1, "the head")
        ib = data[start]
        self.pos = start + 1
        major = ib >> 5
        ai = ib & 31
        arg = ai if ai < 24 else self.argument(major, ai, start)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2 or major == 3:
            return self.string(major, arg, start)
        if major == 7:
            return self.simple(ai, arg, start)
        if depth >= self.max_depth:
            raise CBORDecodeError("nesting deeper than %d" % self.max_depth, start, "too_deep")
        if major == 4:
            return self.array(arg, depth + 1)
        if major == 5:
            return self.map(arg, depth + 1)
        value = self.item(depth + 1)
        if arg == 1 and (value is True or value is False or not isinstance(value, (int, float))):
            raise CBORDecodeError("tag 1 (epoch time) content is not a number", start)
        return Tag(arg, value)

    def at_break(self):
        self.need(1, "items or a break")
        if self.data[self.pos] == 0xFF:
            self.pos += 1
            return True
        return False

    def array(self, count, depth):
        items = []
        if count is None:
            while not self.at_break():
                items.append(self.item(depth))
        else:
            self.need(count, "array items")
            for _ in range(count):
                items.append(self.item(depth))
        return items

    def map(self, count, depth):
        result: dict = {}
        if count is None:
            while not self.at_break():
                self.pair(result, depth)
        else:
            self.need(2 * count, "map pairs")
            for _ in range(count):
                self.pair(result, depth)
        return result

    def pair(self, result, depth):
        # A break where the value belongs fails in item() like any misplaced break.
        at = self.pos
        key = self.item(depth)
        if key is True or key is False or not isinstance(key, (int, str)):
            raise CBORDecodeError("map key is not an int or text", at)
        if key in result:
            raise CBORDecodeError("duplicate map key %r" % (key,), at)
        result[key] = self.item(depth)

    def string(self, major, length, start):
        if length is not None:
            return self.chunk(major, length, self.pos)
        parts = []  # indefinite length (RFC 8949 §3.2.3): definite chunks of the same major type
        while not self.at_break():
            chunk_major, _, chunk_length, at = self.head()
            if chunk_major != major or chunk_length is None:
                raise CBORDecodeError("indefinite-length string chunk is not a definite string of its type", at)
            parts.append(self.chunk(major, chunk_length, self.pos))
        return (b"" if major == 2 else "").join(parts)

    def chunk(self, major, length, at):
        self.need(length, "string bytes")
        raw = self.data[at:at + length]
        self.pos = at + length
        if major == 2:
            return bytes(raw)
        try:
            text = str(raw, "utf-8")
        except UnicodeError:
            text = None
        # The strict check runs only on errors and, where str() is lax, on text with non-ASCII bytes.
        if text is None or (_LAX_UTF8 and len(text) != length):
            bad = _utf8_error(raw)
            if text is None or bad >= 0:
                raise CBORDecodeError("invalid UTF-8 in text string", at + max(bad, 0))
        return text

    def simple(self, ai, arg, start):
        if ai == 25:
            return half_to_float(arg)
        if ai == 26:
            return struct.unpack_from(">f", self.data, start + 1)[0]
        if ai == 27:
            return struct.unpack_from(">d", self.data, start + 1)[0]
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 31:
            raise CBORDecodeError("break code outside an indefinite-length item", start)
        # undefined, simple(0..19) and the two-byte simple values (f8xx) are outside the subset
        raise CBORDecodeError("unsupported simple value %d" % arg, start)


_ARG_FORMATS = (">B", ">H", ">I", ">Q")


def _utf8_error(raw):
    """Offset of the first byte that breaks strict UTF-8 (RFC 3629: no overlongs, no surrogates), or -1."""
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            count, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            count = 2
            low = 0xA0 if b == 0xE0 else 0x80
            high = 0x9F if b == 0xED else 0xBF
        elif 0xF0 <= b <= 0xF4:
            count = 3
            low = 0x90 if b == 0xF0 else 0x80
            high = 0x8F if b == 0xF4 else 0xBF
        else:
            return i
        if i + count >= n:
            return i
        if not low <= raw[i + 1] <= high:
            return i
        for k in range(2, count + 1):
            if not 0x80 <= raw[i + k] <= 0xBF:
                return i
        i += count + 1
    return -1


try:
    str(b"\xc0\xaf", "utf-8")  # an overlong "/": a strict decoder refuses it
    _LAX_UTF8 = True
except UnicodeError:
    _LAX_UTF8 = False
