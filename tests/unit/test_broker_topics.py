"""The topic scheme: formatting, parsing and refusals (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import (
    ALL_EVENTS_FILTER,
    DOCUMENTED_FILTERS,
    DOCUMENTED_TOPICS,
    EVENT_CHANNELS,
    MESH_PREFIX,
    MESH_UP_FILTER,
    PUBLIC_EVENTS_FILTER,
    BrokerError,
    TopicError,
    check_filter,
    event_topic,
    health_topic,
    mesh_topic,
    parse_event_topic,
    parse_health_topic,
    parse_mesh_topic,
)

pytestmark = pytest.mark.timeout(30)

origins = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def test_examples() -> None:
    assert event_topic("escamp-1", "public", "alert") == "bart/v1/escamp-1/public/alert"
    assert health_topic("n1") == "bart/v1/n1/health"
    assert PUBLIC_EVENTS_FILTER == "bart/v1/+/public/#"
    assert ALL_EVENTS_FILTER == "bart/v1/#"


def test_channels_follow_the_privacy_rule() -> None:
    assert set(EVENT_CHANNELS) == {
        ("public", "alert"), ("public", "ack"),
        ("private", "report"), ("private", "ack"), ("private", "status"),
    }
    with pytest.raises(TopicError, match="never travel"):
        event_topic("n1", "public", "report")
    with pytest.raises(TopicError):
        event_topic("n1", "public", "status")
    with pytest.raises(TopicError):
        parse_event_topic("bart/v1/n1/public/report")


@given(origin=origins, channel=st.sampled_from(EVENT_CHANNELS))
def test_round_trip(origin: str, channel: tuple[str, str]) -> None:
    stream, kind = channel
    topic = event_topic(origin, stream, kind)
    assert parse_event_topic(topic) == (origin, stream, kind)
    parts = topic.split("/")
    parts[2] = "{origin}"
    assert "/".join(parts) in DOCUMENTED_TOPICS
    assert parse_health_topic(health_topic(origin)) == origin


@pytest.mark.parametrize("origin", [
    "", "-a", "a-", "A", "n_1", "n.1", "n/1", "+", "#", "n 1", "ü", "a" * 64, "n1\n",
])
def test_bad_origins_refused(origin: str) -> None:
    with pytest.raises(TopicError):
        event_topic(origin, "public", "alert")
    with pytest.raises(TopicError):
        health_topic(origin)


def test_errors_are_value_errors_and_broker_errors() -> None:
    with pytest.raises(ValueError):
        event_topic("n1", "secret", "alert")
    with pytest.raises(BrokerError):
        event_topic("n1", "public", "panic")


@pytest.mark.parametrize("topic", [
    "bart/v1/n1/public", "bart/v1/n1/public/alert/x", "bart/v2/n1/public/alert",
    "bart/v1/+/public/alert", "bart/v1/n1/public/#", "/bart/v1/n1/public/alert",
    "bart/v1/n1/health", "", "bart/v1//public/alert", "Bart/v1/n1/public/alert",
])
def test_parse_refuses_everything_else(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_event_topic(topic)


@pytest.mark.parametrize("topic", ["bart/v1/n1/health/x", "bart/v1/+/health",
                                   "bart/v1/n1/public/alert", "bart/v1/N1/health"])
def test_parse_health_refuses(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_health_topic(topic)


@pytest.mark.parametrize("good", ["#", "a/#", "a/+/b", "+", "bart/v1/+/public/#"])
def test_filters_accepted(good: str) -> None:
    assert check_filter(good) == good


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "a/+b/c", "a\0b"])
def test_filters_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        check_filter(bad)


# -- mesh topics ------------------------------------------------------------------------

def test_mesh_examples() -> None:
    assert MESH_PREFIX == "bartmesh/v1"
    assert MESH_UP_FILTER == "bartmesh/v1/+/up" == mesh_topic("+", "up")
    assert mesh_topic("escamp-west", "up") == "bartmesh/v1/escamp-west/up"
    assert mesh_topic("escamp-west", "down") == "bartmesh/v1/escamp-west/down"
    assert parse_mesh_topic("bartmesh/v1/escamp-west/down") == ("escamp-west", "down")
    assert {"bartmesh/v1/{peer}/up", "bartmesh/v1/{peer}/down"} <= set(DOCUMENTED_TOPICS)
    assert MESH_UP_FILTER in DOCUMENTED_FILTERS


@given(peer=origins, direction=st.sampled_from(["up", "down"]))
def test_mesh_round_trip(peer: str, direction: str) -> None:
    assert parse_mesh_topic(mesh_topic(peer, direction)) == (peer, direction)


@pytest.mark.parametrize(("peer", "direction"), [
    ("escamp-west", "sideways"), ("escamp-west", "Up"), ("escamp-west", ""),
    ("#", "up"), ("a/b", "up"), ("%u", "up"), ("Escamp", "down"), ("", "up"),
])
def test_mesh_topic_refuses(peer: str, direction: str) -> None:
    with pytest.raises(TopicError):
        mesh_topic(peer, direction)


@pytest.mark.parametrize("topic", [
    "bartmesh/v1/+/up", "bartmesh/v1/#", "bartmesh/v1/n1", "bartmesh/v1/n1/up/x",
    "bartmesh/v2/n1/up", "bart/v1/n1/up", "bartmesh/v1/n1/left", "bartmesh/v1//up",
    "/bartmesh/v1/n1/up", "bartmesh/v1/N1/up", "bartmesh/v1/%u/up", "",
    "bart/v1/n1/public/alert",
])
def test_parse_mesh_refuses_everything_else(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_mesh_topic(topic)


def test_parse_mesh_refuses_non_text() -> None:
    with pytest.raises(TopicError):
        parse_mesh_topic(b"bartmesh/v1/n1/up")  # type: ignore[arg-type]


def test_event_parsers_refuse_mesh_topics() -> None:
    with pytest.raises(TopicError):
        parse_event_topic("bartmesh/v1/n1/up")
    with pytest.raises(TopicError):
        parse_health_topic("bartmesh/v1/n1/up")
