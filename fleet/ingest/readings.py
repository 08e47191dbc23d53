"""A telemetry pack -> the store's Reading rows, resolved once (RFC 8428 §4.6, SPEC.md "Telemetry").

`protocols.read_up.telemetry` has checked the whole pack (`senml_resolve.check_pack`) by the time this
runs. `Telemetry.records()` would check it a second time and build a `Record` per reading on the way to a
`Reading`; the ingest does this for every message, so here is the same resolution as
`senml_resolve.resolve` (with the catalogue's units) without the second check, straight into rows.
tests/test_ingest_decode.py holds the two to the same result on every vector and on generated packs.
"""

from __future__ import annotations

from typing import Any

from fleet.store.model import HISTORICAL_AFTER_S, Reading
from protocols.fields import RELATIVE_LIMIT
from protocols.senml import BN, BS, BT, BU, BV, MEASUREMENTS, UT, VB, VD, VS, N, S, T, U, V


def resolve(device: str, boot: int, seq: int, pack: list[dict[int, Any]], received: float,
            readings: list[Reading], ut: dict[str, int]) -> None:
    """Append the readings of a checked `pack` that arrived at `received` to `readings`; the last
    heartbeat (`ut`) given for each name goes into `ut`."""
    base_name, base_time, base_unit, base_value, base_sum = "", 0, None, None, None
    historical = received - HISTORICAL_AFTER_S
    for record in pack:
        get = record.get
        base_name = get(BN, base_name)
        base_time = get(BT, base_time)
        base_unit = get(BU, base_unit)
        base_value = get(BV, base_value)
        base_sum = get(BS, base_sum)
        name = base_name + get(N, "")
        time = base_time + get(T, 0)
        if time < RELATIVE_LIMIT:  # relative to the moment of receipt (RFC 8428 §4.5.3)
            time += received
        unit = get(U, base_unit)
        if unit is None:
            unit = MEASUREMENTS.get(name)
        readings.append(Reading(device, name, float(time), _value(record, base_value, base_sum), unit, boot, seq,
                                received, time < historical))
        if UT in record:
            ut[name] = int(record[UT])


def _value(record: dict[int, Any], base_value: Any, base_sum: Any) -> Any:
    # check_pack let through exactly one of v/vs/vb/vd, or none and a sum
    if V in record:
        return record[V] if base_value is None else base_value + record[V]
    if VS in record:
        return record[VS]
    if VB in record:
        return record[VB]
    if VD in record:
        return bytes(record[VD]).hex()  # SenML vd: kept readable, the store has no byte column
    total = record[S]
    return total if base_sum is None else total + base_sum
