"""Figures for the insight page: reports per week, category and area, response times,
node uptime — aggregated in SQL over an index-backed time range, drawn as SVG.

Every query reads a bounded window (the last 12 weeks of reports, the last
7 and 28 days of batches) through an index of revision ``0006`` and returns
at most one row per week, category, area or node: percentiles too are taken
in SQL (window functions, nearest rank), on SQLite and PostgreSQL alike.

Definitions (docs/central.md, "Insight page"):

* **week**: Monday 00:00 to Monday 00:00 Dutch time, by the report's own time
  (``ts``, the node's clock); the current week is counted so far.
* **area**: the area code of the node the report came from.
* **first answer**: the earliest of (a) a team's answer on the report — an
  ``ack`` event with ``ref`` = the report's id and action ``seen``,
  ``on_my_way``, ``resolved`` or ``escalated``, from any node, by its
  ``ts`` — and (b) the desk's first answer at central: the first
  ``report_updates`` row of the report (a state change, or a public reply to
  the resident; a re-route of a new report is no answer and writes none), by
  its ``at``. **handled**: the first
  ``report_updates`` row ``handled``. Times are measured from the report's
  ``ts``; a node's clock ahead of central's could give a negative time, which
  counts as 0.
* **uptime**: what central can measure honestly. An empty poll leaves no row
  (central/ingest.py), so the only record is ``batches.received_at``: the
  share of the hours (of the last 7 days, or since enrolment when later) in
  which a node delivered at least one batch with events, and likewise of the
  days of the last 28. A quiet node that polls fine scores low: this is a
  lower bound, not availability. ``last seen`` (any contact, polls too) is
  shown beside it.

The charts are drawn by :mod:`central.insight_svg`; every value is also in
the table after them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from markupsafe import Markup
from sqlalchemy.engine import Engine

from . import db, queries
from .insight_svg import hbars, vbars

WEEKS: Final = 12
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
UPTIME_HOURS: Final = 7 * 24
UPTIME_DAYS: Final = 28
TIMEZONE: Final = ZoneInfo("Europe/Amsterdam")
CATEGORIES: Final = ("nuisance", "suspicious", "social", "emergency")
#: Team answers that count as a first answer (``hidden`` and ``repeated`` do not).
ANSWERS: Final = ("seen", "on_my_way", "resolved", "escalated")

Translate = Callable[..., str]


# ------------------------------------------------------------------ time windows


def week_starts(now_ms: int, weeks: int = WEEKS) -> list[int]:
    """Unix ms of the Mondays 00:00 (Dutch time) of the last ``weeks`` weeks, oldest first.

    >>> [week_label(w) for w in week_starts(1_764_412_200_000, 3)]  # Sat 29-11-2025
    ['2025-W46', '2025-W47', '2025-W48']
    """
    now = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(TIMEZONE)
    monday = (now - timedelta(days=now.weekday())).date()
    out = []
    for back in range(weeks - 1, -1, -1):
        day = monday - timedelta(weeks=back)
        local = datetime(day.year, day.month, day.day, tzinfo=TIMEZONE)
        out.append(int(local.timestamp() * 1000))
    return out


def week_label(start_ms: int) -> str:
    """ISO week of a Monday: ``2025-W48``."""
    year, week, _ = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(
        TIMEZONE).isocalendar()
    return f"{year}-W{week:02d}"


# ------------------------------------------------------------------ queries


@dataclass(frozen=True)
class Percentiles:
    """How many reports of a week have a time, and its p50/p90 in ms (None: none)."""

    count: int = 0
    p50: int | None = None
    p90: int | None = None


@dataclass(frozen=True)
class NodeUptime:
    """One node: hours and days with a batch, of how many it could have had."""

    name: str
    display: str | None
    area: str
    hours: int
    hours_possible: int
    days: int
    days_possible: int
    last_seen: int | None

    @property
    def hours_share(self) -> float:
        return 100.0 * self.hours / self.hours_possible if self.hours_possible else 0.0

    @property
    def days_share(self) -> float:
        return 100.0 * self.days / self.days_possible if self.days_possible else 0.0


@dataclass
class Figures:
    """Everything the insight page shows, for one desk (``route``) or all (None)."""

    route: str | None
    now: int
    starts: list[int]
    by_week: dict[tuple[int, str], int] = field(default_factory=dict)
    by_area: dict[tuple[str, str], int] = field(default_factory=dict)
    answer: dict[int, Percentiles] = field(default_factory=dict)
    handled: dict[int, Percentiles] = field(default_factory=dict)
    nodes: list[NodeUptime] = field(default_factory=list)

    def week_total(self, week: int) -> int:
        return sum(n for (w, _), n in self.by_week.items() if w == week)

    @property
    def areas(self) -> list[str]:
        totals: dict[str, int] = {}
        for (area, _), n in self.by_area.items():
            totals[area] = totals.get(area, 0) + n
        return sorted(totals, key=lambda a: (-totals[a], a))


def collect(engine: Engine, route: str | None, now_ms: int) -> Figures:
    """The figures of the last 12 weeks for the desk ``route`` (None: every desk)."""
    starts = week_starts(now_ms)
    figures = Figures(route=route, now=now_ms, starts=starts)
    params: dict[str, Any] = {"start": starts[0], "end": now_ms + 1, "route": route,
                              **queries.week_bounds(starts)}
    weeks, routed = len(starts), route is not None
    with db.reading(engine) as conn:
        dialect = conn.dialect.name
        for w, category, n in conn.execute(
                queries.insight_by_week(weeks, routed).text(), params):
            figures.by_week[(int(w), category)] = int(n)
        for area, category, n in conn.execute(
                queries.insight_by_area(routed).text(), params):
            key = (area or "", category)
            figures.by_area[key] = figures.by_area.get(key, 0) + int(n)
        for w, measure, n, p50, p90 in conn.execute(
                queries.insight_delays(dialect, weeks, routed, ANSWERS).text(), params):
            target = figures.answer if measure == "answer" else figures.handled
            target[int(w)] = Percentiles(int(n), int(p50), int(p90))
        figures.nodes = _uptime(conn, now_ms)
    return figures


def _uptime(conn: sa.Connection, now_ms: int) -> list[NodeUptime]:
    """Per node: clock hours (UTC) of the last 7 days and days of the last 28 with a batch.

    The current hour and day count (so far); a node enrolled within the window
    is measured from the hour (day) of its enrolment.
    """
    windows = ((UPTIME_HOURS, HOUR_MS), (UPTIME_DAYS, DAY_MS))
    counted: dict[str, list[int]] = {}
    for slot, (most, unit) in enumerate(windows):
        since = (now_ms // unit - most + 1) * unit
        for node, n in conn.execute(queries.batch_slots(unit).text(),
                                    {"since": since, "now": now_ms}):
            counted.setdefault(node, [0, 0])[slot] = int(n)
    out = []
    n = db.nodes.c
    for row in conn.execute(sa.select(n.name, n.display, n.area, n.enrolled_at, n.last_seen)
                            .where(n.revoked_at.is_(None)).order_by(n.name)):
        hours, days = counted.get(row.name, [0, 0])
        possible = [_slots(int(row.enrolled_at), now_ms, unit, most) for most, unit in windows]
        out.append(NodeUptime(
            name=row.name, display=row.display, area=row.area, hours=hours,
            hours_possible=possible[0], days=days, days_possible=possible[1],
            last_seen=int(row.last_seen) if row.last_seen is not None else None))
    return out


def _slots(enrolled: int, now: int, unit: int, most: int) -> int:
    """Clock slots of ``unit`` from the one of ``enrolled`` to the current one, at most ``most``.

    >>> _slots(0, 999 * HOUR_MS, HOUR_MS, 168), _slots(9 * HOUR_MS + 7, 10 * HOUR_MS, HOUR_MS, 168)
    (168, 2)
    """
    return max(1, min(most, now // unit - enrolled // unit + 1))


# ------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Table:
    """One table of the page; its CSV download has the same header and cells."""

    key: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def _minutes(ms: int | None) -> str:
    """Minutes with one decimal, "" for none.

    >>> _minutes(90_000), _minutes(None)
    ('1.5', '')
    """
    return "" if ms is None else f"{ms / 60_000:.1f}"


def _share(value: float) -> str:
    return f"{value:.1f}"


def tables(f: Figures, t: Translate) -> dict[str, Table]:
    """The page's four tables, in the page's language (``t``)."""
    c = "insight.col."
    weeks = [week_label(s) for s in f.starts]
    by_week = Table("categories", t("insight.weeks_title"),
                    [t(c + "week"), *[t("category." + k) for k in CATEGORIES], t(c + "total")],
                    [[label, *[str(f.by_week.get((i, k), 0)) for k in CATEGORIES],
                      str(f.week_total(i))] for i, label in enumerate(weeks)])
    areas = Table("areas", t("insight.areas_title"),
                  [t(c + "area"), *[t("category." + k) for k in CATEGORIES], t(c + "total")],
                  [[a or t("insight.unknown_area"),
                    *[str(f.by_area.get((a, k), 0)) for k in CATEGORIES],
                    str(sum(f.by_area.get((a, k), 0) for k in CATEGORIES))] for a in f.areas])
    response = Table("response", t("insight.response_title"),
                     [t(c + "week"), t(c + "reports"), t(c + "answered"), t(c + "answer_p50"),
                      t(c + "answer_p90"), t(c + "handled"), t(c + "handled_p50"),
                      t(c + "handled_p90")], [])
    for i, label in enumerate(weeks):
        a, h = f.answer.get(i, Percentiles()), f.handled.get(i, Percentiles())
        response.rows.append([label, str(f.week_total(i)), str(a.count), _minutes(a.p50),
                              _minutes(a.p90), str(h.count), _minutes(h.p50), _minutes(h.p90)])
    uptime = Table("uptime", t("insight.uptime_title"),
                   [t(c + "node"), t(c + "area"), t(c + "hours"), t(c + "hours_share"),
                    t(c + "days"), t(c + "days_share"), t(c + "last_seen")],
                   [[n.display or n.name, n.area, f"{n.hours}/{n.hours_possible}",
                     _share(n.hours_share), f"{n.days}/{n.days_possible}",
                     _share(n.days_share), _iso(n.last_seen)] for n in f.nodes])
    return {tb.key: tb for tb in (by_week, areas, response, uptime)}


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms // 1000, UTC).astimezone(TIMEZONE).strftime(
        "%Y-%m-%d %H:%M")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (``=``, ``+``, ``-``, ``@`` first).

    >>> csv_cell("=HYPERLINK(1)"), csv_cell("12"), csv_cell("-3")
    ("'=HYPERLINK(1)", '12', "'-3")
    """
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


# ------------------------------------------------------------------ charts


@dataclass(frozen=True)
class Chart:
    """A chart, its heading, and the key of the table that holds its values
    (shown after the last chart of that table: ``with_table``)."""

    svg: Markup
    title: str
    table: str
    with_table: bool = True


def charts(f: Figures, t: Translate) -> list[Chart]:
    """The page's charts, each with its title and a one-sentence description."""
    weeks = [week_label(s) for s in f.starts]
    totals = [f.week_total(i) for i in range(len(weeks))]
    total = sum(totals)
    busiest = max(range(len(weeks)), key=lambda i: (totals[i], i)) if weeks else 0
    out = [Chart(vbars(
        "weeks", t("insight.weeks_title"),
        t("insight.weeks_desc", total=total, week=weeks[busiest], count=totals[busiest]),
        weeks, [(t("category." + k), [f.by_week.get((i, k), 0) for i in range(len(weeks))])
                for k in CATEGORIES], stacked=True), t("insight.weeks_title"), "categories")]
    areas = f.areas
    area_totals = [sum(f.by_area.get((a, k), 0) for k in CATEGORIES) for a in areas]
    out.append(Chart(hbars(
        "areas", t("insight.areas_title"),
        t("insight.areas_desc", total=total, areas=len(areas),
          area=(areas[0] or t("insight.unknown_area")) if areas else "–",
          count=area_totals[0] if areas else 0),
        [a or t("insight.unknown_area") for a in areas], area_totals), t("insight.areas_title"),
        "areas"))
    minutes = t("insight.minutes")
    for key, data in (("answer", f.answer), ("handled", f.handled)):
        p50 = [round((data[i].p50 or 0) / 60_000, 1) if i in data else 0.0
               for i in range(len(weeks))]
        p90 = [round((data[i].p90 or 0) / 60_000, 1) if i in data else 0.0
               for i in range(len(weeks))]
        counted = sum(p.count for p in data.values())
        out.append(Chart(vbars(
            key, t(f"insight.{key}_chart"),
            t(f"insight.{key}_desc", count=counted, weeks=len(data)),
            weeks, [(t("insight.p50"), p50), (t("insight.p90"), p90)], stacked=False,
            unit=" " + minutes), t(f"insight.{key}_chart"), "response", key == "handled"))
    shares = [round(n.hours_share, 1) for n in f.nodes]
    mean = sum(shares) / len(shares) if shares else 0.0
    out.append(Chart(hbars(
        "uptime", t("insight.uptime_title"),
        t("insight.uptime_desc", nodes=len(shares), share=_share(mean)),
        [n.display or n.name for n in f.nodes], shares, top_value=100, unit="%"),
        t("insight.uptime_title"), "uptime"))
    return out


def csv_rows(table: Table) -> Iterable[list[str]]:
    """The CSV rows of ``table``: its header, then its cells (formula-safe)."""
    yield [csv_cell(h) for h in table.header]
    for row in table.rows:
        yield [csv_cell(cell) for cell in row]
