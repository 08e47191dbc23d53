"""Device-side builder of compact SenML packs (SPEC.md "Telemetry"), and the measurement catalogue.

Readings are kept in lists sized at start-up; `pack()` chooses base name, base time, base unit and base
value only when they make the CBOR smaller, counting encoded bytes arithmetically (no trial encoding).
Times are whole seconds: absolute (>= 2**28) or relative to the moment of sending (< 2**28, usually <= 0).

The node keeps this module resident (every report goes through it), so it is self-contained: labels are
`const()`, and `add()` checks only what would put a wrong type on the wire. Names and units are the
agent's own constants (agent/reporter.py WIRE, checked against RFC 8428 §4.5.1 and `senml.UNITS` by
tests/test_agent_reporter.py); the fleet checks every received pack in full (`protocols.senml_resolve`).
"""

from protocols.errors import ProtocolError

try:
    from micropython import const
except ImportError:  # CPython: every const here is an int
    const = int

# RFC 8428 §6 labels (protocols/senml.py has them all)
_BN = const(-2)
_BT = const(-3)
_BU = const(-4)
_BV = const(-5)
_N = const(0)
_U = const(1)
_V = const(2)
_T = const(6)
_UT = const(7)
_RELATIVE = const(0x10000000)  # 2**28: below it a SenML time is relative (RFC 8428 §4.5.3)

#: The measurement catalogue (SPEC.md "Measurements"): name -> unit. Records with these names leave the
#: unit out, as in the LwM2M SenML profile where the object model fixes it; the resolver fills it in.
#: Defined here, where the node needs it, and read by the fleet as `protocols.senml.MEASUREMENTS`.
MEASUREMENTS = {
    "tilt": "deg",    # manhole cover: angle from its resting position
    "level": "mm",    # street water: depth of water above the road surface
    "load": "N",      # billboard: wind load on the structure
    "wind": "m/s",    # billboard: wind speed, where an anemometer is fitted
}


def int_size(value: int) -> int:
    """Bytes CBOR needs for integer `value` in preferred (shortest) serialization (RFC 8949 §4.2.1)."""
    if value < 0:
        value = -1 - value
    return 1 if value < 24 else 2 if value < 0x100 else 3 if value < 0x10000 else 5 if value < 0x100000000 else 9


class PackBuilder:
    """Collects up to `capacity` readings (at most 64, SPEC.md "Limits") and turns them into the most
    compact pack we know how to make."""

    def __init__(self, capacity: int = 64) -> None:
        if not 0 < capacity <= 64:
            raise ProtocolError("senml_pack", "capacity %r" % (capacity,))
        self.names = [""] * capacity
        self.units = [""] * capacity
        self.values: list = [0] * capacity  # ints and floats
        self.times = [0] * capacity
        self.count = 0

    def clear(self) -> None:
        """Forget the collected readings (the storage is kept)."""
        self.count = 0

    def add(self, name: str, value, time: int, unit=None) -> None:
        """Add one numeric reading at whole second `time`; `unit` may be left out for a catalogue name
        (and is left out of the pack when it is the catalogue's)."""
        index = self.count
        if index >= len(self.names):
            raise ProtocolError("pack_full", "pack holds at most %d readings" % index)
        # an int or a finite float (value - value is nan for inf and nan), at an int time; never a bool
        if not isinstance(time, int) or time is True or time is False or value is True or value is False \
                or not isinstance(value, (int, float)) or value - value != 0 \
                or unit is None and name not in MEASUREMENTS:
            raise ProtocolError("bad_field", "reading %r" % ((name, value, time, unit),))
        self.names[index] = name
        self.units[index] = "" if unit is None or MEASUREMENTS.get(name) == unit else unit
        self.values[index] = value
        self.times[index] = time
        self.count = index + 1

    def pack(self, update=None) -> list:
        """The pack of the collected readings; `update` (seconds) goes as `ut` on each name's last record."""
        count = self.count
        if not count:
            raise ProtocolError("senml_pack", "no readings to pack")
        names = self.names[:count]
        units = self.units[:count]
        records: list = [{} for _ in range(count)]
        # bn: the longest common prefix, when its label and text cost less than it saves in every record
        # (names are ASCII: a text of n characters costs int_size(n) + n bytes)
        prefix = names[0] if count > 1 else ""
        for name in names:
            while not name.startswith(prefix):
                prefix = prefix[:-1]
        size = len(prefix)
        saved = 0
        for name in names:
            saved += size + int_size(len(name)) - int_size(len(name) - size)
        if not prefix or 1 + size + int_size(size) >= saved:
            prefix = ""
            size = 0
        else:
            records[0][_BN] = prefix
        # bu: only when every record has the same non-empty unit
        same = count > 1 and units[0] and units.count(units[0]) == count
        if same:
            records[0][_BU] = units[0]
        for index in range(count):
            if names[index] != prefix:
                records[index][_N] = names[index][size:]
            if units[index] and not same:
                records[index][_U] = units[index]
        _rebase(records, self.times[:count], _T, _BT)
        _rebase(records, self.values[:count], _V, _BV)
        if update is not None:
            seen = []
            for index in range(count - 1, -1, -1):
                if names[index] not in seen:
                    seen.append(names[index])
                    records[index][_UT] = update
        return records


def _rebase(records, items, label, base_label) -> None:
    """Write `items` under `label`, as offsets from a base under `base_label` when that is smaller.

    Times (`label` t): the base is the reading nearest the middle of the range, all relative or all
    absolute, and a zero offset is left out (label and value). Values: the middle of the range, ints only.
    """
    times = label == _T
    base = 0
    low = min(items)
    high = max(items)
    middle = low + (high - low) // 2
    if times:
        usable = (low < _RELATIVE) == (high < _RELATIVE)
        nearest = items[0]
        for item in items:
            if abs(item - middle) < abs(nearest - middle):
                nearest = item
        middle = nearest
    else:
        usable = True
        for item in items:
            if not isinstance(item, int):  # add() let no bool in
                usable = False
    if len(items) > 1 and usable:
        # bytes with `middle` as base minus bytes without: its label and value, then each item's change
        change = 1 + int_size(middle)
        for item in items:
            if times:
                change += (1 + int_size(item - middle) if item != middle else 0) - (1 + int_size(item) if item else 0)
            else:
                change += int_size(item - middle) - int_size(item)
        if change < 0:
            base = middle
            records[0][base_label] = base
    for index, item in enumerate(items):
        if not times or item != base:
            records[index][label] = item - base if base else item
