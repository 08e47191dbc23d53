"""A02YYUW-style ultrasonic distance sensor (DFRobot SEN0311, "UART auto output"), on the board's UART2.

The sensor sends a frame every 100 ms (its documented response time) at 9600 8N1: 0xFF, distance
high byte, distance low byte, checksum = (0xFF + high + low) & 0xFF, distance in mm. Each byte takes
10 bit times on the wire (1.04 ms), so a frame's bytes become readable one by one. Its blind zone is
3 cm (datasheet: range 3-450 cm): inside it the echo merges with the transducer's ringing and the
reading is an unreliable small number. Past 4.5 m the frame carries the measured distance anyway
(the driver must reject it). Spurious echoes (a random distance) and frames corrupted on the wire (a
byte flipped, so the checksum fails, or a byte lost) happen at configurable rates.

The model is lazy: frames are generated for the time that passed when the VM asks, and fed into the
`Uart` receive FIFO, which keeps the board's limits (256-byte buffer, bytes past it are lost).
"""

from __future__ import annotations

PERIOD_S = 0.100
BAUD = 9600
BYTE_S = 10.0 / BAUD
BLIND_MM = 30
MAX_MM = 4500
FIFO_BYTES = 256


def frame(mm: int) -> bytes:
    """The 4-byte frame for a distance in mm."""
    mm = max(0, min(0xFFFF, int(mm)))
    hi, lo = mm >> 8, mm & 0xFF
    return bytes((0xFF, hi, lo, (0xFF + hi + lo) & 0xFF))


class Uart:
    """The VM's view of one UART: configured baud and a bounded receive FIFO filled by a peer model."""

    def __init__(self, capacity: int = FIFO_BYTES):
        self.capacity = capacity
        self.baud = None  # None until the VM initialises it; nothing is received before that
        self.fifo = bytearray()
        self.overflow = 0  # bytes lost to a full FIFO
        self.tx = 0  # bytes the VM sent

    def init(self, baud: int, capacity: int | None = None) -> None:
        """The VM (re)configured the UART; the FIFO is emptied as by the driver's re-install."""
        self.baud = baud
        if capacity:
            self.capacity = max(32, min(capacity, 4096))
        self.fifo.clear()

    def deinit(self) -> None:
        """The UART is released (VM restart)."""
        self.baud = None
        self.fifo.clear()

    def receive(self, data: bytes) -> None:
        """Bytes arriving from the peer; what does not fit is lost and counted."""
        if self.baud is None:
            return
        room = self.capacity - len(self.fifo)
        if len(data) > room:
            self.overflow += len(data) - room
            data = data[:room]
        self.fifo += data

    def take(self, n: int) -> bytes:
        """Remove and return up to n bytes."""
        out = bytes(self.fifo[:n])
        del self.fifo[:n]
        return out


class A02YYUW:
    """The sensor: `world.value(name, t)` for its physics, `uart` to deliver to, `rng` for noise."""

    def __init__(self, world, uart: Uart, rng):
        self._world = world
        self._uart = uart
        self._rng = rng
        self._t_origin = 0.0
        self._k = None  # index of the next frame to send
        self._pending = []  # (time the byte is complete, byte) of a frame in flight
        self.frames = 0
        self.corrupted = 0
        self.spurious = 0

    def distance_mm(self, t: float) -> int:
        """What one measurement at time t reports."""
        v = self._world.value
        surface = (v("mount_height_cm", t) - v("level_cm", t)) * 10.0 + self._rng.gauss(0, v("ripple_cm", t) * 10)
        if self._rng.random() < v("level_spurious_rate", t):
            self.spurious += 1
            return self._rng.randint(BLIND_MM, MAX_MM)
        if surface < BLIND_MM:
            return self._rng.randint(0, BLIND_MM - 1)
        return int(round(surface))

    def _bytes_for(self, t: float) -> bytes:
        state = self._world.value("a02yyuw", t)
        if state == "missing":
            return b""
        if state == "garbage":
            return bytes(self._rng.randrange(256) for _ in range(4))
        data = bytearray(frame(self.distance_mm(t)))
        if self._rng.random() < self._world.value("level_corrupt_rate", t):
            self.corrupted += 1
            if self._rng.random() < 0.5:
                i = self._rng.randrange(1, 4)
                data[i] ^= 1 << self._rng.randrange(8)
            else:
                del data[self._rng.randrange(4)]
        return bytes(data)

    def advance(self, t: float) -> None:
        """Deliver every byte completed by time t into the UART (at most the last 8 s of frames, which
        more than fill the FIFO)."""
        if self._k is None:
            self._k = int((t - self._t_origin) / PERIOD_S)
        k_now = int((t - self._t_origin) / PERIOD_S)
        if k_now - self._k > 80:
            self._pending.clear()
            self._k = k_now - 79
        while self._k <= k_now:
            ts = self._t_origin + self._k * PERIOD_S
            data = self._bytes_for(ts)
            if data:
                self.frames += 1
            self._pending.extend((ts + (i + 1) * BYTE_S, b) for i, b in enumerate(data))
            self._k += 1
        done = [b for (tb, b) in self._pending if tb <= t]
        self._pending = [(tb, b) for (tb, b) in self._pending if tb > t]
        if done:
            self._uart.receive(self._garble(bytes(done)))

    def _garble(self, data: bytes) -> bytes:
        # A UART set to another baud rate sees framing errors: the bytes arrive as noise.
        if self._uart.baud is None or abs(self._uart.baud - BAUD) <= BAUD * 0.03:
            return data
        return bytes(self._rng.randrange(256) for _ in data)
