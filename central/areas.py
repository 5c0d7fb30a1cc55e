"""Central's areas: a name, an outline and geocodes for each area code.

Nodes are enrolled with an area code such as ``ESC-01`` (``sync.bodies.AREA``);
broadcasts target those codes. What a code means to people and to other
alerting systems is kept in one operator-edited file in central's data
directory, ``areas.toml`` (see docs/central.md, "Areas")::

    schema_version = 1

    [[areas]]
    code = "ESC-01"
    name = "Moerwijk en Zuiderpark (Escamp)"
    # WGS 84 [latitude, longitude] pairs; the first and the last are the same
    polygon = [[52.060, 4.292], [52.062, 4.283], [52.057, 4.275], [52.060, 4.292]]
    geocodes = [{ value_name = "CBS", value = "WK051835" }]

Why a file and not a table: areas are settings, written once by whoever sets
central up and reviewed like ``central.toml``; a file needs no staff page and
no migration, can be checked before central starts, and is copied with the
data directory. Central reads it at start (``bart central run`` refuses a bad
file with the reason); after an edit, restart central.

Pure: :func:`parse_areas` takes text and returns values; :func:`load_areas`
only reads the file.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sync.bodies import AREA
from sync.text import clean_text

from .cap import AREA_GEOCODE
from .errors import CentralConfigError

AREAS_FILE: Final = "areas.toml"
SCHEMA_VERSION: Final = 1
#: Most points of one outline, the closing point included. CAP sets no limit;
#: cell-broadcast gateways do (US WEA: 100), so larger outlines would be cut.
MAX_VERTICES: Final = 100
#: An outline wider or taller than this (degrees, about 110 km) is a typo, not
#: a neighbourhood.
MAX_SPAN_DEG: Final = 1.0
MAX_NAME: Final = 100
MAX_GEOCODES: Final = 20
MAX_AREAS: Final = 1000
#: ``valueName`` of a CBS (Statistics Netherlands) region code.
CBS: Final = "CBS"
#: CBS codes: GM + 4 digits (municipality), WK + 6 (wijk), BU + 8 (buurt).
CBS_CODE: Final = re.compile(r"^(?:GM\d{4}|WK\d{6}|BU\d{8})$")
_TOKEN = re.compile(r"^[^\s<&\x00-\x1f\x7f]{1,64}$")

Point = tuple[float, float]


class AreasError(CentralConfigError):
    """The areas file cannot be read or breaks a rule; the message says where."""


@dataclass(frozen=True, slots=True)
class Area:
    """One area: its code, the name people read, its outline and geocodes."""

    code: str
    name: str
    #: Closed ring of (latitude, longitude), first == last; empty if not known.
    polygon: tuple[Point, ...] = ()
    #: (valueName, value) pairs such as ("CBS", "WK051835").
    geocodes: tuple[tuple[str, str], ...] = ()


def load_areas(path: Path) -> dict[str, Area]:
    """The areas in ``path`` by code; no file means no areas (codes stay bare)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise AreasError(f"{path}: cannot be read: {exc}") from exc
    return parse_areas(text, str(path))


def parse_areas(text: str, source: str = AREAS_FILE) -> dict[str, Area]:
    """Parse and check an areas file; :class:`AreasError` names the first mistake.

    >>> areas = parse_areas('''schema_version = 1
    ... [[areas]]
    ... code = "ESC-01"
    ... name = "Moerwijk"
    ... polygon = [[52.05, 4.29], [52.04, 4.29], [52.04, 4.31], [52.05, 4.29]]
    ... geocodes = [{ value_name = "CBS", value = "WK051836" }]
    ... ''')
    >>> areas["ESC-01"].geocodes
    (('CBS', 'WK051836'),)
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AreasError(f"{source}: not valid TOML: {exc}") from exc
    _only(data, {"schema_version", "areas"}, source)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise AreasError(f"{source}: schema_version must be {SCHEMA_VERSION} "
                         f"(found {data.get('schema_version')!r})")
    entries = data.get("areas", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AreasError(f"{source}: areas must be [[areas]] tables")
    if len(entries) > MAX_AREAS:
        raise AreasError(f"{source}: at most {MAX_AREAS} areas")
    out: dict[str, Area] = {}
    for number, entry in enumerate(entries, 1):
        area = _area(entry, f"{source}: area {number}")
        if area.code in out:
            raise AreasError(f"{source}: area {number}: code {area.code} is listed twice")
        out[area.code] = area
    return out


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise AreasError(f"{where}: unknown key {unknown[0]!r} "
                         f"(known: {', '.join(sorted(allowed))})")


def _area(entry: Mapping[str, Any], where: str) -> Area:
    _only(entry, {"code", "name", "polygon", "geocodes"}, where)
    code = entry.get("code")
    if not isinstance(code, str) or not AREA.fullmatch(code):
        raise AreasError(f"{where}: code {code!r} must be an area code such as ESC-01 "
                         "(capitals, digits and '-', 1-16 characters)")
    where = f"{where} ({code})"
    raw_name = entry.get("name")
    name = clean_text(raw_name, multiline=False) if isinstance(raw_name, str) else ""
    if not name or len(name) > MAX_NAME:
        raise AreasError(f"{where}: name must be text of 1-{MAX_NAME} characters")
    polygon = check_polygon(entry.get("polygon", []), where) if "polygon" in entry else ()
    geocodes = _geocodes(entry.get("geocodes", []), where)
    return Area(code=code, name=name, polygon=polygon, geocodes=geocodes)


def check_polygon(value: object, where: str = "polygon") -> tuple[Point, ...]:
    """A closed ring of [latitude, longitude] pairs, or :class:`AreasError` saying why."""
    if not isinstance(value, list):
        raise AreasError(f"{where}: polygon must be a list of [latitude, longitude] pairs")
    points: list[Point] = []
    for i, pair in enumerate(value, 1):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           and math.isfinite(v) for v in pair)):
            raise AreasError(f"{where}: polygon point {i} ({pair!r}) must be "
                             "[latitude, longitude], two numbers")
        lat, lon = float(pair[0]), float(pair[1])
        if not -90 <= lat <= 90 or not -180 <= lon <= 180:
            raise AreasError(f"{where}: polygon point {i} [{pair[0]}, {pair[1]}]: latitude must "
                             "be -90..90 and longitude -180..180 (WGS 84 degrees, latitude "
                             "first)")
        points.append((lat, lon))
    if len(points) < 4:
        raise AreasError(f"{where}: polygon needs at least 3 corners and the first point "
                         f"again at the end ({len(points)} points given)")
    if len(points) > MAX_VERTICES:
        raise AreasError(f"{where}: polygon has {len(points)} points; at most {MAX_VERTICES} "
                         "(simplify the outline)")
    if points[0] != points[-1]:
        first = f"[{points[0][0]:g}, {points[0][1]:g}]"
        raise AreasError(f"{where}: polygon is not closed: end it with its first point {first}")
    for i, (a, b) in enumerate(itertools.pairwise(points), 1):
        if a == b:
            raise AreasError(f"{where}: polygon points {i} and {i + 1} are the same point")
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    if max(lats) - min(lats) > MAX_SPAN_DEG or max(lons) - min(lons) > MAX_SPAN_DEG:
        raise AreasError(f"{where}: polygon spans more than {MAX_SPAN_DEG} degree; a typo "
                         "in a coordinate, or latitude and longitude swapped?")
    crossing = _self_crossing(points)
    if crossing:
        i, j = crossing
        raise AreasError(f"{where}: polygon crosses itself: edge {i}-{i + 1} crosses edge "
                         f"{j}-{j + 1} (points out of order?)")
    if abs(_area2(points)) < 1e-12:
        raise AreasError(f"{where}: polygon encloses no area (its points lie on one line)")
    return tuple(points)


def _geocodes(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(isinstance(g, dict) for g in value):
        raise AreasError(f"{where}: geocodes must be a list of "
                         '{ value_name = "CBS", value = "WK051835" } tables')
    if len(value) > MAX_GEOCODES:
        raise AreasError(f"{where}: at most {MAX_GEOCODES} geocodes")
    out: list[tuple[str, str]] = []
    for i, entry in enumerate(value, 1):
        _only(entry, {"value_name", "value"}, f"{where}: geocode {i}")
        name, code = entry.get("value_name"), entry.get("value")
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise AreasError(f"{where}: geocode {i}: value_name must be 1-64 characters "
                             "without spaces, '<' or '&' (e.g. CBS)")
        if name == AREA_GEOCODE:
            raise AreasError(f"{where}: geocode {i}: {AREA_GEOCODE} is set by central itself")
        if not isinstance(code, str) or not _TOKEN.fullmatch(code):
            raise AreasError(f"{where}: geocode {i}: value must be 1-64 characters without "
                             "spaces, '<' or '&'")
        if name == CBS and not CBS_CODE.fullmatch(code):
            raise AreasError(f"{where}: geocode {i}: {code!r} is not a CBS code "
                             "(GM + 4 digits, WK + 6 or BU + 8, e.g. WK051836)")
        if (name, code) in out:
            raise AreasError(f"{where}: geocode {i}: {name} {code} is listed twice")
        out.append((name, code))
    return tuple(out)


def _area2(points: list[Point]) -> float:
    """Twice the signed area (shoelace), in square degrees."""
    return sum(a[1] * b[0] - b[1] * a[0] for a, b in itertools.pairwise(points))


def _self_crossing(points: list[Point]) -> tuple[int, int] | None:
    """1-based start points of two edges that cross or touch, other than neighbours."""
    edges = list(itertools.pairwise(points))
    n = len(edges)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # first and last edge share the closing point
            if _segments_meet(*edges[i], *edges[j]):
                return i + 1, j + 1
    return None


def _segments_meet(p1: Point, p2: Point, p3: Point, p4: Point) -> bool:
    def orient(a: Point, b: Point, c: Point) -> int:
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(v) < 1e-15 else (1 if v > 0 else -1)

    def on(a: Point, b: Point, c: Point) -> bool:
        return (min(a[0], b[0]) <= c[0] <= max(a[0], b[0])
                and min(a[1], b[1]) <= c[1] <= max(a[1], b[1]))

    d1, d2 = orient(p3, p4, p1), orient(p3, p4, p2)
    d3, d4 = orient(p1, p2, p3), orient(p1, p2, p4)
    if d1 != d2 and d3 != d4 and 0 not in (d1, d2, d3, d4):
        return True
    return ((d1 == 0 and on(p3, p4, p1)) or (d2 == 0 and on(p3, p4, p2))
            or (d3 == 0 and on(p1, p2, p3)) or (d4 == 0 and on(p1, p2, p4)))


def contains(polygon: tuple[Point, ...], lat: float, lon: float) -> bool:
    """True if (lat, lon) lies inside the closed ring ``polygon`` (ray casting)."""
    inside = False
    for (y1, x1), (y2, x2) in itertools.pairwise(polygon):
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


__all__ = [
    "AREAS_FILE",
    "AREA_GEOCODE",
    "CBS",
    "MAX_VERTICES",
    "Area",
    "AreasError",
    "check_polygon",
    "contains",
    "load_areas",
    "parse_areas",
]
