"""The board's network link: a per-board TCP gateway in the host that the VM's sockets go through.

The VM connects to the gateway (127.0.0.1:<port>, given to it in BOARDEMU_NET) and sends one line
naming the real target, `HOST PORT\\n`; only loopback targets are allowed. The gateway answers
`OK\\n` and relays bytes both ways, or `ERR <reason>\\n` and closes.

`set_up(False)` cuts the link as a lost cellular link does: connections that exist go silent (bytes
are swallowed in both directions, nobody sees a FIN or RST) and stay dead even after the link comes
back; new connections get no answer to their request line, so the VM's connect times out.
`set_up(True)` lets new connections through again.

When the VM dies (power cut, reset, WDT) its sockets close; a real board would not send a FIN, so
the gateway then keeps the far end open and silent (the broker finds out by its keepalive, and
sends the last will then, as with a real board). A socket the running VM closes is closed properly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import threading

_HEADER_MAX = 300
CONNECT_TIMEOUT_S = 5.0


def loopback_target(line: bytes) -> tuple[str, int]:
    """Parse `HOST PORT` and check HOST is a loopback address; ValueError with the reason."""
    try:
        host, port_s = line.decode("ascii").split()
        port = int(port_s)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("bad request line, expected 'HOST PORT'") from None
    if not 0 < port < 65536:
        raise ValueError("bad port %d" % port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ValueError("cannot resolve %s" % host) from None
    addrs = [info[4][0] for info in infos]
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise ValueError("refused: %s is not a loopback address (the emulator only reaches 127.0.0.1)" % host)
    return addrs[0], port


class Gateway:
    """The link of one board; `vm_gone` is an Event the Hardware sets when the VM died."""

    def __init__(self, vm_gone: threading.Event):
        self._vm_gone = vm_gone
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.up = True
        self.epoch = 0  # bumped at every cut: relays of an older epoch are dead
        self._socks: set = set()
        self._closed = False
        self.relayed = 0
        self.refused = 0
        self.swallowed = 0
        threading.Thread(target=self._accept_loop, name="boardemu-gw", daemon=True).start()

    def set_up(self, up: bool) -> None:
        with self._lock:
            if self.up and not up:
                self.epoch += 1
            self.up = bool(up)

    def _alive(self, epoch: int) -> bool:
        return self.up and epoch == self.epoch

    def _track(self, *socks) -> None:
        with self._lock:
            self._socks.update(socks)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                vm, _ = self._listener.accept()
            except OSError:
                return
            self._track(vm)
            threading.Thread(target=self._serve, args=(vm,), name="boardemu-gw-conn", daemon=True).start()

    def _read_header(self, vm) -> bytes | None:
        line = b""
        while not line.endswith(b"\n"):
            byte = vm.recv(1)
            if not byte or len(line) > _HEADER_MAX:
                return None
            line += byte
        return line.strip()

    def _serve(self, vm) -> None:
        far = None
        try:
            line = self._read_header(vm)
            epoch = self.epoch
            if line is None:
                return
            if not self.up:
                self._swallow(vm)  # no answer at all: the VM's connect times out
                return
            try:
                host, port = loopback_target(line)
                far = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
            except (ValueError, OSError) as exc:
                self.refused += 1
                reason = str(exc) if isinstance(exc, ValueError) else "connect failed: %s" % (exc.strerror or exc)
                vm.sendall(b"ERR " + reason.encode()[:200] + b"\n")
                return
            far.settimeout(None)
            self._track(far)
            vm.sendall(b"OK\n")
            self._relay(vm, far, epoch)
        except OSError:
            pass
        finally:
            for s in (vm, far):
                if s is not None:
                    self._close(s)

    def _relay(self, vm, far, epoch) -> None:
        peers = {vm: far, far: vm}
        while True:
            readable, _, _ = select.select([vm, far], [], [], 1.0)
            if self._closed:
                return
            for s in readable:
                data = s.recv(65536)
                if not data:
                    self._ended(s is vm, vm, far, epoch)
                    return
                if self._alive(epoch):
                    peers[s].sendall(data)
                    self.relayed += len(data)
                else:
                    self.swallowed += len(data)

    def _ended(self, by_vm: bool, vm, far, epoch) -> None:
        # Who hears about the close: nobody across a dead link, nobody when the VM died.
        if by_vm:
            if not self._alive(epoch) or self._vm_gone.wait(0.3):
                self._swallow(far)
        elif not self._alive(epoch):
            self._swallow(vm)

    def _swallow(self, sock) -> None:
        """Read and discard until the peer closes or the gateway shuts down."""
        while not self._closed:
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                data = sock.recv(65536)
                if not data:
                    return
                self.swallowed += len(data)

    def _close(self, sock) -> None:
        with self._lock:
            self._socks.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def status(self) -> dict:
        return {"up": self.up, "connections": len(self._socks), "relayed_bytes": self.relayed,
                "swallowed_bytes": self.swallowed, "refused": self.refused, "port": self.port}

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
