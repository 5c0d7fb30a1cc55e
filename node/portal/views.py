"""View models: events turned into the plain values the templates show.

Pure functions; what residents see of an event is decided here and only here
(never contact data, never a report that is for the authorities only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from sync import Event

from ..config import NodeSettings

MONTHS = {
    "nl": ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "tr": ("Oca", "Şub", "Mar", "Nis", "May", "Haz", "Tem", "Ağu", "Eyl", "Eki", "Kas", "Ara"),
    "pl": ("sty", "lut", "mar", "kwi", "maj", "cze", "lip", "sie", "wrz", "paź", "lis", "gru"),
    "ar": ("يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر",
           "أكتوبر", "نوفمبر", "ديسمبر"),
}


def local_time(ts_ms: int, tz: str, lang: str) -> tuple[str, str]:
    """("22:31", "28 nov") in the node's time zone."""
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(ZoneInfo(tz))
    months = MONTHS.get(lang, MONTHS["nl"])
    return when.strftime("%H:%M"), f"{when.day} {months[when.month - 1]}"


def place_text(body: dict[str, Any], settings: NodeSettings) -> str:
    """A meeting point's name, or the free text, or both."""
    place = body.get("place") or {}
    names = {p.id: p.name for p in settings.meeting_points}
    name, text = names.get(place.get("point") or "", ""), place.get("text") or ""
    # A panic alarm and a report carry their meeting point's name in the text
    # (for other nodes and central, node/portal/intake.py): not said twice.
    if name and (text == name or text.startswith(name + " – ")):
        name = ""
    return " – ".join(p for p in (name, text) if p)


def is_visible(event: Event, settings: NodeSettings, now_ms: int, *,
               central_origin: str | None = None) -> bool:
    """Should residents of this node see this public alert now?

    A police or municipality alert (``source = "central"``) is shown only when
    its origin is the central this node enrolled with (``central_origin``;
    None when not enrolled): central's events are stored only after their
    signature verified against that central's key, and the mesh refuses
    "central" alerts from anyone else. (Replaced alerts are left out by
    :func:`node.portal.deps.visible_alerts`, which asks the store.)
    """
    if event.kind != "alert" or event.stream != "public":
        return False
    body = event.body
    if body.get("source") == "central" and (central_origin is None
                                            or event.origin != central_origin):
        return False
    if body.get("expires") is not None and body["expires"] <= now_ms:
        return False
    areas = body.get("areas") or []
    return not areas or settings.area in areas


#: The life of a public alert as residents see it.
PHASES: Final = ("new", "coming", "resolved")


@dataclass(frozen=True)
class Phase:
    """Where an alert is in its life: ``new`` (no answer yet), ``coming``
    (someone answered "on my way") or ``resolved``; ``since`` is the time (ms)
    of the answer that put it there (None while new)."""

    name: str = "new"
    since: int | None = None

    def gone(self, now_ms: int, keep_ms: int) -> bool:
        """Resolved at least ``keep_ms`` ago: no longer for the home page."""
        return self.name == "resolved" and self.since is not None \
            and now_ms - self.since >= keep_ms


def alert_phase(alert: Event, acks: Iterable[Event]) -> Phase:
    """The phase of ``alert`` from the answers (acks) that refer to it.

    Any "on my way" makes it ``coming`` -- from this node's team, a
    neighbouring centre's team, or central (police or municipality answer with
    signed acks of central's origin, which were verified before they were
    stored). "resolved" ends it; "hidden" ends it only from the alert's own
    origin (a neighbour cannot take another node's alert away).

    >>> from sync import KeyPair, make_event
    >>> from sync.event import MIN_TS as T
    >>> k = KeyPair.generate()
    >>> alarm = make_event(k, origin="n1", stream="public", seq=1, kind="alert", ts=T,
    ...                    body={"source": "button", "category": "emergency"})
    >>> def ack(seq, action, ts):
    ...     return make_event(k, origin="n1", stream="public", seq=seq, kind="ack", ts=ts,
    ...                       body={"ref": alarm.id, "action": action, "by": "Ans"})
    >>> alert_phase(alarm, [])
    Phase(name='new', since=None)
    >>> alert_phase(alarm, [ack(2, "seen", T + 2), ack(3, "on_my_way", T + 3)]).name
    'coming'
    >>> p = alert_phase(alarm, [ack(3, "on_my_way", T + 3), ack(4, "resolved", T + 9)])
    >>> p.name, p.since - T, p.gone(T + 9 + 1799_000, 1800_000), p.gone(T + 9 + 1800_000, 1800_000)
    ('resolved', 9, False, True)
    """
    coming: int | None = None
    resolved: int | None = None
    for ack in acks:
        action = ack.body.get("action")
        if action == "resolved" or (action == "hidden" and ack.origin == alert.origin):
            resolved = ack.ts if resolved is None else min(resolved, ack.ts)
        elif action == "on_my_way":
            coming = ack.ts if coming is None else min(coming, ack.ts)
    if resolved is not None:
        return Phase("resolved", resolved)
    if coming is not None:
        return Phase("coming", coming)
    return Phase()


def alert_view(event: Event, settings: NodeSettings, lang: str,
               node_name: str = "", phase: Phase | None = None,
               now_ms: int | None = None) -> dict[str, Any]:
    """The AlertView the templates and the live stream render.

    ``node_name``: the community centre an alert of another node comes from
    (through the mesh); empty for this node's own and central's.
    """
    body = event.body
    time_text, date_text = local_time(event.ts, settings.timezone, lang)
    phase = phase or Phase()
    keep_s = settings.resolved_alert_keep_s
    gone_in = None
    if phase.name == "resolved" and phase.since is not None:
        now = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        gone_in = max(0, round(keep_s - (now - phase.since) / 1000))
    return {
        "phase": phase.name,
        "phase_time": local_time(phase.since, settings.timezone, lang)[0]
        if phase.since is not None else "",
        # Seconds until a resolved alert leaves the home page (the page's
        # script removes it then; a reload leaves it out).
        "gone_in": gone_in,
        "id": event.id,
        "source": body["source"],
        "category": body["category"],
        "severity": body["severity"],
        "title": body["title"],
        "text": body["text"],
        "place": place_text(body, settings),
        "time": time_text,
        "date": date_text,
        # Signed events reach this point only after their signature verified;
        # what is "not verified" is a resident's own account of events.
        "verified": body["source"] != "resident",
        # Verified against the enrolled central's key (see is_visible).
        "central": body["source"] == "central",
        "called_112": bool(body.get("called_112")),
        "called_112_by": body.get("called_112_by", ""),
        "node": node_name if event.origin != settings.name and body["source"] != "central"
        else "",
    }


def alert_json(event: Event, settings: NodeSettings,
               phase: Phase | None = None) -> dict[str, Any]:
    """The public JSON form of an alert (API and stream), with its ``phase``
    (new, coming, resolved) and ``phase_since`` (ms, or null)."""
    phase = phase or Phase()
    return {
        "id": event.id,
        "origin": event.origin,
        "seq": event.seq,
        "ts": event.ts,
        "time": datetime.fromtimestamp(event.ts / 1000, UTC).isoformat().replace("+00:00", "Z"),
        **event.body,
        "place_name": place_text(event.body, settings),
        "verified": event.body["source"] != "resident",
        "phase": phase.name,
        "phase_since": phase.since,
    }
