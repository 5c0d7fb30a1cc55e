"""Exceptions of the protocol package: one root, specific subclasses."""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error raised by the ``sync`` package."""


class EventError(SyncError):
    """An event is malformed or violates a limit; it must be refused."""


class EventTooLarge(EventError):
    """An event's encoding exceeds the size limit."""


class UnknownVersion(EventError):
    """An event or file carries a schema version this code does not know."""


class InvalidField(EventError):
    """One field of an event or body is missing, of the wrong type, or out of range."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class BadSignature(SyncError):
    """A signature does not verify against the claimed origin's key."""


class UnknownOrigin(SyncError):
    """An event's origin is not in the set of trusted keys."""


class KeyError_(SyncError):
    """A key file is missing, malformed or has unsafe permissions."""


class InsecureKeyFile(KeyError_):
    """A private key file is readable by group or others; refusing to use it."""
