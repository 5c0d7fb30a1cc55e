"""Exceptions of the node package: one root, specific subclasses."""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error raised by the ``node`` package."""


class ConfigError(NodeError):
    """The node's configuration is missing, malformed or unsafe."""


class NotInitialised(ConfigError):
    """The data directory has no node in it yet (run ``bart node init``)."""


class StoreError(NodeError):
    """The node store could not complete an operation."""


class StoreClosed(StoreError):
    """The store was closed; no more writes are accepted."""


class SeqConflict(StoreError):
    """An event claims an (origin, stream, seq) already held by a different event."""
