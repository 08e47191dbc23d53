"""Device-side builder of compact SenML packs (SPEC.md "Telemetry").

Readings are kept in lists sized at start-up; `pack()` chooses base name, base time, base unit and base
value only when they make the CBOR smaller, counting encoded bytes arithmetically (no trial encoding).
Times are whole seconds: absolute (>= 2**28) or relative to the moment of sending (< 2**28, usually <= 0).
"""

from protocols.errors import ProtocolError
from protocols.fields import RELATIVE_LIMIT, is_int, is_number
from protocols.limits import MAX_RECORDS
from protocols.senml import BN, BT, BU, BV, MEASUREMENTS, UNITS, UT, N, T, U, V, check_name


def int_size(value: int) -> int:
    """Bytes CBOR needs for integer `value` in preferred (shortest) serialization (RFC 8949 §4.2.1)."""
    if value < 0:
        value = -1 - value
    if value < 24:
        return 1
    if value < 0x100:
        return 2
    if value < 0x10000:
        return 3
    return 5 if value < 0x100000000 else 9


def text_size(value: str) -> int:
    """Bytes CBOR needs for text string `value`."""
    length = len(value.encode())
    return int_size(length) + length


def _offsets_cost(values, base) -> int:
    # a zero offset is left out entirely (label and value)
    return sum(1 + int_size(item - base) for item in values if item != base)


def _common_prefix(names) -> str:
    first = names[0]
    end = len(first)
    for name in names:
        end = min(end, len(name))
        for index in range(end):
            if name[index] != first[index]:
                end = index
                break
    return first[:end]


class PackBuilder:
    """Collects up to `capacity` readings and turns them into the most compact pack we know how to make."""

    def __init__(self, capacity: int = MAX_RECORDS) -> None:
        if not is_int(capacity) or not 0 < capacity <= MAX_RECORDS:
            raise ProtocolError("bad_field", "capacity must be 1..%d" % MAX_RECORDS)
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
        if not is_number(value):
            raise ProtocolError("bad_field", "value of %r must be a finite number" % name)
        if not is_int(time):
            raise ProtocolError("bad_field", "time of %r must be whole seconds" % name)
        if unit is None:
            if name not in MEASUREMENTS:
                raise ProtocolError("bad_field", "%r is not in the catalogue: give its unit" % name)
            unit = ""
        elif unit not in UNITS:
            raise ProtocolError("bad_field", "unit %r is not one we use (protocols.senml.UNITS)" % unit)
        elif MEASUREMENTS.get(name) == unit:
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
        _names(records, names)
        _units(records, self.units[:count])
        _times(records, self.times[:count])
        _values(records, self.values[:count])
        if update is not None:
            seen = []
            for index in range(count - 1, -1, -1):
                if names[index] not in seen:
                    seen.append(names[index])
                    records[index][UT] = update
        return records


def _names(records, names) -> None:
    prefix = _common_prefix(names) if len(names) > 1 else ""
    # bn costs its label and text once; it saves len(prefix) in every record
    if prefix and 1 + text_size(prefix) < sum(text_size(n) - text_size(n[len(prefix):]) for n in names):
        records[0][BN] = prefix
    else:
        prefix = ""
    for index, name in enumerate(names):
        if name != prefix:
            records[index][N] = name[len(prefix):]


def _units(records, units) -> None:
    if len(records) > 1 and units[0] and all(unit == units[0] for unit in units):
        records[0][BU] = units[0]
        return
    for index, unit in enumerate(units):
        if unit:
            records[index][U] = unit


def _times(records, times) -> None:
    relative = [time < RELATIVE_LIMIT for time in times]
    base = 0
    if len(times) > 1 and all(flag == relative[0] for flag in relative):
        low, high = min(times), max(times)
        # the reading nearest the middle of the range makes the offsets smallest
        middle = low + (high - low) // 2
        candidate = min(times, key=lambda time: abs(time - middle))
        if 1 + int_size(candidate) + _offsets_cost(times, candidate) < _offsets_cost(times, 0):
            base = candidate
            records[0][BT] = base
    for index, time in enumerate(times):
        if time != base:
            records[index][T] = time - base


def _values(records, values) -> None:
    base = 0
    if len(values) > 1 and all(is_int(value) for value in values):
        middle = min(values) + (max(values) - min(values)) // 2
        plain = sum(int_size(value) for value in values)
        if 1 + int_size(middle) + sum(int_size(value - middle) for value in values) < plain:
            base = middle
            records[0][BV] = base
    for index, value in enumerate(values):
        records[index][V] = value - base if base else value
