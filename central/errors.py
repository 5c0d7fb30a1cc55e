"""Exceptions of the central server."""

from __future__ import annotations


class CentralError(Exception):
    """Root of central's own errors."""


class CentralConfigError(CentralError):
    """Settings, keys or files of central are missing or wrong."""


class EnrolmentRefused(CentralError):
    """An enrolment request is refused; ``code`` names why (for the HTTP reply)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class IngestRefused(CentralError):
    """A batch is refused; ``status`` and ``code`` go into the HTTP reply."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
