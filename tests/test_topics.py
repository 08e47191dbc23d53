"""Topics: build, parse, QoS/retain table, and every way a topic is rejected (SPEC.md "Topics").

`protocols.topics` is the node's string builder; `protocols.topic` the checked value, also read through
`protocols.topics`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import fleet_topics, topic, topics
from protocols.errors import ProtocolError

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,15}\Z", fullmatch=True)


@given(ids, ids, st.sampled_from(sorted(topic.UP_TYPES)))
def test_up_topic_round_trips(fleet, device, kind):
    text = topics.up(fleet, device, kind)
    assert text == f"dt/{fleet}/{device}/{kind}"
    checked = topic.Topic(topic.UP, fleet, device, kind)
    assert topics.parse(text) == checked and str(checked) == text
    assert topics.parse(text.encode()) == checked


def test_the_rest_of_protocols_topic_reads_through_topics():
    for name in ("Topic", "parse", "down", "device_filter", "check_id", "FLEET_MAX", "DEVICE_MAX", "UP", "DOWN",
                 "UP_TYPES", "DOWN_TYPES"):
        assert getattr(topics, name) is getattr(topic, name)
    with pytest.raises(AttributeError):
        topics.nothing  # noqa: B018
    assert not hasattr(topics, "__path__")  # dunders are not looked up in protocols.topic


def test_down_topic_fields():
    parsed = topics.parse("cmd/city1/mh-0001/config")
    assert (parsed.direction, parsed.fleet, parsed.device, parsed.kind) == ("cmd", "city1", "mh-0001", "config")


@pytest.mark.parametrize(
    ("kind", "qos", "retain"),
    [("telemetry", 1, False), ("event", 1, False), ("health", 1, False), ("state", 1, True),
     ("ack", 1, False), ("ota", 1, False), ("pull", 1, False)],
)
def test_up_qos_and_retain(kind, qos, retain):
    checked = topics.parse(topics.up("city1", "wl-7", kind))
    assert (checked.qos, checked.retain) == (qos, retain)


@pytest.mark.parametrize(
    ("kind", "retain"),
    [("config", True), ("ping", False), ("reboot", False), ("ota", True), ("rebirth", False), ("chunk", False)],
)
def test_down_retain_only_for_config_and_the_ota_offer(kind, retain):
    checked = topics.down("city1", "wl-7", kind)
    assert (checked.qos, checked.retain) == (1, retain)


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
        topic.Topic(topic.UP, "city1", "mh-1", "reboot")
    with pytest.raises(ProtocolError, match="bad_id"):
        topics.down("city1", "mh/1", "ping")
    with pytest.raises(ProtocolError, match="bad_topic"):
        topic.Topic("xx", "city1", "mh-1", "ping")


def test_longest_valid_topic_fits_the_limit():
    longest_down = topic.down("f" * topic.FLEET_MAX, "d" * topic.DEVICE_MAX, "rebirth")
    assert topics.parse(str(longest_down)) == longest_down
    longest_up = topics.up("f" * topic.FLEET_MAX, "d" * topic.DEVICE_MAX, "telemetry")
    assert str(topics.parse(longest_up)) == longest_up


def test_subscription_filters():
    assert topics.device_filter("city1", "mh-1") == "cmd/city1/mh-1/+"
    assert fleet_topics.fleet_filter("city1") == "dt/city1/+/+"
    assert fleet_topics.fleet_filter("city1", "state") == "dt/city1/+/state"
    with pytest.raises(ProtocolError):
        fleet_topics.fleet_filter("city1", "config")
