"""The node's Mosquitto: topic scheme, configuration, process supervision, MQTT client.

Pure parts (:mod:`.topics`, :mod:`.config`, :mod:`.probe` packet builders) take
and return values; :mod:`.process` runs the broker and :mod:`.client` talks to
it from asyncio. See ``docs/mqtt-topics.md`` for every topic and who may use it.
"""

from .client import Handler, MqttClient, check_filter
from .config import (
    AUTOSAVE_INTERVAL,
    BrokerSettings,
    MqttUser,
    hash_password,
    passwd_matches,
    render_acl,
    render_config,
    render_mesh_acl,
    render_passwd,
    write_files,
)
from .errors import BrokerError, BrokerStartError, ConfigError, PublishError, TopicError
from .probe import ProbeError, probe
from .process import DB_MAGIC, BrokerProcess, db_is_valid
from .topics import (
    ALL_EVENTS_FILTER,
    DOCUMENTED_FILTERS,
    DOCUMENTED_TOPICS,
    EVENT_CHANNELS,
    HEALTH_FILTER,
    MESH_ALL_FILTER,
    MESH_PREFIX,
    MESH_UP_FILTER,
    POINT_PRESS_FILTER,
    PREFIX,
    PUBLIC_EVENTS_FILTER,
    check_origin,
    event_topic,
    health_topic,
    mesh_topic,
    parse_event_topic,
    parse_health_topic,
    parse_mesh_topic,
    parse_point_topic,
    point_topic,
)

__all__ = [
    "ALL_EVENTS_FILTER",
    "AUTOSAVE_INTERVAL",
    "DB_MAGIC",
    "DOCUMENTED_FILTERS",
    "DOCUMENTED_TOPICS",
    "EVENT_CHANNELS",
    "HEALTH_FILTER",
    "MESH_ALL_FILTER",
    "MESH_PREFIX",
    "MESH_UP_FILTER",
    "POINT_PRESS_FILTER",
    "PREFIX",
    "PUBLIC_EVENTS_FILTER",
    "BrokerError",
    "BrokerProcess",
    "BrokerSettings",
    "BrokerStartError",
    "ConfigError",
    "Handler",
    "MqttClient",
    "MqttUser",
    "ProbeError",
    "PublishError",
    "TopicError",
    "check_filter",
    "check_origin",
    "db_is_valid",
    "event_topic",
    "hash_password",
    "health_topic",
    "mesh_topic",
    "parse_event_topic",
    "parse_health_topic",
    "parse_mesh_topic",
    "parse_point_topic",
    "passwd_matches",
    "point_topic",
    "probe",
    "render_acl",
    "render_config",
    "render_mesh_acl",
    "render_passwd",
    "write_files",
]
