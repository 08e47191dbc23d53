"""Topics: build, parse, QoS/retain table, and every way a topic is rejected (SPEC.md "Topics")."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import fleet_topics, topics
from protocols.errors import ProtocolError

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,15}\Z", fullmatch=True)


@given(ids, ids, st.sampled_from(sorted(topics.UP_TYPES)))
def test_up_topic_round_trips(fleet, device, kind):
    topic = topics.up(fleet, device, kind)
    assert str(topic) == f"dt/{fleet}/{device}/{kind}"
    assert topics.parse(str(topic)) == topic
    assert topics.parse(str(topic).encode()) == topic


def test_down_topic_fields():
    topic = topics.parse("cmd/city1/mh-0001/config")
    assert (topic.direction, topic.fleet, topic.device, topic.kind) == ("cmd", "city1", "mh-0001", "config")


@pytest.mark.parametrize(
    ("kind", "qos", "retain"),
    [("telemetry", 1, False), ("event", 1, False), ("health", 1, False), ("state", 1, True),
     ("ack", 1, False), ("ota", 1, False)],
)
def test_up_qos_and_retain(kind, qos, retain):
    topic = topics.up("city1", "wl-7", kind)
    assert (topic.qos, topic.retain) == (qos, retain)


@pytest.mark.parametrize(
    ("kind", "retain"),
    [("config", True), ("ping", False), ("reboot", False), ("ota", False), ("rebirth", False)],
)
def test_down_retain_only_for_config(kind, retain):
    topic = topics.down("city1", "wl-7", kind)
    assert (topic.qos, topic.retain) == (1, retain)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("up/city1/mh-1/telemetry", "bad_topic"),          # wrong prefix
        ("dt/city1/mh-1", "bad_topic"),                    # too few levels
        ("dt/city1/mh-1/telemetry/x", "bad_topic"),        # too many levels
        ("dt/city1/+/telemetry", "bad_topic"),             # wildcard
        ("dt/city1/mh-1/#", "bad_topic"),                  # wildcard
        ("dt/city1/MH-1/telemetry", "bad_id"),             # upper case
        ("dt/city1/mh 1/telemetry", "bad_id"),             # space
        ("dt/city1/-mh1/telemetry", "bad_id"),             # bad first character
        ("dt//mh-1/telemetry", "bad_id"),                  # empty fleet
        ("dt/city1/mh-1/config", "bad_type"),              # a down type on the up prefix
        ("cmd/city1/mh-1/telemetry", "bad_type"),          # an up type on the down prefix
        ("dt/city1/" + "a" * 33 + "/ack", "bad_id"),       # device id too long
        ("dt/" + "f" * 17 + "/mh-1/ack", "bad_id"),        # fleet id too long
        ("dt/city1/mh-1/" + "x" * 60, "bad_topic"),        # topic too long
        (b"dt/city1/\xff/ack", "bad_topic"),               # not UTF-8
        (42, "bad_topic"),
    ],
)
def test_bad_topics_are_rejected_with_a_reason(text, reason):
    with pytest.raises(ProtocolError) as caught:
        topics.parse(text)
    assert caught.value.reason == reason


def test_building_validates_too():
    with pytest.raises(ProtocolError, match="bad_type"):
        topics.up("city1", "mh-1", "reboot")
    with pytest.raises(ProtocolError, match="bad_id"):
        topics.down("city1", "mh/1", "ping")
    with pytest.raises(ProtocolError, match="bad_topic"):
        topics.Topic("xx", "city1", "mh-1", "ping")


def test_longest_valid_topic_fits_the_limit():
    topic = topics.down("f" * topics.FLEET_MAX, "d" * topics.DEVICE_MAX, "rebirth")
    assert topics.parse(str(topic)) == topic
    longest_up = topics.up("f" * topics.FLEET_MAX, "d" * topics.DEVICE_MAX, "telemetry")
    assert topics.parse(str(longest_up)) == longest_up


def test_subscription_filters():
    assert topics.device_filter("city1", "mh-1") == "cmd/city1/mh-1/+"
    assert fleet_topics.fleet_filter("city1") == "dt/city1/+/+"
    assert fleet_topics.fleet_filter("city1", "state") == "dt/city1/+/state"
    with pytest.raises(ProtocolError):
        fleet_topics.fleet_filter("city1", "config")
