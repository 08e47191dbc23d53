"""The hub: the TCP server in the host process that the VM's `machine` module talks to.

Wire format (loopback TCP, one VM connection at a time; a new connection replaces the old one):
VM -> hub  `op:u8 len:u8 payload[len]`; hub -> VM `kind:u8 len:u8 payload[len]`, kind b"R" is the
response to the request in flight (payload = status errno:u8, then data), kind b"E" an IRQ event
(payload = pin:u8 flags:u8) that may arrive at any time, also between a request and its response.
Requests whose op is in `ONE_WAY` get no response (pin writes, UART writes, WDT feeds...), so a
bit-banged clock costs one send, not a round trip. Op letters and payloads: see busops.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading

RESPONSE, EVENT = 0x52, 0x45  # b"R", b"E"


class HubServer:
    """Listens on 127.0.0.1:<free port>; `handle(op, payload) -> bytes | None` answers requests."""

    def __init__(self, handle, on_connect=None, on_disconnect=None):
        self._handle = handle
        self._on_connect = on_connect or (lambda: None)
        self._on_disconnect = on_disconnect or (lambda: None)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conn = None
        self._send_lock = threading.Lock()
        self._closed = False
        self.requests = 0
        self.events_sent = 0
        self.events_dropped = 0
        self._thread = threading.Thread(target=self._accept_loop, name="boardemu-hub", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(None)
            self.drop()
            with self._send_lock:
                self._conn = conn
            self._on_connect()
            threading.Thread(target=self._serve, args=(conn,), name="boardemu-hub-conn", daemon=True).start()

    def _recv_exact(self, conn, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self, conn) -> None:
        try:
            while True:
                head = self._recv_exact(conn, 2)
                if head is None:
                    break
                payload = self._recv_exact(conn, head[1]) if head[1] else b""
                if payload is None:
                    break
                self.requests += 1
                answer = self._handle(head[0], payload)
                if answer is not None:
                    self._send(conn, RESPONSE, answer)
        except OSError:
            pass
        finally:
            with self._send_lock:
                mine = self._conn is conn
                if mine:
                    self._conn = None
            with contextlib.suppress(OSError):
                conn.close()
            if mine:
                self._on_disconnect()

    def _send(self, conn, kind: int, payload: bytes) -> None:
        with self._send_lock:
            conn.sendall(bytes((kind, len(payload))) + payload)

    def send_event(self, pin: int, flags: int) -> None:
        """Queue an IRQ event to the VM; dropped (and counted) when no VM is connected or it is stuck."""
        with self._send_lock:
            conn = self._conn
            if conn is None:
                self.events_dropped += 1
                return
            try:
                sent = conn.send(bytes((EVENT, 2, pin, flags)), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return
            if sent == 4:
                self.events_sent += 1
            elif sent == 0:
                self.events_dropped += 1
            else:  # a torn frame would desynchronise the stream: finish it
                conn.sendall(bytes((EVENT, 2, pin, flags))[sent:])
                self.events_sent += 1

    def drop(self) -> None:
        """Close the VM's connection (it died or was killed)."""
        with self._send_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop()
