"""fleet.health.evaluate: every state, every reason, the per-device stale rule and what is critical."""

from __future__ import annotations

from typing import Any

import pytest

from agent.defaults import HEARTBEAT_S
from fleet.health import (
    DEGRADED,
    HEALTHY,
    NEVER_SEEN,
    OFFLINE,
    STALE,
    evaluate,
    heartbeat_of,
    human_duration,
    parse_registry_time,
)
from fleet.store.model import DeviceStatus, Gap

NOW = 1_750_000_000.0
HOUR = 3600.0


def iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(state: str = "active", identity_at: float | None = NOW - 2 * HOUR, created: float = NOW - 3 * HOUR,
           config: dict[str, Any] | None = None) -> dict[str, Any]:
    history = [{"at": iso(created), "action": "registered", "detail": ""}]
    if identity_at is not None:
        history.append({"at": iso(identity_at), "action": "identity written", "detail": {}})
    return {"id": "wl-1", "kind": "water-level", "site": "Quay 3", "state": state, "created": iso(created),
            "history": history, "config": config}


def status(**changes: Any) -> DeviceStatus:
    base: dict[str, Any] = dict(
        device="wl-1", first_seen=NOW - 5 * HOUR, last_seen=NOW - 60, boot=12, online=True, offline_at=None,
        firmware="1.4.2", config_version=0, reset_cause=1, sensor="water", ut={"level": 900, "rise": 900},
        health={"uptime": 3600, "heap": 40000, "heap_low": 30000, "battery": 3900, "outbox": 0},
        health_at=NOW - 300, births_24h=1, outbox_trend=[0, 0, 0, 0])
    base.update(changes)
    return DeviceStatus(**base)


def codes(assessment) -> list[str]:
    return [r.code for r in assessment.reasons]


def test_healthy_device_has_no_reasons_and_is_not_critical():
    got = evaluate(record(), status(), [], NOW)
    assert (got.state, got.reasons, got.critical, got.heartbeat) == (HEALTHY, (), False, 900)


@pytest.mark.parametrize("changes, code, fragment", [
    ({"health": {"uptime": 1, "battery": 3399}}, "low_battery", "3399 mV"),
    ({"health": {"uptime": 1, "heap_low": 8191}}, "low_heap", "8191 B"),
    ({"outbox_trend": [1, 2, 5, 9]}, "outbox_growing", "1 -> 2 -> 5 -> 9"),
    ({"health": {"uptime": 1, "fault": "echo_timeout"}}, "sensor_fault", "echo_timeout"),
    ({"births_24h": 3}, "resets", "3 boots"),
])
def test_each_degradation_alone_makes_the_device_degraded_not_critical(changes, code, fragment):
    got = evaluate(record(), status(**changes), [], NOW)
    assert got.state == DEGRADED and not got.critical
    assert codes(got) == [code]
    assert fragment in got.reasons[0].text


@pytest.mark.parametrize("changes", [
    {"health": {"uptime": 1, "battery": 3400, "heap_low": 8192}},  # thresholds are strict
    {"outbox_trend": [1, 2, 2, 3]},  # not strictly rising
    {"outbox_trend": [1, 2, 3]},  # fewer than 4 reports
    {"births_24h": 2},
    {"health": None},  # no health report yet
])
def test_values_at_or_inside_the_limits_stay_healthy(changes):
    got = evaluate(record(), status(**changes), [], NOW)
    assert (got.state, got.reasons) == (HEALTHY, ())


def test_a_longer_outbox_trend_is_judged_on_its_last_four():
    assert codes(evaluate(record(), status(outbox_trend=[9, 1, 2, 3, 4]), [], NOW)) == ["outbox_growing"]
    assert codes(evaluate(record(), status(outbox_trend=[1, 2, 3, 4, 4]), [], NOW)) == []


def test_all_degradations_are_listed_in_a_fixed_order():
    st = status(health={"uptime": 1, "battery": 3300, "heap_low": 4000, "fault": "i2c_nack"},
                outbox_trend=[3, 4, 5, 6], births_24h=5)
    assert codes(evaluate(record(), st, [], NOW)) == [
        "low_battery", "low_heap", "outbox_growing", "sensor_fault", "resets"]


def faulty(count: int, before: int | None, fault: str = "echo_timeout") -> DeviceStatus:
    """A status whose last health names `fault`, counted `count` times; the previous report counted it
    `before` times (None: no counter for it)."""
    health = {"uptime": 7200, "battery": 3900, "errors": {"wifi": 1, fault: count}, "fault": fault}
    counters = {"wifi": 1} if before is None else {"wifi": 1, fault: before}
    return status(health=health, previous_health={"uptime": 6900, "errors": counters})


def test_a_sensor_fault_not_counted_since_the_previous_report_is_a_note_not_a_degradation():
    got = evaluate(record(), faulty(1, 1, fault="load_timeout"), [], NOW)
    assert (got.state, codes(got), got.critical) == (HEALTHY, ["earlier_sensor_fault"], False)
    assert got.reasons[0].text == "sensor fault load_timeout last seen earlier in this boot (1 time)"
    # the previous report may already have named the fault: only its counter matters
    named = faulty(3, 3, fault="load_timeout")
    assert named.previous_health is not None
    named.previous_health["fault"] = "load_timeout"
    again = evaluate(record(), named, [], NOW)
    assert (again.state, codes(again)) == (HEALTHY, ["earlier_sensor_fault"])
    assert "(3 times)" in again.reasons[0].text


def test_a_sensor_fault_counted_since_the_previous_report_degrades():
    got = evaluate(record(), faulty(4, 1), [], NOW)
    assert (got.state, codes(got), got.critical) == (DEGRADED, ["sensor_fault"], False)
    assert got.reasons[0].text == "sensor fault echo_timeout since its previous health report (count 1 -> 4)"
    # not counted in the previous report (its first since boot): counted from 0
    assert codes(evaluate(record(), faulty(1, None), [], NOW)) == ["sensor_fault"]


def test_a_sensor_fault_in_the_first_health_report_of_a_boot_degrades():
    st = status(health={"uptime": 60, "errors": {"load_timeout": 1}, "fault": "load_timeout"}, previous_health=None)
    got = evaluate(record(), st, [], NOW)
    assert (got.state, codes(got)) == (DEGRADED, ["sensor_fault"])
    assert "first health report of this boot" in got.reasons[0].text


def test_a_sensor_fault_without_its_counter_degrades_as_it_cannot_be_told_old():
    # the agent sends at most 8 counters: the fault's own may be missing, in both reports alike
    full = {"c%d" % i: 5 for i in range(8)}
    st = status(health={"uptime": 7200, "errors": full, "fault": "echo_timeout"},
                previous_health={"uptime": 6900, "errors": full})
    got = evaluate(record(), st, [], NOW)
    assert (got.state, codes(got)) == (DEGRADED, ["sensor_fault"])
    assert "no error counter" in got.reasons[0].text
    no_counters = status(health={"uptime": 7200, "fault": "echo_timeout"}, previous_health={"uptime": 6900})
    assert codes(evaluate(record(), no_counters, [], NOW)) == ["sensor_fault"]


def test_safe_mode_degrades_all_boot_though_counted_once():
    got = evaluate(record(), faulty(1, 1, fault="safe_mode"), [], NOW)
    assert (got.state, codes(got)) == (DEGRADED, ["sensor_fault"])
    assert "safe_mode" in got.reasons[0].text


def test_the_earlier_fault_note_follows_the_reasons_of_any_state():
    st = faulty(2, 2)
    st.online, st.offline_at, st.health = False, NOW - 90, {**(st.health or {}), "battery": 3000}
    assert codes(evaluate(None, st, [], NOW)) == ["offline", "low_battery", "earlier_sensor_fault", "unregistered"]


def test_stale_is_judged_against_twice_the_smallest_declared_ut():
    st = status(ut={"level": 60, "rise": 900})
    assert heartbeat_of(None, st) == 60
    assert evaluate(record(), status(ut={"level": 60, "rise": 900}, last_seen=NOW - 120), [], NOW).state == HEALTHY
    got = evaluate(record(), status(ut={"level": 60, "rise": 900}, last_seen=NOW - 121), [], NOW)
    assert (got.state, got.critical, codes(got)) == (STALE, True, ["stale"])
    assert "2m" in got.reasons[0].text and "heartbeat 60 s" in got.reasons[0].text


def test_the_same_silence_is_stale_for_one_device_and_fine_for_a_sleeper():
    silent = NOW - 1000
    chatty = evaluate(record(), status(ut={"tilt": 300}, last_seen=silent), [], NOW)
    sleeper = evaluate(record(), status(ut={"level": 3600}, last_seen=silent), [], NOW)
    assert (chatty.state, sleeper.state) == (STALE, HEALTHY)


def test_without_declared_ut_the_desired_config_then_the_firmware_default_applies():
    assert heartbeat_of(record(), status(ut={})) == HEARTBEAT_S
    desired = record(config={"version": 2, "doc": {"5": 120}, "sent_at": iso(NOW)})
    assert heartbeat_of(desired, status(ut={})) == 120
    assert evaluate(desired, status(ut={}, last_seen=NOW - 241), [], NOW).state == STALE
    assert evaluate(record(), status(ut={}, last_seen=NOW - 241), [], NOW).state == HEALTHY
    assert evaluate(record(), status(ut={}, last_seen=NOW - 2 * HEARTBEAT_S - 1), [], NOW).state == STALE
    # what the device declared wins over what the fleet asked for but the device may not have applied yet
    assert heartbeat_of(desired, status(ut={"level": 600})) == 600


def test_offline_when_the_will_of_the_current_boot_came_and_it_lists_degradations_too():
    st = status(online=False, offline_at=NOW - 90, last_seen=NOW - 90, health={"uptime": 5, "battery": 3000})
    got = evaluate(record(), st, [], NOW)
    assert (got.state, got.critical, codes(got)) == (OFFLINE, True, ["offline", "low_battery"])
    assert "boot 12" in got.reasons[0].text and "1m ago" in got.reasons[0].text


def test_offline_wins_over_stale():
    st = status(online=False, offline_at=NOW - 10 * HOUR, last_seen=NOW - 10 * HOUR)
    assert evaluate(record(), st, [], NOW).state == OFFLINE


def test_seen_without_a_birth_yet_is_judged_by_its_silence():
    assert evaluate(record(), status(online=None), [], NOW).state == HEALTHY
    assert evaluate(record(), status(online=None, last_seen=NOW - 3 * HOUR), [], NOW).state == STALE


def test_never_seen_is_critical_only_an_hour_after_the_identity_was_written():
    old = evaluate(record(identity_at=NOW - HOUR - 1), None, [], NOW)
    fresh = evaluate(record(identity_at=NOW - HOUR + 60), None, [], NOW)
    assert (old.state, old.critical, codes(old)) == (NEVER_SEEN, True, ["never_seen"])
    assert (fresh.state, fresh.critical) == (NEVER_SEEN, False)
    # no "identity written" entry: the record's creation time counts
    assert evaluate(record(identity_at=None, created=NOW - 2 * HOUR), None, [], NOW).critical
    assert not evaluate(record(identity_at=None, created=NOW - 60), None, [], NOW).critical
    # a status row without any message counts as never seen as well
    assert evaluate(record(), status(last_seen=None), [], NOW).state == NEVER_SEEN


@pytest.mark.parametrize("state", ["provisioning", "retired"])
def test_never_seen_is_not_critical_for_a_board_without_its_identity_or_retired(state):
    got = evaluate(record(state=state, identity_at=NOW - 10 * HOUR), None, [], NOW)
    assert (got.state, got.critical) == (NEVER_SEEN, False)


def test_a_seen_but_unregistered_device_says_so():
    got = evaluate(None, status(), [], NOW)
    assert (got.state, codes(got), got.critical) == (HEALTHY, ["unregistered"], False)
    assert evaluate(None, None, [], NOW).critical is False
    stale = evaluate(None, status(last_seen=NOW - 10 * HOUR), [], NOW)
    assert (stale.state, codes(stale), stale.critical) == (STALE, ["stale", "unregistered"], True)


def test_gaps_of_the_current_boot_are_counted_and_never_change_the_state():
    gaps = [Gap("wl-1", 12, 40, 42), Gap("wl-1", 12, 50, 50), Gap("wl-1", 11, 1, 100), Gap("mh-9", 12, 1, 9)]
    got = evaluate(record(), status(), gaps, NOW)
    assert (got.state, got.missing) == (HEALTHY, 4)


def test_helpers():
    assert [human_duration(s) for s in (-5, 45, 600, 7500, 3 * 86400 + 4 * 3600)] == [
        "0s", "45s", "10m", "2h05m", "3d04h"]
    assert parse_registry_time("2025-01-31T12:00:00Z") == 1738324800.0
    assert parse_registry_time("2025-01-31T12:00:00") == 1738324800.0
    assert parse_registry_time("yesterday") is None and parse_registry_time(None) is None


def test_fleet_health_gives_each_device_its_own_gaps():
    from fleet.cli.health import fleet_health

    records = [record(), {**record(), "id": "wl-2"}]
    statuses = [status(), status(device="wl-2", boot=3)]
    gaps = [Gap("wl-2", 3, 4, 4), Gap("wl-1", 12, 5, 7), Gap("wl-2", 12, 1, 1), Gap("wl-1", 11, 1, 9)]
    rows = fleet_health(records, statuses, gaps, NOW)
    assert [(r["id"], r["state"], r["missing"]) for r in rows] == [("wl-1", HEALTHY, 3), ("wl-2", HEALTHY, 1)]


def test_health_json_is_one_document_with_one_device_per_line():
    import json

    from fleet.cli.health import json_document

    head = {"time": NOW, "critical": 0, "counts": {"healthy": 2}}
    rows = [{"id": "wl-1", "reasons": [{"code": "x", "text": "a \"quoted\"\nline"}]}, {"id": "wl-2", "reasons": []}]
    text = json_document(head, rows)
    assert json.loads(text) == {**head, "devices": rows}
    assert [json.loads(line.rstrip(",")) for line in text.splitlines() if line.startswith('  {"id"')] == rows
    assert json.loads(json_document(head, [])) == {**head, "devices": []}
