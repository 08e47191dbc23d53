"""Device-side builder of compact SenML packs (SPEC.md "Telemetry").

Readings are kept in lists sized at start-up; `pack()` chooses base name, base time, base unit and base
value only when they make the CBOR smaller, counting encoded bytes arithmetically (no trial encoding).
Times are whole seconds: absolute (>= 2**28) or relative to the moment of sending (< 2**28, usually <= 0).
"""

from protocols.errors import ProtocolError
from protocols.fields import RELATIVE_LIMIT, bad, is_int, is_number
from protocols.limits import MAX_RECORDS
from protocols.senml import BN, BT, BU, BV, MEASUREMENTS, UNITS, UT, N, T, U, V, check_name


def int_size(value: int) -> int:
    """Bytes CBOR needs for integer `value` in preferred (shortest) serialization (RFC 8949 §4.2.1)."""
    if value < 0:
        value = -1 - value
    return 1 if value < 24 else 2 if value < 0x100 else 3 if value < 0x10000 else 5 if value < 0x100000000 else 9


class PackBuilder:
    """Collects up to `capacity` readings and turns them into the most compact pack we know how to make."""

    def __init__(self, capacity: int = MAX_RECORDS) -> None:
        if not is_int(capacity) or not 0 < capacity <= MAX_RECORDS:
            bad("capacity", "1..%d" % MAX_RECORDS, (capacity,))
        self.capacity = capacity
        self.names = [""] * capacity
        self.units = [""] * capacity
        self.values = [0] * capacity
        self.times = [0] * capacity
        self.count = 0

    def clear(self) -> None:
        """Forget the collected readings (the storage is kept)."""
        self.count = 0

    def add(self, name: str, value, time: int, unit=None) -> None:
        """Add one numeric reading; `unit` may be left out for a catalogue measurement (SPEC.md)."""
        if self.count >= self.capacity:
            raise ProtocolError("pack_full", "pack holds at most %d readings" % self.capacity)
        check_name(name)
        if not is_number(value) or not is_int(time):
            bad(name, "a finite number at whole seconds", ((value, time),))
        if unit is None and name not in MEASUREMENTS or unit is not None and unit not in UNITS:
            bad("unit of " + name, "in protocols.senml.UNITS (or left out for a catalogue name)", (unit,))
        if unit is None or MEASUREMENTS.get(name) == unit:
            unit = ""
        index = self.count
        self.names[index] = name
        self.units[index] = unit
        self.values[index] = value
        self.times[index] = time
        self.count = index + 1

    def pack(self, update=None) -> list:
        """The pack of the collected readings; `update` (seconds) goes as `ut` on each name's last record."""
        count = self.count
        if not count:
            raise ProtocolError("senml_pack", "no readings to pack")
        names = self.names[:count]
        records: list = [{} for _ in range(count)]
        _names(records, names, self.units[:count])
        _rebase(records, self.times[:count], T, BT, True)
        _rebase(records, self.values[:count], V, BV, False)
        if update is not None:
            seen = []
            for index in range(count - 1, -1, -1):
                if names[index] not in seen:
                    seen.append(names[index])
                    records[index][UT] = update
        return records


def _names(records, names, units) -> None:
    # bn: the longest common prefix, when its label and text cost less than it saves in every record
    # (names are ASCII, check_name says so: a text of n characters costs int_size(n) + n bytes)
    prefix = names[0] if len(names) > 1 else ""
    for name in names:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    size = len(prefix)
    if not prefix or 1 + size + int_size(size) >= sum(size + int_size(len(n)) - int_size(len(n) - size)
                                                        for n in names):
        prefix = ""
    else:
        records[0][BN] = prefix
    for index, name in enumerate(names):
        if name != prefix:
            records[index][N] = name[len(prefix):]
    # bu: only when every record has the same non-empty unit
    same = len(names) > 1 and units[0] and all(unit == units[0] for unit in units)
    if same:
        records[0][BU] = units[0]
        return
    for index, unit in enumerate(units):
        if unit:
            records[index][U] = unit


def _rebase(records, items, label, base_label, times) -> None:
    """Write `items` under `label`, as offsets from a base under `base_label` when that is smaller.

    Times (`times` True): the base is the reading nearest the middle of the range, all relative or all
    absolute, and a zero offset is left out (label and value). Values: the middle of the range, ints only.
    """
    base = 0
    low = min(items)
    high = max(items)
    middle = low + (high - low) // 2
    if times:
        usable = (low < RELATIVE_LIMIT) == (high < RELATIVE_LIMIT)
        middle = min(items, key=lambda item: abs(item - middle))
    else:
        usable = all(is_int(item) for item in items)
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
