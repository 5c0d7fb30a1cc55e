"""View models of the team dashboard: open items turned into rows (pure).

An *item* is one dict as ``Store.open_items()`` returns it: ``{id, kind
("alert" | "report"), source, category, severity, title, text, place, ts,
state, by, called_112, contact, receipt, button_id, ref}``. A *row* is what
``_team_row.html`` shows: the same values made safe to render, plus which
actions the team may take now.

* Alarms (panic buttons) come first, red; then the rest, newest first.
* A resident's public warning is folded into the row of its report (the
  team answers the report; "hide" acts on the warning).
* Resolved and hidden items are *closed*: listed apart, without actions.

>>> item = {"id": "e1", "kind": "alert", "source": "button", "category": "emergency",
...         "severity": "extreme", "title": "", "text": "", "place": "Speeltuin",
...         "ts": 0, "state": "new", "by": "", "called_112": False, "contact": "",
...         "receipt": None, "button_id": "klimboom", "ref": None}
>>> actions_for(item), is_alarm(item)
(['seen', 'on_my_way', 'resolved', 'escalated'], True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sync.bodies import CATEGORIES, SEVERITIES

from ..config import NodeSettings
from ..portal.views import local_time, place_text

STATES: Final = ("new", "seen", "on_my_way", "resolved", "escalated", "hidden")
CLOSED: Final = frozenset({"resolved", "hidden"})
ACK_ACTIONS: Final = ("seen", "on_my_way", "resolved", "escalated")
ESCALATE_TO: Final = ("police", "municipality")
#: The answers of central's desks (central/alarms.py), and a report's state there.
DESK_ANSWERS: Final = ("seen", "on_my_way", "resolved", "in_progress", "handled")
#: Who answered: a desk, or "central" for a report's state there (its desk unnamed).
DESK_NAMES: Final = (*("police", "municipality"), "central")
#: What the team may still do in each state (the order of the buttons).
NEXT_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "new": ("seen", "on_my_way", "resolved", "escalated"),
    "seen": ("on_my_way", "resolved", "escalated"),
    "on_my_way": ("resolved", "escalated"),
    "escalated": ("on_my_way", "resolved"),
    "resolved": (),
    "hidden": (),
}


def is_alarm(item: Mapping[str, Any]) -> bool:
    """A panic-button alarm: shown red and on top."""
    return bool(item.get("button_id")) or (
        item.get("kind") == "alert" and item.get("source") == "button")


def actions_for(item: Mapping[str, Any]) -> list[str]:
    """The answers the team may give to ``item`` now (none to its own alerts)."""
    if item.get("kind") == "alert" and item.get("source") == "team":
        return []
    return list(NEXT_ACTIONS.get(str(item.get("state", "new")), ()))


def is_warning(item: Mapping[str, Any]) -> bool:
    """A resident's public warning (the one thing the team may hide)."""
    return item.get("kind") == "alert" and item.get("source") == "resident"


def _place(value: Any, settings: NodeSettings) -> str:
    if isinstance(value, Mapping):
        return place_text({"place": value}, settings)
    return str(value or "")


def row_view(item: Mapping[str, Any], settings: NodeSettings, lang: str, *,
             warning: Mapping[str, Any] | None = None,
             origin_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The row ``_team_row.html`` renders for one item (and its folded warning)."""
    state = str(item.get("state") or "new")
    time_text, date_text = local_time(int(item.get("ts") or 0), settings.timezone, lang)
    category = item.get("category")
    severity = item.get("severity")
    names = {p.id: p.name for p in settings.meeting_points}
    button = str(item.get("button_id") or "")
    shown = warning if warning is not None else (item if is_warning(item) else None)
    hidden = shown is not None and shown.get("state") == "hidden"
    return {
        "id": str(item["id"]),
        "kind": "report" if item.get("kind") == "report" else "alert",
        "alarm": is_alarm(item),
        "source": str(item.get("source") or ""),
        "category": category if category in CATEGORIES else "other",
        "severity": severity if severity in SEVERITIES else "moderate",
        "title": str(item.get("title") or ""),
        "text": str(item.get("text") or ""),
        "place": _place(item.get("place"), settings),
        "time": time_text,
        "date": date_text,
        "state": state if state in STATES else "new",
        "by": str(item.get("by") or ""),
        "called_112": bool(item.get("called_112")),
        "contact": str(item.get("contact") or ""),
        "receipt": str(item.get("receipt") or ""),
        # Another node's button: its id means nothing here; the place names it.
        "button": names.get(button, button) if item.get("origin") in (None, settings.name)
        else "",
        # Another node's alarm or alert (through the mesh): which community centre.
        "node": (origin_names or {}).get(str(item.get("origin")), str(item.get("origin")))
        if item.get("origin") not in (None, settings.name)
        and item.get("source") != "central" else "",
        # The desk's answer (police/municipality at central), beside the team's state.
        "desk": str(item.get("desk") or "") if item.get("desk") in DESK_ANSWERS
        and item.get("desk_by") in DESK_NAMES else "",
        "desk_by": str(item.get("desk_by") or "") if item.get("desk_by") in DESK_NAMES else "",
        "actions": actions_for(item),
        # The public warning residents see of this row, if any, and whether it is hidden.
        "warning_id": str(shown["id"]) if shown is not None else "",
        "warning_hidden": hidden,
        "closed": state in CLOSED,
    }


@dataclass
class Board:
    """The dashboard's rows: open ones (alarms first) and recently closed ones."""

    open: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    #: Item id → id of the row that shows it (a warning shows in its report's row).
    row_of: dict[str, str] = field(default_factory=dict)

    def find(self, item_id: str) -> dict[str, Any] | None:
        """The row showing ``item_id``, open or closed."""
        row_id = self.row_of.get(item_id)
        return next((r for r in (*self.open, *self.closed) if r["id"] == row_id), None)


def board(items: Sequence[Mapping[str, Any]], settings: NodeSettings, lang: str,
          now_ms: int, names: Mapping[str, str] | None = None) -> Board:
    """Rows for the dashboard from ``open_items()``; expired alerts are left out, and so
    are alerts a later alert of the same origin replaced (central's updates and
    cancels, docs/protocol.md)."""
    reports = {i["id"] for i in items if i.get("kind") == "report"}
    origin = {i["id"]: i.get("origin") for i in items if i.get("kind") == "alert"}
    replaced = {i["ref"] for i in items if i.get("kind") == "alert" and i.get("ref") in origin
                and origin[i["ref"]] == i.get("origin")}
    folded = {i["ref"]: i for i in items if is_warning(i) and i.get("ref") in reports}
    out = Board()
    for item in sort_items(items):
        if (is_warning(item) and item.get("ref") in reports) or item["id"] in replaced:
            continue
        expires = item.get("expires")
        if item.get("kind") == "alert" and isinstance(expires, int) and expires <= now_ms:
            continue
        warning = folded.get(item["id"])
        row = row_view(item, settings, lang, warning=warning, origin_names=names)
        (out.closed if row["closed"] else out.open).append(row)
        out.row_of[row["id"]] = row["id"]
        if warning is not None:
            out.row_of[str(warning["id"])] = row["id"]
    return out


def sort_items(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Alarms first, then everything else; newest first within each."""
    return sorted(items, key=lambda i: (not is_alarm(i), -int(i.get("ts") or 0)))
