"""Fault switches in front of the chip models: a chip can be "missing" (it never answers: I2C NACK,
no UART frames, HX711 DOUT stuck high, no reed pulses) or answer "garbage" (random bytes/bits)."""

from __future__ import annotations


class FaultableI2C:
    """An I2C device that obeys the world's fault switch `name` (see physics.CHIPS)."""

    def __init__(self, device, name: str, world, rng):
        self.device = device
        self._name = name
        self._world = world
        self._rng = rng

    def state(self, t: float) -> str:
        return self._world.value(self._name, t)

    def present(self, t: float) -> bool:
        return self.state(t) != "missing"

    def i2c_write(self, data: bytes, t: float) -> None:
        if self.state(t) == "ok":
            self.device.i2c_write(data, t)

    def i2c_read(self, n: int, t: float) -> bytes:
        if self.state(t) == "garbage":
            return bytes(self._rng.randrange(256) for _ in range(n))
        return self.device.i2c_read(n, t)
