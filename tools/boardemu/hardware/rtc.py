"""The board's RTC: it keeps counting across soft, hard and WDT resets and deep sleep, and starts
again from 2000-01-01 00:00:00 on a power-on reset, as an ESP32 without a backup battery does."""

from __future__ import annotations

import datetime

EPOCH = datetime.datetime(2000, 1, 1)


class Rtc:
    """Time = monotonic time + offset; set() moves the offset."""

    def __init__(self, t: float):
        self.power_on(t)

    def power_on(self, t: float) -> None:
        self.offset = -t  # RTC reads 0 s after 2000-01-01 now

    def now(self, t: float) -> datetime.datetime:
        return EPOCH + datetime.timedelta(seconds=t + self.offset)

    def datetime_tuple(self, t: float) -> tuple:
        """machine.RTC().datetime() layout: (year, month, day, weekday 0=Monday, h, m, s, us)."""
        d = self.now(t)
        return (d.year, d.month, d.day, d.weekday(), d.hour, d.minute, d.second, d.microsecond)

    def set(self, fields, t: float) -> None:
        """RTC.datetime((y, m, d, weekday, h, m, s, us)); the weekday is ignored, as the port does."""
        y, mo, d, _wd, h, mi, s, us = (list(fields) + [0] * 8)[:8]
        when = datetime.datetime(y, mo, d, h, mi, s, us)
        self.offset = (when - EPOCH).total_seconds() - t
