"""MQTT 3.1.1 packets: encode into preallocated buffers, decode what the broker sends, strictly.

Pure functions, no I/O. Encoders write into a caller's bytearray and return the number of bytes used,
so the client sends from one buffer allocated at start-up. Decoders read a packet body in place and
return offsets into it rather than copies. Everything arriving from the wire is checked against the
spec (section numbers below refer to MQTT 3.1.1, OASIS standard 2014); a violation raises
`MQTTProtocolError`. Bad arguments from our own callers raise `MQTTError`.

Only the client's side is covered: QoS 0 and 1 (no QoS 2 flow), one topic per SUBSCRIBE (no UNSUBSCRIBE: the agent never needs one).
"""

try:
    from micropython import const
except ImportError:  # CPython, for the unit tests: every const here is an int
    const = int


from agent.errors import AgentError

# Control packet types with their fixed flags (2.2.1, 2.2.2).
CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)  # 3.8.1: flags must be 0010
SUBACK = const(0x90)
UNSUBACK = const(0xB0)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)

MAX_REMAINING = const(268435455)  # 2.2.3: four bytes of 7 bits
SUBACK_FAILURE = const(0x80)  # 3.9.3

# CONNACK return codes (3.2.2.3), index = code.
CONNACK_REASONS = (
    "accepted",
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)
REFUSED_BAD_CREDENTIALS = const(4)
REFUSED_NOT_AUTHORIZED = const(5)
# MQTTError.code for the client's own failures, after the CONNACK codes.
TIMEOUT = const(6)  # the broker did not answer in time
LOST = const(7)  # the connection is closed or dead; nothing more goes out on it
WINDOW_FULL = const(8)  # every QoS 1 in-flight slot is taken: wait for an ack and publish again


class MQTTError(AgentError):
    """Base of the MQTT client's errors. `code`: a CONNACK refusal (1..5, 3.2.2.3), TIMEOUT, LOST,
    WINDOW_FULL, or 0 (a bad argument from our own caller)."""

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


class MQTTProtocolError(MQTTError):
    """The peer sent something MQTT 3.1.1 does not allow; the connection must be closed (4.8)."""


def _bytes(s):
    # Strings go out as UTF-8 (1.5.3); bytes are taken as they are so the hot path need not encode.
    return s.encode() if isinstance(s, str) else s


def encode_varint(buf, off, n):
    """Write remaining length `n` (2.2.3) at `off`; return the offset after it."""
    if n < 0 or n > MAX_REMAINING:
        raise MQTTError("remaining length %d out of range 0..%d" % (n, MAX_REMAINING))
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[off] = b | 0x80
            off += 1
        else:
            buf[off] = b
            return off + 1


def decode_varint(buf, off, end):
    """Read a remaining length at `off`; return (value, offset after it), or None if more bytes are needed."""
    value = 0
    shift = 0
    while off < end:
        b = buf[off]
        off += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, off
        shift += 7
        if shift >= 28:  # 2.2.3: at most four bytes
            raise MQTTProtocolError("remaining length longer than 4 bytes")
    return None


def _put(buf, off, v, low=1):
    # An int as a u16 (1.5.2) in low..65535: a packet identifier is never 0 (2.3.1), a keepalive or a
    # string length may be. Bytes or str as a string with its u16 length prefix (1.5.3).
    if not isinstance(v, int):
        v = _bytes(v)
        n = len(v)
        off = _put(buf, off, n, 0)
        buf[off : off + n] = v
        return off + n
    if not low <= v <= 0xFFFF:
        raise MQTTError("%r not in %d..65535 (packet id, keepalive or string length)" % (v, low))
    buf[off] = v >> 8
    buf[off + 1] = v & 0xFF
    return off + 2


def _header(buf, first, remaining, in_buf=-1):
    # Fixed header (2.2); the caller knows the body size up front, so the body follows directly.
    # `in_buf`: how much of the body goes into `buf` (all of it unless the payload is sent apart).
    size = 2 + (remaining > 127) + (remaining > 16383) + (remaining > 2097151)
    size += remaining if in_buf < 0 else in_buf
    if size > len(buf):
        raise MQTTError("packet of %d bytes does not fit the %d-byte buffer" % (size, len(buf)))
    buf[0] = first
    return encode_varint(buf, 1, remaining)


def _check_topic_name(topic):
    # 4.7.1: wildcards are for filters only; 4.7.3: at least one character.
    t = _bytes(topic)
    if not t or b"+" in t or b"#" in t or b"\x00" in t:
        raise MQTTError("invalid topic name %r" % (topic,))
    return t


def connect(buf, client_id, keepalive, clean_session=True, will=None, user=None, password=None):
    """CONNECT (3.1). `will` is None or (topic, payload, qos, retain). Return the packet length."""
    if password is not None and user is None:
        raise MQTTError("a password needs a user name (3.1.2.9)")
    flags = 0x02 if clean_session else 0
    fields = [client_id]  # the payload's strings, in the order of 3.1.3
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        _check_topic_name(wtopic)
        if wqos not in (0, 1):
            raise MQTTError("will qos %r not supported" % (wqos,))
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        fields += (wtopic, wpayload)
    if user is not None:
        flags |= 0x80
        fields.append(user)
    if password is not None:
        flags |= 0x40
        fields.append(password)
    n = 10
    for f in fields:
        n += 2 + len(_bytes(f))
    off = _header(buf, CONNECT, n)
    off = _put(buf, off, b"MQTT")
    buf[off] = 4  # 3.1.2.2: protocol level of 3.1.1
    buf[off + 1] = flags
    off = _put(buf, off + 2, keepalive, 0)
    for f in fields:
        off = _put(buf, off, f)
    return off


def publish_header(buf, topic, payload_len, qos=0, retain=False, dup=False, pid=0):
    """PUBLISH (3.3) up to the payload, which the caller sends (or copies) after it; return its length."""
    t = _check_topic_name(topic)
    if qos not in (0, 1) or dup and not qos:  # 3.3.1.1: DUP must be 0 for QoS 0
        raise MQTTError("qos %r with dup %r not supported" % (qos, dup))
    first = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    head = 2 + len(t) + (2 if qos else 0)
    off = _header(buf, first, head + payload_len, head)
    off = _put(buf, off, t)
    if qos:
        off = _put(buf, off, pid)
    return off


def short_packet(buf, first, pid=0):
    """PUBACK (3.4) for `pid`, or PINGREQ (3.12) / DISCONNECT (3.14) without one; return the length."""
    buf[0] = first
    if first != PUBACK:
        buf[1] = 0
        return 2
    buf[1] = 2
    return _put(buf, 2, pid)


def subscribe(buf, pid, topic_filter, qos=0):
    """SUBSCRIBE (3.8) to one topic filter; return the packet length."""
    f = _bytes(topic_filter)
    if not f or qos not in (0, 1):
        raise MQTTError("invalid subscription %r qos %r" % (topic_filter, qos))
    off = _header(buf, SUBSCRIBE, 2 + 2 + len(f) + 1)
    off = _put(buf, off, pid)
    off = _put(buf, off, f)
    buf[off] = qos
    return off + 1


def check_header(first, remaining):
    """Validate the fixed header of a packet from the server (2.2.2); return its type (high nibble)."""
    kind = first & 0xF0
    if kind == PUBLISH:
        qos = (first >> 1) & 3
        if qos == 3:  # 3.3.1.2
            raise MQTTProtocolError("PUBLISH with QoS 3")
        if remaining < (4 if qos else 2):
            raise MQTTProtocolError("PUBLISH too short (%d bytes)" % remaining)
        return kind
    if first not in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP):
        raise MQTTProtocolError("unexpected packet 0x%02x from the server" % first)
    if first == SUBACK:
        if remaining < 3:
            raise MQTTProtocolError("SUBACK too short (%d bytes)" % remaining)
    elif remaining != (0 if first == PINGRESP else 2):
        raise MQTTProtocolError("packet 0x%02x with remaining length %d" % (first, remaining))
    return kind


def decode_connack(buf, off=0):
    """CONNACK body (3.2) at `off` -> (session_present, return_code); a code other than 0 is a refusal."""
    flags = buf[off]
    code = buf[off + 1]
    if flags & 0xFE:  # 3.2.2.1: bits 7-1 reserved
        raise MQTTProtocolError("CONNACK flags 0x%02x" % flags)
    if code >= len(CONNACK_REASONS):
        raise MQTTProtocolError("CONNACK return code %d reserved" % code)
    if code and flags:  # 3.2.2.2
        raise MQTTProtocolError("CONNACK refusal with session present")
    return bool(flags), code


def decode_ack(buf, off=0):
    """PUBACK or UNSUBACK body (3.4, 3.11), or any packet identifier, at `off` -> the identifier."""
    pid = (buf[off] << 8) | buf[off + 1]
    if not pid:  # 2.3.1
        raise MQTTProtocolError("packet identifier 0")
    return pid


def decode_suback(buf, off, length):
    """SUBACK body (3.9) of `length` bytes at `off` -> (pid, return code of the first filter)."""
    pid = decode_ack(buf, off)
    for i in range(off + 2, off + length):
        if buf[i] not in (0, 1, 2, SUBACK_FAILURE):  # 3.9.3
            raise MQTTProtocolError("SUBACK return code 0x%02x" % buf[i])
    return pid, buf[off + 2]


def decode_publish(first, buf, off, length):
    """PUBLISH body (3.3) of `length` bytes at `off` -> (topic_end, pid, payload_start), offsets in `buf`.

    The topic is buf[off + 2:topic_end], the payload buf[payload_start:off + length]; pid is 0 for QoS 0.
    """
    tlen = (buf[off] << 8) | buf[off + 1]
    end = off + 2 + tlen
    qos = (first >> 1) & 3
    if tlen == 0 or end + (2 if qos else 0) > off + length:
        raise MQTTProtocolError("PUBLISH topic length %d in a %d-byte body" % (tlen, length))
    for i in range(off + 2, end):
        c = buf[i]
        if c == 0x23 or c == 0x2B or c == 0:  # '#', '+' (3.3.2.1), U+0000 (1.5.3)
            raise MQTTProtocolError("PUBLISH topic with a wildcard or NUL")
    if not qos:
        if first & 0x08:  # 3.3.1.1
            raise MQTTProtocolError("DUP set on a QoS 0 PUBLISH")
        return end, 0, end
    return end, decode_ack(buf, end), end + 2
