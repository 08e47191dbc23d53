"""Health report of a device (SPEC.md "Health"): every field but uptime is optional."""

from protocols import fields
from protocols.message import UpMessage


def _rssi(value, name):
    return fields.choice(value, name, range(-127, 1))


def _counters(value, name):
    return fields.table(value, name, fields.uint)


#: key, attribute, check. Counters (drops, errors, reconnects) count since boot.
FIELDS = (
    (4, "heap_free", fields.uint),     # bytes free now
    (5, "heap_min", fields.uint),      # lowest free heap seen since boot (low-water mark)
    (6, "flash_free", fields.uint),    # bytes free on the filesystem
    (7, "battery", fields.uint),       # mV (an int: 3 bytes where a float 3.7 V needs 9)
    (8, "rssi", _rssi),                # dBm of the link
    (9, "outbox", fields.uint),        # messages waiting in the outbox
    (10, "dropped", fields.uint),      # messages the bounded outbox dropped
    (11, "errors", _counters),         # error code -> count
    (12, "fault", fields.text),        # last sensor fault code, absent when none since boot
    (13, "reconnects", fields.uint),   # MQTT/link reconnects
    (14, "link_up", fields.uint),      # seconds since the link last came up
)


class Health(UpMessage):
    """Periodic health: `uptime` in seconds, the rest as keyword arguments named in FIELDS."""

    KIND = "health"

    def __init__(self, boot, seq, uptime, **optional) -> None:
        super().__init__(boot, seq)
        self.uptime = fields.uint(uptime, "uptime")
        for _, attr, check in FIELDS:
            value = optional.pop(attr, None)
            setattr(self, attr, None if value is None else check(value, attr))
        if optional:
            raise TypeError("unknown health fields: %s" % ", ".join(sorted(optional)))

    def to_obj(self) -> dict:
        """Key 3 uptime, then FIELDS that are set."""
        out = self.header()
        out[3] = self.uptime
        for key, attr, _ in FIELDS:
            fields.put(out, key, getattr(self, attr))
        return out
