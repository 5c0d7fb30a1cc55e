"""Exceptions of the ``broker`` package: one root, specific subclasses."""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error raised by the ``broker`` package."""


class TopicError(BrokerError, ValueError):
    """A topic or one of its parts (origin, stream, kind) is not in the topic scheme."""


class ConfigError(BrokerError, ValueError):
    """Broker settings cannot be rendered into a safe Mosquitto configuration."""


class BrokerStartError(BrokerError):
    """Mosquitto did not start, or did not answer an MQTT CONNECT in time."""


class PublishError(BrokerError):
    """A publish was not acknowledged: not connected, refused by the broker, or timed out."""
