"""LIS3DH accelerometer at I2C 0x18, modelled at the register level (ST DocID17530, "LIS3DH").

What is modelled: the register file (WHO_AM_I 0x33, CTRL_REG1..6 and the rest writable), sub-address
auto-increment when bit 7 of the sub-address is set (§6.1.1, otherwise a burst repeats one register),
the output data rate (samples are taken at t0 + k/ODR, t0 = when ODR was written; power-down keeps
the last sample), the output format per mode and full scale (low-power 8 bit, normal 10 bit,
high-resolution 12 bit, left-justified two's complement, little endian unless BLE), STATUS_REG
ZYXDA/ZYXOR, and the INT1 generator: INT1_CFG (AOI, high/low events per axis), INT1_THS (LSB 16, 32,
62, 186 mg per full scale), INT1_DURATION in samples, LIR latching cleared by reading INT1_SRC, the
high-pass filter in front of it (CTRL_REG2 HP_IA1, reset by reading REFERENCE in the normal HP mode)
and the INT1 pin (CTRL_REG3 I1_IA1, polarity CTRL_REG6 INT_POLARITY). Not modelled: FIFO, click, 6D
direction detection, INT2, the ADCs and temperature sensor.

The acceleration comes from `accel(t)` (in g, sensor frame) supplied by the Hardware; the model adds
nothing but quantisation and saturation.
"""

from __future__ import annotations

import math

ADDRESS = 0x18
WHO_AM_I = 0x0F
CTRL_REG1, CTRL_REG2, CTRL_REG3, CTRL_REG4, CTRL_REG5, CTRL_REG6 = 0x20, 0x21, 0x22, 0x23, 0x24, 0x25
REFERENCE, STATUS_REG, OUT_X_L = 0x26, 0x27, 0x28
INT1_CFG, INT1_SRC, INT1_THS, INT1_DURATION = 0x30, 0x31, 0x32, 0x33

#: CTRL_REG1 ODR field -> Hz (normal / high-resolution; 8 and 9 are low-power-only or 1.344 kHz).
ODR_HZ = {0: 0.0, 1: 1.0, 2: 10.0, 3: 25.0, 4: 50.0, 5: 100.0, 6: 200.0, 7: 400.0, 8: 1620.0, 9: 1344.0}
#: INT1_THS LSB in mg per FS field (datasheet §8.21).
THS_MG = (16, 32, 62, 186)
#: mg per digit in high-resolution mode per FS field (datasheet Table 4); normal x4, low-power x16.
HR_MG = (1, 2, 4, 12)
_READ_ONLY = {WHO_AM_I, STATUS_REG, INT1_SRC} | set(range(OUT_X_L, OUT_X_L + 6))
_DEFAULTS = {WHO_AM_I: 0x33, CTRL_REG1: 0x07, 0x1E: 0x10}  # 0x1E CTRL_REG0


class LIS3DH:
    """The chip; `accel(t)` gives (x, y, z) in g, `set_int1(level, t)` drives the INT1 pin."""

    def __init__(self, accel, set_int1=None):
        self._accel = accel
        self._set_int1 = set_int1 or (lambda level, t: None)
        self.power_on(0.0)

    def power_on(self, t: float) -> None:
        """Registers to their reset values (a power cycle of the chip)."""
        self.regs = bytearray(0x40)
        for reg, value in _DEFAULTS.items():
            self.regs[reg] = value
        self.pointer = 0
        self.auto_inc = False
        self._t0 = t
        self._sample_k = -1  # index of the sample in the output registers
        self._read_k = -1  # index of the last sample read out
        self.out = (0, 0, 0)  # digits, left-justified 16-bit signed
        self._int_k = None  # last sample the interrupt generator processed
        self._hp_prev = None
        self._hp_out = [0.0, 0.0, 0.0]
        self._over = 0  # consecutive samples meeting the interrupt condition
        self._ia = False
        self._src = 0
        self._pin = None

    # --- timing ---------------------------------------------------------------------------------
    def odr(self) -> float:
        return ODR_HZ.get(self.regs[CTRL_REG1] >> 4, 0.0)

    def _k_at(self, t: float) -> int:
        odr = self.odr()
        return -1 if odr <= 0 else int((t - self._t0) * odr)

    def _sample_time(self, k: int) -> float:
        return self._t0 + k / self.odr()

    def _mode(self):
        """(bits, mg per digit) for the current mode and full scale."""
        fs = (self.regs[CTRL_REG4] >> 4) & 3
        if self.regs[CTRL_REG1] & 0x08:
            return 8, HR_MG[fs] * 16
        if self.regs[CTRL_REG4] & 0x08:
            return 12, HR_MG[fs]
        return 10, HR_MG[fs] * 4

    def _digits(self, g: float, bits: int, mg_per: float) -> int:
        limit = 1 << (bits - 1)
        d = int(round(g * 1000.0 / mg_per))
        d = max(-limit, min(limit - 1, d))
        return (d << (16 - bits)) & 0xFFFF

    def _update_output(self, t: float) -> None:
        k = self._k_at(t)
        if k < 0 or k == self._sample_k:
            return
        bits, mg_per = self._mode()
        a = self._accel(self._sample_time(k))
        self.out = tuple(self._digits(v, bits, mg_per) for v in a)
        self._sample_k = k

    # --- I2C -------------------------------------------------------------------------------------
    def i2c_write(self, data: bytes, t: float) -> None:
        """An I2C write: sub-address then data bytes."""
        if not data:
            return
        self.pointer = data[0] & 0x7F
        self.auto_inc = bool(data[0] & 0x80)
        for byte in data[1:]:
            self._write_reg(self.pointer, byte, t)
            if self.auto_inc:
                self.pointer = (self.pointer + 1) & 0x7F

    def i2c_read(self, n: int, t: float) -> bytes:
        """An I2C read of n bytes from the sub-address pointer."""
        self.tick(t)
        self._update_output(t)
        out = bytearray()
        for _ in range(n):
            out.append(self._read_reg(self.pointer, t))
            if self.auto_inc:
                self.pointer = (self.pointer + 1) & 0x7F
        return bytes(out)

    def _write_reg(self, reg: int, value: int, t: float) -> None:
        if reg in _READ_ONLY or reg >= 0x40 or reg < 0x1E:
            return  # the chip ignores writes to read-only or reserved registers
        if reg == CTRL_REG1 and (value >> 4) != (self.regs[CTRL_REG1] >> 4):
            self.tick(t)
            self._t0, self._sample_k, self._read_k, self._int_k = t, -1, -1, None
        if reg == CTRL_REG5 and value & 0x80:  # BOOT: reload trimming; clears itself
            value &= 0x7F
        self.regs[reg] = value
        if reg in (CTRL_REG3, CTRL_REG6, INT1_CFG):
            self._drive_pin(t)

    def _read_reg(self, reg: int, t: float) -> int:
        if OUT_X_L <= reg < OUT_X_L + 6:
            i = reg - OUT_X_L
            word = self.out[i // 2]
            little = not self.regs[CTRL_REG4] & 0x40
            self._read_k = self._sample_k
            return (word & 0xFF if little else word >> 8) if i % 2 == 0 else (word >> 8 if little else word & 0xFF)
        if reg == STATUS_REG:
            fresh = self._sample_k > self._read_k
            overrun = self._sample_k > self._read_k + 1 and self._read_k >= 0
            return (0x08 | 0x07 if fresh else 0) | (0x80 | 0x70 if overrun else 0)
        if reg == REFERENCE:
            self._hp_prev = None  # reading REFERENCE resets the high-pass filter (§6.3.3)
            self._hp_out = [0.0, 0.0, 0.0]
        if reg == INT1_SRC:
            src = self._src
            if self.regs[CTRL_REG5] & 0x08 and self._ia:
                self._ia = False
                self._src = 0
                self._drive_pin(t)
            return src
        return self.regs[reg] if reg < 0x40 else 0

    # --- INT1 generator ---------------------------------------------------------------------------
    def int_active(self) -> bool:
        """True when the INT1 generator is configured and routed to the pin (so it needs ticking)."""
        return bool(self.regs[INT1_CFG] & 0x3F and self.regs[CTRL_REG3] & 0x40 and self.odr() > 0)

    def next_due(self, t: float) -> float | None:
        """When tick() next has work (the next sample), or None."""
        if not self.int_active():
            return None
        k = max(self._k_at(t), -1 if self._int_k is None else self._int_k)
        return self._sample_time(k + 1)

    def tick(self, t: float) -> None:
        """Run the interrupt generator over every sample up to time t (at most 2 s worth)."""
        if not self.int_active():
            self._int_k = None
            return
        k_now = self._k_at(t)
        if self._int_k is None:
            self._int_k = k_now - 1
        first = max(self._int_k + 1, k_now - int(2 * self.odr()))
        for k in range(first, k_now + 1):
            self._int_sample(self._sample_time(k), t)
        self._int_k = k_now

    def _int_sample(self, ts: float, t: float) -> None:
        a = self._accel(ts)
        if self.regs[CTRL_REG2] & 0x01:  # HP_IA1
            a = self._highpass(a)
        fs = (self.regs[CTRL_REG4] >> 4) & 3
        ths = (self.regs[INT1_THS] & 0x7F) * THS_MG[fs] / 1000.0
        cfg = self.regs[INT1_CFG]
        flags, hits, wanted = 0, 0, 0
        for axis in range(3):
            high, low = 1 << (2 * axis + 1), 1 << (2 * axis)
            for bit, met in ((high, abs(a[axis]) > ths), (low, abs(a[axis]) < ths)):
                if cfg & bit:
                    wanted += 1
                    if met:
                        flags |= bit
                        hits += 1
        condition = hits == wanted if cfg & 0x80 else hits > 0
        self._over = self._over + 1 if condition else 0
        if condition and self._over > (self.regs[INT1_DURATION] & 0x7F):
            if not self._ia:
                self._ia, self._src = True, 0x40 | flags
                self._drive_pin(t)
        elif not self.regs[CTRL_REG5] & 0x08 and self._ia:  # not latched: follows the condition
            self._ia, self._src = False, 0
            self._drive_pin(t)

    def _highpass(self, a):
        # First-order high-pass; cut-off ODR/50 .. ODR/400 per HPCF (datasheet Table 30, 50 Hz column).
        cut = self.odr() / (50, 100, 200, 400)[(self.regs[CTRL_REG2] >> 4) & 3]
        alpha = 1.0 / (1.0 + 2 * math.pi * cut / self.odr())
        if self._hp_prev is None:
            self._hp_prev = a
            return (0.0, 0.0, 0.0)
        out = [alpha * (self._hp_out[i] + a[i] - self._hp_prev[i]) for i in range(3)]
        self._hp_prev, self._hp_out = a, out
        return out

    def _drive_pin(self, t: float) -> None:
        level = bool(self._ia and self.regs[CTRL_REG3] & 0x40)
        if self.regs[CTRL_REG6] & 0x02:  # INT_POLARITY: active low
            level = not level
        if level != self._pin:
            self._pin = level
            self._set_int1(1 if level else 0, t)

    def int1_level(self) -> int:
        """Current INT1 pin level."""
        return 1 if self._pin else 0
