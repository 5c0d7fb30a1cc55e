"""Residents' reports: receipt codes, the write task, and the public warning.

A report is a private event (it may carry contact data). When its audience
includes the neighbours, the same transaction appends a public ``alert`` with
``source = "resident"`` that carries only category, place, time and text — never
contact data — and refers to the report. The alert is what the mesh floods and
residents see, marked as not verified.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync import Event, validate_body

from .errors import NodeError
from .store import WriteTx

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # as in sync.bodies.RECEIPT
RECEIPT_STATES = ("received", "forwarded", "in_progress", "handled", "reopened")


def new_receipt() -> str:
    """A random receipt code such as ``K7F-3QX`` (32^6 ≈ 10^9 codes)."""
    # 32 symbols: the low 5 bits of a random byte pick one without bias.
    chars = "".join(_ALPHABET[b & 31] for b in os.urandom(6))
    return f"{chars[:3]}-{chars[3:]}"


def normalise_receipt(text: str) -> str:
    """Accept what people type: lower case, spaces, without or with the dash.

    >>> normalise_receipt(" k7f 3qx ")
    'K7F-3QX'
    """
    cleaned = "".join(ch for ch in text.upper()[:32] if ch.isascii() and ch.isalnum())
    return f"{cleaned[:3]}-{cleaned[3:]}" if len(cleaned) == 6 else cleaned


@dataclass(frozen=True)
class Submitted:
    """What a stored report produced."""

    report: Event
    warning: Event | None


def validate_report_input(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a report from a resident before it reaches the writer.

    Uses the event schema's own validator (with a placeholder receipt), so that
    the portal refuses exactly what the event model would refuse.
    """
    body = dict(fields)
    body.setdefault("audience", "both")  # as documented by the API's ReportIn
    body["receipt"] = "AAA-AAA"
    clean = validate_body("report", body)
    del clean["receipt"]
    return clean


def warning_body(report: Mapping[str, Any], report_id: str, area: str) -> dict[str, Any]:
    """The public alert shown to neighbours for a report: no contact data."""
    return {
        "source": "resident",
        "category": report["category"],
        "severity": "severe" if report["category"] == "emergency" else "moderate",
        "title": "",
        "text": report["text"],
        "place": report["place"],
        "areas": [area],
        "expires": None,
        "ref": report_id,
        "called_112": report["called_112"],
        # SAAR: neighbours see who already called 112, so they need not call again.
        "called_112_by": report["called_112_by"] if report["called_112"] else "",
    }


class ReceiptTaken(NodeError):
    """The random receipt code is already in use (about one in a billion): try again."""


def store_report(tx: WriteTx, clean: Mapping[str, Any], area: str) -> Submitted:
    """Writer task: append the report under a fresh receipt code (and its warning).

    The receipt's primary key refuses a code already in use; the whole task is
    then rolled back to its savepoint (no seq is used up) and the caller tries
    again with a new code (:meth:`node.runtime.NodeRuntime.submit_report`).
    """
    body = dict(clean)
    body["receipt"] = new_receipt()
    report = tx.append_local("report", "private", body)
    if not tx.add_receipt(body["receipt"], report.id):
        raise ReceiptTaken(body["receipt"])
    warning = None
    if report.body["audience"] in ("neighbours", "both"):
        warning = tx.append_local("alert", "public",
                                  warning_body(report.body, report.id, area))
    return Submitted(report, warning)
