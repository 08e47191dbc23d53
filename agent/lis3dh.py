"""LIS3DH 3-axis accelerometer on I2C (ST datasheet DocID17530 rev 2, "LIS3DH").

The driver gets a `machine.I2C`-like bus (methods readfrom_mem_into / writeto_mem) and never imports
`machine`. It runs the chip in high-resolution mode, +-2 g, block data update: each axis is a 12-bit
two's complement value left-justified in 16 bits, 1 mg per digit (datasheet Table 4, So @ FS=00 HR).
Multi-byte reads set bit 7 of the sub-address to auto-increment (datasheet §6.1.1).

The INT1 "activity" interrupt: a high-pass filter in front of the interrupt generator (CTRL_REG2
HP_IA1) removes gravity, so INT1 fires when any axis changes by more than INT1_THS for INT1_DURATION
samples (OR of the X/Y/Z high events, INT1_CFG); it is latched (CTRL_REG5 LIR_INT1) until INT1_SRC is
read, so a short knock is not missed between samples.
"""

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]

from agent.errors import SensorFault

_ADDRESS = const(0x18)  # SA0 tied low
_WHO_AM_I_VALUE = const(0x33)

_WHO_AM_I = const(0x0F)
_CTRL_REG1 = const(0x20)
_CTRL_REG2 = const(0x21)
_CTRL_REG3 = const(0x22)
_CTRL_REG4 = const(0x23)
_CTRL_REG5 = const(0x24)
_REFERENCE = const(0x26)
_OUT_X_L = const(0x28)
_INT1_CFG = const(0x30)
_INT1_SRC = const(0x31)
_INT1_THS = const(0x32)
_INT1_DURATION = const(0x33)
_AUTO_INC = const(0x80)

_XYZ_EN = const(0x07)
_BDU_HR_2G = const(0x88)  # CTRL_REG4: BDU | HR, FS = +-2 g
_HP_IA1 = const(0x01)  # CTRL_REG2: high-pass filtered data to the INT1 generator
_I1_IA1 = const(0x40)  # CTRL_REG3: IA1 routed to the INT1 pin
_LIR_INT1 = const(0x08)  # CTRL_REG5: latch INT1 until INT1_SRC is read
_OR_HIGH_EVENTS = const(0x2A)  # INT1_CFG: ZHIE | YHIE | XHIE, AOI=0 (OR)
_IA = const(0x40)  # INT1_SRC: an interrupt is active

#: The data rates in Hz, in the order of their CTRL_REG1 ODR field values 1..7 (datasheet Table 31).
_RATES = const((1, 10, 25, 50, 100, 200, 400))

_G_PER_DIGIT = const(0.001)  # HR mode, +-2 g: 1 mg/digit
_THS_MG = const(16)  # INT1_THS LSB at +-2 g (datasheet §8.21)


class LIS3DH:
    """The accelerometer at `address` on `i2c`; call setup() before reading."""

    def __init__(self, i2c, address=_ADDRESS, rate_hz=50):
        if rate_hz not in _RATES:
            raise ValueError("LIS3DH rate must be one of [1, 10, 25, 50, 100, 200, 400] Hz")
        self._i2c = i2c
        self._addr = address
        self.rate_hz = rate_hz
        self._buf = bytearray(6)
        self._one = bytearray(1)
        self.raw = [0, 0, 0]  # last reading in digits (mg), reused

    def _write(self, reg, value):
        self._one[0] = value
        try:
            self._i2c.writeto_mem(self._addr, reg, self._one)
        except OSError as exc:
            raise SensorFault("lis3dh_io", "write 0x%02x: %s" % (reg, exc), True)

    def _read(self, reg):
        try:
            self._i2c.readfrom_mem_into(self._addr, reg, self._one)
        except OSError as exc:
            raise SensorFault("lis3dh_io", "read 0x%02x: %s" % (reg, exc), True)
        return self._one[0]

    def setup(self):
        """Check the chip's identity, then start measuring: chosen rate, XYZ on, high resolution, +-2 g, BDU.

        SensorFault "lis3dh_missing" when nothing answers, "lis3dh_bad_id" when WHO_AM_I is wrong.
        """
        try:
            self._i2c.readfrom_mem_into(self._addr, _WHO_AM_I, self._one)
        except OSError as exc:
            raise SensorFault("lis3dh_missing", "no answer at 0x%02x: %s" % (self._addr, exc))
        if self._one[0] != _WHO_AM_I_VALUE:
            raise SensorFault("lis3dh_bad_id", "WHO_AM_I=0x%02x, expected 0x33" % self._one[0])
        self._write(_CTRL_REG1, ((_RATES.index(self.rate_hz) + 1) << 4) | _XYZ_EN)
        self._write(_CTRL_REG4, _BDU_HR_2G)

    def read_raw(self):
        """Read X/Y/Z in one auto-incremented burst into `self.raw` (digits = mg); returns it."""
        buf = self._buf
        try:
            self._i2c.readfrom_mem_into(self._addr, _OUT_X_L | _AUTO_INC, buf)
        except OSError as exc:
            raise SensorFault("lis3dh_io", "read XYZ: %s" % exc, True)
        raw = self.raw
        for i in range(3):
            v = buf[2 * i] | (buf[2 * i + 1] << 8)
            if v & 0x8000:
                v -= 0x10000
            raw[i] = v >> 4  # 12-bit value, left-justified
        return raw

    def read_g(self):
        """Acceleration (x, y, z) in g."""
        r = self.read_raw()
        return (r[0] * _G_PER_DIGIT, r[1] * _G_PER_DIGIT, r[2] * _G_PER_DIGIT)

    def enable_activity_int(self, threshold_mg=160, duration_samples=1):
        """Route a latched, high-passed "any axis moved more than threshold" interrupt to INT1."""
        ths = (threshold_mg + _THS_MG // 2) // _THS_MG
        if ths < 1:
            ths = 1
        if ths > 127:
            ths = 127
        if duration_samples < 0 or duration_samples > 127:
            raise ValueError("INT1 duration must be 0..127 samples")
        self._write(_CTRL_REG2, _HP_IA1)
        self._write(_INT1_THS, ths)
        self._write(_INT1_DURATION, duration_samples)
        self._read(_REFERENCE)  # resets the high-pass filter to the current acceleration (§6.3.3)
        self._write(_CTRL_REG5, _LIR_INT1)
        self._write(_INT1_CFG, _OR_HIGH_EVENTS)
        self._write(_CTRL_REG3, _I1_IA1)
        self.clear_int()

    def clear_int(self):
        """Read INT1_SRC (which releases the latched INT1); True when an interrupt was active."""
        return bool(self._read(_INT1_SRC) & _IA)
