"""The board's serial port over the network: an RFC 2217 server on 127.0.0.1, like esp_rfc2217_server.

pyserial's `serial.rfc2217.PortManager` speaks the protocol; this module gives it a port object whose
DTR and RTS lines go to the board's reset logic (`on_lines(dtr, rts)`), so the pulses esptool and
IDEs send reach the devkit's auto-reset circuit. One client at a time, as with a serial port.
"""

from __future__ import annotations

import logging
import socket
import threading

import serial
from serial.rfc2217 import PortManager

log = logging.getLogger("boardemu.rfc2217")


class _Lines:
    """What PortManager drives: line settings (accepted, not enforced) and the modem lines."""

    def __init__(self, baud: int, on_lines):
        self.name = "boardemu"
        self.baudrate = baud
        self.bytesize = serial.EIGHTBITS
        self.parity = serial.PARITY_NONE
        self.stopbits = serial.STOPBITS_ONE
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = True
        self.ri = self.cd = False
        self._dtr = self._rts = False
        self._on_lines = on_lines

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value) -> None:
        self._dtr = bool(value)
        self._on_lines(self._dtr, self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value) -> None:
        self._rts = bool(value)
        self._on_lines(self._dtr, self._rts)

    def reset_input_buffer(self) -> None:
        """Nothing is buffered on the board side."""

    def reset_output_buffer(self) -> None:
        """Nothing is buffered on the board side."""


class Rfc2217Server:
    """Listens on 127.0.0.1:`port` (0: any free port; see `.port`)."""

    def __init__(self, port: int, baud: int, on_receive, on_lines):
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._baud = baud
        self._on_receive = on_receive
        self._on_lines = on_lines
        self._lock = threading.Lock()
        self._conn: socket.socket | None = None
        self._manager: PortManager | None = None
        self._closed = False
        threading.Thread(target=self._accept_loop, name="rfc2217-accept", daemon=True).start()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def write(self, data: bytes) -> None:
        """PortManager's `connection.write`: telnet replies to the client."""
        conn = self._conn
        if conn is None:
            return
        with self._lock:
            try:
                conn.sendall(data)
            except OSError:
                pass

    def send(self, data: bytes) -> None:
        """Board output to the client, escaped for telnet; lost when no client is connected."""
        manager = self._manager
        if manager is not None:
            self.write(b"".join(manager.escape(data)))

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._conn is not None:
                conn.close()  # the port is in use
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
            threading.Thread(target=self._serve, args=(conn,), name="rfc2217-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        lines = _Lines(self._baud, self._on_lines)
        self._manager = PortManager(lines, self)
        try:
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                received = b"".join(self._manager.filter(data))
                if received:
                    self._on_receive(received)
        except OSError:
            pass
        finally:
            self._manager = None
            self._conn = None
            conn.close()
            # The cable's lines drop with the connection (both released: the board runs).
            self._on_lines(False, False)

    def close(self) -> None:
        """Stop listening and drop the client."""
        self._closed = True
        self._listener.close()
        conn = self._conn
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
