"""The fleet's side of SenML (RFC 8428): checks of a received pack and its resolver (RFC 8428 §4.6).

Apart from `protocols.senml` because a node only builds packs: it never imports this module, so the
checks and the resolver cost it no heap.
"""

from protocols.errors import ProtocolError
from protocols.fields import RELATIVE_LIMIT, is_int, is_number
from protocols.limits import MAX_RECORDS, MAX_TEXT
from protocols.senml import BN, BS, BT, BU, BV, BVER, UT, VB, VD, VS, N, S, T, U, V, check_name

#: label -> JSON name, for the JSON form (bench, SPEC examples).
LABELS = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs", N: "n", U: "u",
          V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd"}

#: Secondary units of `protocols.senml.UNITS` (RFC 8798 §3): name -> (primary unit, factor to it).
SECONDARY = {"mm": ("m", 0.001), "cm": ("m", 0.01), "km/h": ("m/s", 1 / 3.6), "hPa": ("Pa", 100),
             "mV": ("V", 0.001), "ms": ("s", 0.001)}

_VALUES = (V, VS, VB, VD)


class Record:
    """One resolved record: absolute name and time, unit (or None), one value and/or a sum."""

    __slots__ = ("name", "time", "unit", "value", "sum", "update")

    def __init__(self, name, time, unit=None, value=None, sum=None, update=None):
        self.name = name
        self.time = time
        self.unit = unit
        self.value = value
        self.sum = sum
        self.update = update

    def as_dict(self) -> dict:
        """The record as a dict with the SenML JSON names of the fields that are present."""
        out = {"n": self.name, "t": self.time}
        for key, item in (("u", self.unit), ("v", self.value), ("s", self.sum), ("ut", self.update)):
            if item is not None:
                out[key] = item
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, Record) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "Record(%r)" % (self.as_dict(),)


def to_primary(value, unit):
    """(value, unit) converted to the primary unit when `unit` is a secondary unit we know."""
    entry = SECONDARY.get(unit)
    if entry is None:
        return value, unit
    return value * entry[1], entry[0]


def _text(value, label):
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ProtocolError("senml_field", "%s must be text of at most %d characters" % (LABELS[label], MAX_TEXT))
    return value


def _num(value, label):
    if not is_number(value):
        raise ProtocolError("senml_field", "%s must be a finite number, not %r" % (LABELS[label], value))
    return value


_CHECKS = {BN: _text, BU: _text, N: _text, U: _text, VS: _text, BT: _num, BV: _num, BS: _num,
           V: _num, S: _num, T: _num, UT: _num}


def _check_record(record) -> None:
    if not isinstance(record, dict):
        raise ProtocolError("senml_record", "a SenML record must be a map")
    for key, value in record.items():
        if isinstance(key, str):
            # RFC 8428 §12.2: a label ending in "_" must be understood; we understand none.
            if key.endswith("_"):
                raise ProtocolError("senml_must_understand", "unsupported label %r" % key)
            continue
        check = _CHECKS.get(key)
        if check is not None:
            check(value, key)
        elif key == VB and not isinstance(value, bool):
            raise ProtocolError("senml_field", "vb must be true or false")
        elif key == VD and not isinstance(value, (bytes, bytearray)):
            raise ProtocolError("senml_field", "vd must be a byte string")
        elif key == BVER and (not is_int(value) or value < 1):
            raise ProtocolError("senml_field", "bver must be a positive integer")
    if UT in record and record[UT] < 0:
        raise ProtocolError("senml_field", "ut must not be negative")


def _value_of(record, base_value):
    found = [key for key in _VALUES if key in record]
    if len(found) > 1:
        raise ProtocolError("senml_value", "a record has one value field, this one has %d" % len(found))
    if not found:
        if S not in record:
            raise ProtocolError("senml_value", "a record needs a value or a sum")
        return None
    if found[0] == V and base_value is not None:
        return base_value + record[V]
    return record[found[0]]


def check_pack(pack) -> list:
    """Return `pack` if it is a well-formed pack of 1..MAX_RECORDS records, else raise ProtocolError."""
    if not isinstance(pack, list) or not pack:
        raise ProtocolError("senml_pack", "a SenML pack is a non-empty array of records")
    if len(pack) > MAX_RECORDS:
        raise ProtocolError("senml_pack", "%d records exceed the limit of %d" % (len(pack), MAX_RECORDS))
    base_name = ""
    for record in pack:
        _check_record(record)
        base_name = record.get(BN, base_name)
        check_name(base_name + record.get(N, ""))
        _value_of(record, None)
    return pack


def resolve(pack, now, units=None) -> list:
    """Resolve a pack into a list of `Record` as RFC 8428 §4.6 says.

    Base fields apply to their record and all later ones until overridden; name = base name + name;
    time = base time + time, and a result below 2**28 is relative to `now` (the receiver's clock, in
    seconds since the epoch); value = base value + value; sum = base sum + sum; a missing unit is the base
    unit, else (our profile, SPEC.md) `units.get(name)` when a catalogue is given.
    """
    check_pack(pack)
    base_name, base_time, base_unit, base_value, base_sum = "", 0, None, None, None
    out = []
    for record in pack:
        base_name = record.get(BN, base_name)
        base_time = record.get(BT, base_time)
        base_unit = record.get(BU, base_unit)
        base_value = record.get(BV, base_value)
        base_sum = record.get(BS, base_sum)
        name = check_name(base_name + record.get(N, ""))
        time = base_time + record.get(T, 0)
        if time < RELATIVE_LIMIT:
            time += now
        unit = record.get(U, base_unit)
        if unit is None and units is not None:
            unit = units.get(name)
        total = record.get(S)
        if total is not None and base_sum is not None:
            total += base_sum
        out.append(Record(name, time, unit, _value_of(record, base_value), total, record.get(UT)))
    return out
