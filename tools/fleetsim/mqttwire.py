"""MQTT 3.1.1 packets, the few a sensor node sends and reads (OASIS MQTT 3.1.1, section 3).

Pure bytes in, bytes out: CONNECT (clean session, will, username, password), PUBLISH (QoS 0/1, DUP,
RETAIN), PUBACK, SUBSCRIBE, PINGREQ, DISCONNECT, and `Reader`, which cuts a byte stream into packets.
The simulator writes these straight to a socket instead of running a full client per device: a
gmqtt client costs about 20 KB and a few tasks per connection, this about 3 KB (tools/fleetsim/__init__.py).
"""

from __future__ import annotations

import struct

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGRESP = 13

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_REMAINING = 268_435_455  # 3.1.1 section 2.2.3: four bytes of remaining length


class WireError(Exception):
    """A malformed packet from the broker."""


def varint(n: int) -> bytes:
    """The remaining-length encoding of `n` (section 2.2.3)."""
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError("remaining length %d out of range" % n)
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect(client_id: str, keepalive: int, username: str | None = None, password: str | None = None,
            will: tuple[str, bytes, int, bool] | None = None, clean: bool = True) -> bytes:
    """CONNECT (3.1): protocol level 4; `will` is (topic, payload, qos, retain)."""
    flags = 0x02 if clean else 0
    payload = _text(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += _text(topic) + _text(message)
    if username is not None:
        flags |= 0x80
        payload += _text(username)
        if password is not None:
            flags |= 0x40
            payload += _text(password)
    body = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return b"\x10" + varint(len(body)) + body


def publish(topic: bytes, payload: bytes, qos: int = 1, pid: int = 0, retain: bool = False,
            dup: bool = False) -> bytes:
    """PUBLISH (3.3); `pid` only for QoS 1."""
    first = 0x30 | qos << 1 | (0x08 if dup else 0) | (0x01 if retain else 0)
    head = struct.pack("!H", len(topic)) + topic
    if qos:
        head += struct.pack("!H", pid)
    return bytes([first]) + varint(len(head) + len(payload)) + head + payload


def puback(pid: int) -> bytes:
    """PUBACK (3.4)."""
    return b"\x40\x02" + struct.pack("!H", pid)


def subscribe(pid: int, topic: str, qos: int = 1) -> bytes:
    """SUBSCRIBE (3.8) to one filter."""
    body = struct.pack("!H", pid) + _text(topic) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


class Reader:
    """Cuts the bytes of a connection into packets: feed() returns [(type, flags, body), ...]."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """The packets completed by `data`; an incomplete tail is kept for the next call."""
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length = 0
            shift = 0
            i = pos + 1
            while True:
                if i >= end:
                    self._buf = buf[pos:]
                    return out
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise WireError("remaining length longer than four bytes")
            if i + length > end:
                break
            out.append((first >> 4, first & 0x0F, buf[i:i + length]))
            pos = i + length
        self._buf = buf[pos:]
        return out


def parse_publish(flags: int, body: bytes) -> tuple[str, bytes, int, int]:
    """(topic, payload, qos, pid) of a PUBLISH body; pid 0 for QoS 0."""
    if len(body) < 2:
        raise WireError("short PUBLISH")
    n = struct.unpack_from("!H", body)[0]
    qos = (flags >> 1) & 3
    pos = 2 + n
    pid = 0
    if qos:
        if len(body) < pos + 2:
            raise WireError("short PUBLISH")
        pid = struct.unpack_from("!H", body, pos)[0]
        pos += 2
    try:
        topic = body[2:2 + n].decode()
    except UnicodeDecodeError:
        raise WireError("topic is not UTF-8") from None
    return topic, body[pos:], qos, pid
