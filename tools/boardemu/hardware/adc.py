"""The ESP32 ADC as the MicroPython esp32 port presents it, and the battery divider on GPIO35.

The battery reaches GPIO35 through a 2:1 divider (two equal resistors), so the pin sees battery_v/2.
Per attenuation the ADC's full scale (raw 4095) and its calibrated usable range (what read_uv
returns, clamped) are those of the ESP32 datasheet and the port's documentation:
0 dB 1.1 V (100-950 mV), 2.5 dB 1.5 V (100-1250 mV), 6 dB 2.2 V (150-1750 mV), 11 dB 3.9 V (150-2450 mV).
"""

from __future__ import annotations

ADC_PINS = {32, 33, 34, 35, 36, 37, 38, 39}  # ADC1 (ADC2 is unusable with Wi-Fi on)
# atten code (ADC.ATTN_0DB=0, 2_5DB=1, 6DB=2, 11DB=3): (full scale V, usable low V, usable high V)
ATTEN = {0: (1.1, 0.10, 0.95), 1: (1.5, 0.10, 1.25), 2: (2.2, 0.15, 1.75), 3: (3.9, 0.15, 2.45)}
BATTERY_PIN = 35
NOISE_V = 0.004


def convert(volts: float, atten: int, rng) -> tuple[int, int]:
    """(read_uv, raw 12-bit) for a pin voltage at attenuation `atten`."""
    if atten not in ATTEN:
        raise ValueError("ADC attenuation must be 0..3, not %r" % atten)
    full, low, high = ATTEN[atten]
    v = max(0.0, volts + rng.gauss(0, NOISE_V))
    raw = max(0, min(4095, int(round(v / full * 4095))))
    uv = int(round(max(low, min(high, v)) * 1e6))
    return uv, raw
