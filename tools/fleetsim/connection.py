"""One simulated device's TCP connection to the broker: an asyncio Protocol, no task of its own.

It writes the CONNECT when the socket is up and hands every packet it reads to its device: CONNACK,
PUBACK, commands (PUBLISH, acknowledged at once as the agent's client does), and the end of the
connection. Callbacks, not a reader task per connection, keep ten thousand connections cheap.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from tools.fleetsim import mqttwire as wire


class Connection(asyncio.Protocol):
    """The socket of `device` (a tools.fleetsim.device.SimDevice)."""

    __slots__ = ("device", "transport", "reader", "connect_packet", "connack")

    def __init__(self, device: Any, connect_packet: bytes, connack: asyncio.Future[int]) -> None:
        self.device = device
        self.transport: asyncio.Transport | None = None
        self.reader = wire.Reader()
        self.connect_packet = connect_packet
        self.connack = connack  # set to the CONNACK return code

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.connect_packet)  # type: ignore[attr-defined]

    def write(self, data: bytes) -> None:
        """Send bytes (nothing once the connection is closing)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.reader.feed(data)
        except wire.WireError:
            self.abort()
            return
        device = self.device
        for kind, flags, body in packets:
            if self.transport is None or self.transport.is_closing():
                return  # cut while handling this read: the rest is lost with the link
            if kind == wire.PUBACK:
                device.on_puback(struct.unpack_from("!H", body)[0])
            elif kind == wire.PUBLISH:
                try:
                    topic, payload, qos, pid = wire.parse_publish(flags, body)
                except wire.WireError:
                    self.abort()
                    return
                if qos:
                    self.write(wire.puback(pid))
                device.on_command(topic, payload)
            elif kind == wire.CONNACK:
                if not self.connack.done():
                    self.connack.set_result(body[1] if len(body) == 2 else 255)
            # SUBACK, PINGRESP: nothing to do

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_result(-1)
        self.transport = None
        self.device.on_lost(self)

    def abort(self) -> None:
        """Cut the connection without DISCONNECT: the broker publishes the will."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """DISCONNECT and close: the broker drops the will."""
        if self.transport is not None:
            self.write(wire.DISCONNECT_PACKET)
            self.transport.close()
