"""Birth and last will (SPEC.md "State"), published retained on dt/<fleet>/<device>/state.

The fleet accepts an offline state only when its boot id equals that of the last birth, so a will that
arrives late from an older session never marks the newer session offline.
"""

from protocols import fields
from protocols.errors import ProtocolError
from protocols.message import UpMessage

#: Reset causes: the values of MicroPython's machine.*_RESET constants on the ESP32 port, 0 unknown.
RESET_CAUSES = (0, 1, 2, 3, 4, 5)
UNKNOWN, POWER_ON, HARD, WATCHDOG, DEEP_SLEEP, SOFT = RESET_CAUSES


class State(UpMessage):
    """`online` True: birth (firmware, config version, reset cause required); False: last will."""

    KIND = "state"

    def __init__(self, boot, seq, online, firmware=None, config=None, reset=None, kind=None) -> None:
        super().__init__(boot, seq)
        self.online = fields.flag(online, "online")
        self.firmware: str | None = None
        self.config: int | None = None
        self.reset: int | None = None
        self.kind: str | None = None
        if online:
            self.firmware = fields.text(firmware, "firmware", 32)
            self.config = fields.uint(config, "config")
            self.reset = fields.choice(reset, "reset", RESET_CAUSES)
            self.kind = None if kind is None else fields.text(kind, "kind", 16)
        else:
            if firmware is not None or config is not None or reset is not None or kind is not None:
                raise ProtocolError("bad_field", "a last will carries only boot id, seq and online=false")

    def to_obj(self) -> dict:
        """Key 3 online; birth adds 4 firmware, 5 config version, 6 reset cause, 7 sensor kind."""
        out = self.header()
        out[3] = self.online
        fields.put(out, 4, self.firmware)
        fields.put(out, 5, self.config)
        fields.put(out, 6, self.reset)
        fields.put(out, 7, self.kind)
        return out
