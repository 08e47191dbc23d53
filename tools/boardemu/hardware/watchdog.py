"""The ESP32 task watchdog as machine.WDT exposes it: once started it cannot be stopped, only fed;
when not fed within the timeout the board resets with reset cause WDT. A VM restart disarms it, as
a chip reset does."""

from __future__ import annotations


class Watchdog:
    """Arm with start(timeout_ms, t); `expired(t)` says when the reset is due."""

    def __init__(self):
        self.disarm()
        self.fired = 0

    def disarm(self) -> None:
        self.timeout = None
        self.fed = None

    def start(self, timeout_ms: int, t: float) -> None:
        """WDT(timeout=...): arm (or change the timeout of) the watchdog, counting from now."""
        self.timeout = max(1, int(timeout_ms)) / 1000.0
        self.fed = t

    def feed(self, t: float) -> None:
        if self.timeout is not None:
            self.fed = t

    def next_due(self) -> float | None:
        return None if self.timeout is None else self.fed + self.timeout

    def expired(self, t: float) -> bool:
        """True (once) when the watchdog bites at time t; it is disarmed then."""
        due = self.next_due()
        if due is None or t < due:
            return False
        self.disarm()
        self.fired += 1
        return True

    def status(self, t: float) -> dict:
        if self.timeout is None:
            return {"armed": False, "fired": self.fired}
        return {"armed": True, "timeout_ms": int(self.timeout * 1000), "left_ms": int((self.fed + self.timeout - t) * 1000),
                "fired": self.fired}
