"""SenML: the RFC 8428 §4.6 resolver and the device-side compact pack builder (SPEC.md "Telemetry")."""

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import senml, senml_pack, senml_resolve
from protocols.errors import ProtocolError
from protocols.senml import BN, BS, BT, BU, BV, BVER, UT, VB, VD, VS, N, S, T, U, V
from protocols.senml_pack import PackBuilder, int_size

NOW = 1_732_850_000


def test_base_fields_apply_to_later_records_until_overridden():
    pack = [
        {BN: "urn:dev:x:", BT: NOW, BU: "m", BV: 100, N: "a", V: 1},
        {N: "b", V: 2, T: 10, U: "mm"},
        {BN: "y:", BT: NOW + 100, BV: 0, N: "c", V: 3},
        {N: "d", VS: "on", T: -5},
    ]
    records = senml_resolve.resolve(pack, now=0)
    assert [r.as_dict() for r in records] == [
        {"n": "urn:dev:x:a", "t": NOW, "u": "m", "v": 101},
        {"n": "urn:dev:x:b", "t": NOW + 10, "u": "mm", "v": 102},
        {"n": "y:c", "t": NOW + 100, "u": "m", "v": 3},
        {"n": "y:d", "t": NOW + 95, "u": "m", "v": "on"},
    ]


def test_times_below_2_pow_28_are_relative_to_now():
    pack = [{N: "tilt", V: 1.5, T: -30}, {N: "tilt", V: 2.0}, {N: "tilt", V: 3, T: 2**28}]
    times = [r.time for r in senml_resolve.resolve(pack, now=NOW)]
    assert times == [NOW - 30, NOW, 2**28]
    # a relative base time stays relative after adding the record's offset
    assert senml_resolve.resolve([{BT: -600, N: "a", V: 1, T: 60}], now=NOW)[0].time == NOW - 540


def test_sums_values_of_every_kind_and_update_time():
    pack = [{BN: "p", BS: 10, N: "e", S: 5, UT: 300}, {N: "f", VB: True}, {N: "g", VD: b"\x01"}]
    records = senml_resolve.resolve(pack, now=NOW)
    assert (records[0].sum, records[0].value, records[0].update) == (15, None, 300)
    assert records[1].value is True and records[2].value == b"\x01"


def test_catalogue_unit_only_when_asked_and_never_over_a_sent_unit():
    pack = [{N: "level", V: 12}, {N: "level", U: "cm", V: 1}, {N: "other", V: 1}]
    assert [r.unit for r in senml_resolve.resolve(pack, NOW)] == [None, "cm", None]
    assert [r.unit for r in senml_resolve.resolve(pack, NOW, senml.MEASUREMENTS)] == ["mm", "cm", None]


@pytest.mark.parametrize(
    ("pack", "reason"),
    [
        ([], "senml_pack"),
        ({N: "a", V: 1}, "senml_pack"),
        ([{N: "a", V: 1}] * 65, "senml_pack"),
        ([[1, 2]], "senml_record"),
        ([{N: "a"}], "senml_value"),
        ([{N: "a", V: 1, VS: "x"}], "senml_value"),
        ([{N: "a", V: "1"}], "senml_field"),
        ([{N: "a", V: float("nan")}], "senml_field"),
        ([{N: "a", V: True}], "senml_field"),
        ([{N: "a", VB: 1}], "senml_field"),
        ([{N: "a", VD: "text"}], "senml_field"),
        ([{N: 5, V: 1}], "senml_field"),
        ([{N: "a", V: 1, UT: -1}], "senml_field"),
        ([{BVER: 0, N: "a", V: 1}], "senml_field"),
        ([{N: "a", V: 1, "crit_": 1}], "senml_must_understand"),
        ([{V: 1}], "senml_name"),
        ([{N: "-a", V: 1}], "senml_name"),
        ([{N: "a b", V: 1}], "senml_name"),
    ],
)
def test_broken_packs_are_rejected(pack, reason):
    with pytest.raises(ProtocolError) as caught:
        senml_resolve.resolve(pack, NOW)
    assert caught.value.reason == reason


def test_unknown_labels_that_need_not_be_understood_are_ignored():
    records = senml_resolve.resolve([{N: "a", V: 1, "note": "x", 99: 1}], NOW)
    assert records[0].as_dict() == {"n": "a", "t": NOW, "v": 1}


def test_secondary_units_convert_to_primary():
    assert senml_resolve.to_primary(412, "mm") == (pytest.approx(0.412), "m")
    assert senml_resolve.to_primary(3.5, "m/s") == (3.5, "m/s")
    assert senml_resolve.to_primary(1, "furlong") == (1, "furlong")


def test_cbor_sizes_match_cbor2():
    for value in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -1, -24, -25, -256, -257, -(2**32)):
        assert int_size(value) == len(cbor2.dumps(value))


def test_one_reading_has_no_base_fields():
    builder = PackBuilder(4)
    builder.add("tilt", 2.5, NOW)
    assert builder.pack() == [{N: "tilt", V: 2.5, T: NOW}]


def test_backfill_uses_base_name_time_and_value_when_they_save_bytes():
    builder = PackBuilder(16)
    for index in range(10):
        builder.add("level", 412 + index, NOW + 60 * index)
    pack = builder.pack()
    first = pack[0]
    assert first[BN] == "level" and BT in first and BV in first
    assert all(N not in record for record in pack)
    assert len(cbor2.dumps(pack)) < len(cbor2.dumps([{N: "level", V: 412 + i, T: NOW + 60 * i} for i in range(10)]))


def test_units_are_sent_only_off_catalogue_and_once_as_base_unit():
    builder = PackBuilder(4)
    builder.add("bat", 3.7, NOW, unit="V")
    builder.add("bat", 3.6, NOW + 60, unit="V")
    builder.add("tilt", 1.0, NOW + 60, unit="deg")
    pack = builder.pack()
    assert BU not in pack[0] and [r.get(U) for r in pack] == ["V", "V", None]
    builder.clear()
    builder.add("bat", 3.7, NOW, unit="V")
    builder.add("bat", 3.6, NOW + 60, unit="V")
    assert builder.pack()[0][BU] == "V"


def test_update_time_goes_on_the_last_record_of_each_name():
    builder = PackBuilder(4)
    for name in ("wind", "load", "wind", "load"):
        builder.add(name, 1, NOW)
    pack = builder.pack(update=900)
    assert [record.get(UT) for record in pack] == [None, None, 900, 900]


def test_builder_rejects_what_would_put_a_wrong_type_on_the_wire():
    """The node's builder checks types, not names or units: those are the agent's constants, checked by
    tests/test_agent_reporter.py, and the fleet checks every received pack in full."""
    builder = PackBuilder(1)
    for args, kwargs in (
        (("bat", 3.7, NOW), {}),                 # off catalogue without a unit
        (("tilt", "1", NOW), {}),
        (("tilt", True, NOW), {}),
        (("tilt", float("nan"), NOW), {}),
        (("tilt", float("inf"), NOW), {}),
        (("tilt", 1.0, NOW + 0.5), {}),
        (("tilt", 1.0, True), {}),
    ):
        with pytest.raises(ProtocolError):
            builder.add(*args, **kwargs)
    builder.add("tilt", 1.0, NOW)
    with pytest.raises(ProtocolError, match="pack_full"):
        builder.add("tilt", 1.0, NOW)
    for capacity in (0, 65):
        with pytest.raises(ProtocolError):
            PackBuilder(capacity)
    with pytest.raises(ProtocolError):
        PackBuilder(1).pack()


def test_the_catalogue_is_one_table():
    assert senml.MEASUREMENTS is senml_pack.MEASUREMENTS
    assert set(senml.MEASUREMENTS.values()) <= set(senml.UNITS)


def test_a_catalogue_unit_is_left_out_and_others_kept():
    builder = PackBuilder(4)
    builder.add("tilt", 1.5, NOW, unit="deg")
    builder.add("tilt", 2.5, NOW + 60, unit="rad")
    assert builder.pack() == [{BN: "tilt", BT: NOW, V: 1.5}, {U: "rad", V: 2.5, T: 60}]


readings = st.lists(
    st.tuples(
        st.sampled_from(["tilt", "level", "load", "wind"]),
        st.one_of(st.integers(-(2**31), 2**31), st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 2))),
        st.integers(0, 600),
    ),
    min_size=1,
    max_size=20,
)


@given(readings, st.booleans())
def test_resolving_a_built_pack_gives_back_every_reading(items, absolute):
    """Whatever the builder compresses, RFC 8428 resolution restores exactly (name, time, unit, value)."""
    builder = PackBuilder(32)
    for name, value, age in items:
        builder.add(name, value, NOW - age if absolute else -age)
    pack = cbor2.loads(cbor2.dumps(builder.pack()))
    got = [(r.name, r.time, r.unit, r.value) for r in senml_resolve.resolve(pack, NOW + 5, senml.MEASUREMENTS)]
    want = [(n, (NOW - a) if absolute else NOW + 5 - a, senml.MEASUREMENTS[n], v) for n, v, a in items]
    assert got == want
