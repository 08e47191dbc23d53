"""Health report of a device (SPEC.md "Health"): every field but uptime is optional."""

from protocols import fields
from protocols.message import UpMessage

#: Optional fields in key order: FIELDS[i] has key 4 + i. All are uints except the three `_check` names.
#: Counters (dropped, errors, reconnects) count since boot.
FIELDS = (
    "heap_free",   # 4: bytes free now
    "heap_min",    # 5: lowest free heap seen since boot (low-water mark)
    "flash_free",  # 6: bytes free on the filesystem
    "battery",     # 7: mV (an int: 3 bytes where a float 3.7 V needs 9)
    "rssi",        # 8: dBm of the link, -127..0
    "outbox",      # 9: messages waiting in the outbox
    "dropped",     # 10: messages the bounded outbox dropped
    "errors",      # 11: error code -> count
    "fault",       # 12: last sensor fault code, absent when none since boot
    "reconnects",  # 13: MQTT/link reconnects
    "link_up",     # 14: seconds since the link last came up
)


def _check(value, name):
    # one function rather than a check per field: each function costs the node's heap
    if name == "rssi":
        return fields.choice(value, name, range(-127, 1))
    if name == "errors":
        return fields.table(value, name, fields.uint)
    if name == "fault":
        return fields.text(value, name)
    return fields.uint(value, name)


class Health(UpMessage):
    """Periodic health: `uptime` in seconds, the rest as keyword arguments named in FIELDS."""

    KIND = "health"

    def __init__(self, boot, seq, uptime, **optional) -> None:
        super().__init__(boot, seq)
        self.uptime = fields.uint(uptime, "uptime")
        for attr in FIELDS:
            value = optional.pop(attr, None)
            setattr(self, attr, None if value is None else _check(value, attr))
        if optional:
            raise TypeError("unknown health fields: %s" % ", ".join(sorted(optional)))

    def to_obj(self) -> dict:
        """Key 3 uptime, then FIELDS that are set."""
        out = self.header()
        out[3] = self.uptime
        for key, attr in enumerate(FIELDS, 4):
            fields.put(out, key, getattr(self, attr))
        return out
