"""The MQTT topic scheme of a node's broker (pure; see ``docs/mqtt-topics.md``).

Every topic starts with :data:`PREFIX` so that a future incompatible scheme can
live next to this one (``bart/v2/…``). Events are published on::

    bart/v1/{origin}/{stream}/{kind}

where ``origin`` is the node (or ``central``) where the event happened, and
``stream``/``kind`` are those of the event itself. Which kind may travel on
which stream is the privacy rule of DESIGN.md §3, enforced here too: there is no
topic for a report on the public stream.

>>> event_topic("escamp-1", "public", "alert")
'bart/v1/escamp-1/public/alert'
>>> parse_event_topic("bart/v1/escamp-1/private/report")
('escamp-1', 'private', 'report')

Mesh sessions between nodes (``docs/mesh.md``) use a scheme of their own,
:data:`MESH_PREFIX`, on a node's mTLS mesh listener: a peer publishes to
``bartmesh/v1/{peer}/up`` and reads ``bartmesh/v1/{peer}/down``, where
``peer`` is its certificate's common name. Keeping it apart from ``bart/v1``
means no grant on one scheme ever covers the other.

>>> mesh_topic("escamp-west", "up")
'bartmesh/v1/escamp-west/up'
"""

from __future__ import annotations

import re
from typing import Final

from sync.bodies import KIND_STREAMS

from .errors import TopicError

PREFIX: Final = "bart/v1"
#: Every public event of every origin: what integrations may read.
PUBLIC_EVENTS_FILTER: Final = "bart/v1/+/public/#"
#: Everything of this scheme version: what node services read and write.
ALL_EVENTS_FILTER: Final = "bart/v1/#"
#: Health summaries of every node (retained).
HEALTH_FILTER: Final = "bart/v1/+/health"
#: Button presses of every point device of a node (the node subscribes).
POINT_PRESS_FILTER: Final = "bart/v1/+/points/+/press"
POINT_MESSAGES: Final = ("press", "state")
#: Node-to-node mesh documents; a scheme apart from the events' (see docs/mesh.md).
MESH_PREFIX: Final = "bartmesh/v1"
#: ``up``: peer -> this node; ``down``: this node -> peer.
MESH_DIRECTIONS: Final = ("up", "down")
#: What every peer publishes to this node (the node's service account subscribes).
MESH_UP_FILTER: Final = "bartmesh/v1/+/up"
#: Every mesh topic: what node services read and write on the local listener.
MESH_ALL_FILTER: Final = "bartmesh/v1/#"

STREAMS: Final = ("public", "private")
KINDS: Final = ("report", "alert", "ack", "status")
#: The (stream, kind) pairs that have a topic, in documentation order.
EVENT_CHANNELS: Final[tuple[tuple[str, str], ...]] = tuple(
    (stream, kind) for stream in STREAMS for kind in KINDS if stream in KIND_STREAMS[kind]
)

_SLUG: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

#: Every concrete topic pattern the scheme produces; each is documented in
#: ``docs/mqtt-topics.md`` (a unit test keeps the two in step).
DOCUMENTED_TOPICS: Final[tuple[str, ...]] = (
    *(f"{PREFIX}/{{origin}}/{stream}/{kind}" for stream, kind in EVENT_CHANNELS),
    f"{PREFIX}/{{node}}/health",
    f"{PREFIX}/{{node}}/points/{{point}}/press",
    f"{PREFIX}/{{node}}/points/{{point}}/state",
    *(f"{MESH_PREFIX}/{{peer}}/{direction}" for direction in MESH_DIRECTIONS),
)
#: Topic filters used in subscriptions and ACLs; documented as well.
DOCUMENTED_FILTERS: Final[tuple[str, ...]] = (
    ALL_EVENTS_FILTER,
    PUBLIC_EVENTS_FILTER,
    HEALTH_FILTER,
    POINT_PRESS_FILTER,
    MESH_ALL_FILTER,
    MESH_UP_FILTER,
)


def check_origin(origin: str) -> str:
    """Return ``origin`` if it is a valid node slug, else raise :class:`TopicError`.

    >>> check_origin("leidschenveen-2")
    'leidschenveen-2'
    """
    if not isinstance(origin, str) or not _SLUG.fullmatch(origin):
        raise TopicError(f"origin {origin!r} is not a slug of a-z, 0-9 and '-' (1-63 chars)")
    return origin


def _check_channel(stream: str, kind: str) -> None:
    if stream not in STREAMS:
        raise TopicError(f"stream {stream!r} must be one of {', '.join(STREAMS)}")
    if kind not in KINDS:
        raise TopicError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    if (stream, kind) not in EVENT_CHANNELS:
        raise TopicError(f"{kind} events never travel on the {stream} stream")


def event_topic(origin: str, stream: str, kind: str) -> str:
    """The topic an event of ``origin`` with ``stream`` and ``kind`` is published on.

    >>> event_topic("n1", "private", "status")
    'bart/v1/n1/private/status'
    """
    check_origin(origin)
    _check_channel(stream, kind)
    return f"{PREFIX}/{origin}/{stream}/{kind}"


def parse_event_topic(topic: str) -> tuple[str, str, str]:
    """Split an event topic into ``(origin, stream, kind)``; raise :class:`TopicError`.

    Anything that :func:`event_topic` would not produce is refused, including
    wildcards, extra levels and health topics.

    >>> parse_event_topic("bart/v1/n1/public/ack")
    ('n1', 'public', 'ack')
    """
    if not isinstance(topic, str):
        raise TopicError("a topic must be text")
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX:
        raise TopicError(f"{topic!r} is not an event topic ({PREFIX}/origin/stream/kind)")
    _, _, origin, stream, kind = parts
    check_origin(origin)
    _check_channel(stream, kind)
    return origin, stream, kind


def health_topic(node: str) -> str:
    """The retained topic carrying ``node``'s JSON health summary.

    >>> health_topic("n1")
    'bart/v1/n1/health'
    """
    check_origin(node)
    return f"{PREFIX}/{node}/health"


def parse_health_topic(topic: str) -> str:
    """The node of a health topic; raise :class:`TopicError` for anything else.

    >>> parse_health_topic("bart/v1/n1/health")
    'n1'
    """
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) != 4 or "/".join(parts[:2]) != PREFIX or parts[3] != "health":
        raise TopicError(f"{topic!r} is not a health topic ({PREFIX}/node/health)")
    return check_origin(parts[2])


def point_topic(node: str, point: str, message: str) -> str:
    """``bart/v1/{node}/points/{point}/{press|state}``; ``node`` may be ``+`` in ACLs."""
    if node != "+":
        check_origin(node)
    check_origin(point)
    if message not in POINT_MESSAGES:
        raise TopicError(f"point message must be one of {', '.join(POINT_MESSAGES)}")
    return f"{PREFIX}/{node}/points/{point}/{message}"


def parse_point_topic(topic: str) -> tuple[str, str, str]:
    """(node, point, message) of a point-device topic; raise TopicError otherwise."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != PREFIX or parts[3] != "points":
        raise TopicError(f"{topic!r} is not a point topic ({PREFIX}/node/points/point/…)")
    node, point, message = parts[2], parts[4], parts[5]
    check_origin(node)
    check_origin(point)
    if message not in POINT_MESSAGES:
        raise TopicError(f"{topic!r}: unknown point message {message!r}")
    return node, point, message


def mesh_topic(peer: str, direction: str) -> str:
    """``bartmesh/v1/{peer}/{up|down}``; ``peer`` may be ``+`` in filters.

    ``up`` carries a peer's documents to this node, ``down`` this node's to the peer.

    >>> mesh_topic("escamp-west", "down")
    'bartmesh/v1/escamp-west/down'
    >>> mesh_topic("+", "up") == MESH_UP_FILTER
    True
    """
    if peer != "+":
        check_origin(peer)
    if direction not in MESH_DIRECTIONS:
        raise TopicError(f"mesh direction must be one of {', '.join(MESH_DIRECTIONS)}")
    return f"{MESH_PREFIX}/{peer}/{direction}"


def parse_mesh_topic(topic: str) -> tuple[str, str]:
    """``(peer, direction)`` of a mesh topic; raise :class:`TopicError` for anything else.

    Strict like :func:`parse_event_topic`: wildcards, extra levels, other
    versions and event topics are refused.

    >>> parse_mesh_topic("bartmesh/v1/escamp-west/up")
    ('escamp-west', 'up')
    """
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) != 4 or "/".join(parts[:2]) != MESH_PREFIX:
        raise TopicError(f"{topic!r} is not a mesh topic ({MESH_PREFIX}/peer/up|down)")
    peer, direction = parts[2], parts[3]
    check_origin(peer)
    if direction not in MESH_DIRECTIONS:
        raise TopicError(f"{topic!r}: unknown mesh direction {direction!r}")
    return peer, direction
