"""Areas in CAP: central's areas file (central/areas.py) and CAP ``<area>``
with ``areaDesc``, ``polygon`` and ``geocode`` (central/cap.py, central/feeds.py).

Every CAP document here is checked against the official OASIS CAP 1.2 schema
(WMO's capvalidator), as in test_central_cap.py.
"""

from __future__ import annotations

import doctest
import math
import re
import tomllib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import central.areas as areas_module
from central.areas import (
    AREAS_FILE,
    MAX_VERTICES,
    Area,
    AreasError,
    check_polygon,
    contains,
    load_areas,
    parse_areas,
)
from central.cap import (
    CAP_NS,
    LANG_NL,
    AlertText,
    CapArea,
    CapError,
    PublicAlert,
    alert_xml,
    feed_xml,
    polygon_value,
)
from central.errors import CentralConfigError
from central.feeds import cap_area
from tests.support import require

try:
    import capvalidator  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the test extra installs it
    capvalidator = None

C = f"{{{CAP_NS}}}"
T0 = datetime(2026, 11, 29, 21, 15, 7, tzinfo=UTC)
DEMO_AREAS = resources.files("bart").joinpath("demo_data/demo-areas.toml")
DEMO_HOOD = resources.files("bart").joinpath("demo_data/demo-neighbourhood.toml")
SQUARE = "[[52.05, 4.29], [52.04, 4.29], [52.04, 4.31], [52.05, 4.31], [52.05, 4.29]]"


def assert_valid(xml: bytes) -> ET.Element:
    require(capvalidator is not None, "capvalidator is not installed (pip install -e '.[test]')")
    result = capvalidator.check_schema(xml)
    assert result.passed, result.message + "\n" + xml.decode()
    return ET.fromstring(xml)


def one_area(body: str) -> str:
    return f'schema_version = 1\n[[areas]]\n{body}\n'


def demo_areas() -> dict[str, Area]:
    return parse_areas(DEMO_AREAS.read_text("utf-8"), "demo-areas.toml")


# --- the demo's areas ----------------------------------------------------------


def test_demo_areas_cover_every_demo_area_code_with_a_cited_outline() -> None:
    areas = demo_areas()
    hood = tomllib.loads(DEMO_HOOD.read_text("utf-8"))
    assert {n["area_code"] for n in hood["nodes"]} == set(areas)
    text = DEMO_AREAS.read_text("utf-8")
    assert "cartomap/nl" in text and "wijk_2024.geojson" in text and "CBS" in text
    for area in areas.values():
        assert 4 <= len(area.polygon) <= 50, area.code
        assert area.geocodes and all(name == "CBS" and value.startswith("WK0518")
                                     for name, value in area.geocodes)
        assert area.code in text and area.name


def test_every_demo_centre_and_meeting_point_lies_inside_its_areas_outline() -> None:
    areas = demo_areas()
    hood = tomllib.loads(DEMO_HOOD.read_text("utf-8"))
    spots = 0
    for node in hood["nodes"]:
        polygon = areas[node["area_code"]].polygon
        for spot in [node, *node.get("meeting_points", [])]:
            assert contains(polygon, spot["lat"], spot["lon"]), (node["area_code"], spot["name"])
            spots += 1
        others = [a for code, a in areas.items() if code != node["area_code"]]
        assert not any(contains(a.polygon, node["lat"], node["lon"]) for a in others)
    assert spots >= 10


def test_demo_areas_in_cap_are_valid_and_carry_name_polygon_and_geocodes() -> None:
    areas = demo_areas()
    alert = PublicAlert(id="a1", sent=T0, msg_type="Alert", severity="severe",
                        texts=(AlertText(LANG_NL, "Inbraakgolf"),), expires=T0 + timedelta(days=1),
                        areas=[cap_area(code, areas) for code in ("ESC-01", "LYP-01", "XYZ-9")])
    root = assert_valid(alert_xml(alert))
    found = root.findall(f"{C}info/{C}area")
    assert [a.findtext(f"{C}areaDesc") for a in found] == [
        "Moerwijk en Zuiderpark (Escamp)", "Ypenburg (Leidschenveen-Ypenburg)", "XYZ-9"]
    esc = found[0]
    assert [child.tag.removeprefix(C) for child in esc] == [
        "areaDesc", "polygon", "geocode", "geocode", "geocode"]
    text = esc.findtext(f"{C}polygon") or ""
    ring = [tuple(map(float, pair.split(","))) for pair in text.split(" ")]
    assert ring == list(areas["ESC-01"].polygon) and ring[0] == ring[-1]
    assert [(g.findtext(f"{C}valueName"), g.findtext(f"{C}value"))
            for g in esc.findall(f"{C}geocode")] == [
        ("bart:area", "ESC-01"), ("CBS", "WK051835"), ("CBS", "WK051836")]
    unknown = found[2]  # a code central's file does not know: today's bare area
    assert unknown.find(f"{C}polygon") is None
    assert [(g.findtext(f"{C}valueName"), g.findtext(f"{C}value"))
            for g in unknown.findall(f"{C}geocode")] == [("bart:area", "XYZ-9")]


def test_an_area_without_polygon_still_has_its_name() -> None:
    areas = parse_areas(one_area('code = "ESC-09"\nname = "Rustenburg"'))
    alert = PublicAlert(id="a1", sent=T0, msg_type="Alert", severity="minor",
                        texts=(AlertText(LANG_NL, "Let op"),), expires=T0 + timedelta(hours=1),
                        areas=[cap_area("ESC-09", areas)])
    area = assert_valid(alert_xml(alert)).find(f"{C}info/{C}area")
    assert area is not None and area.findtext(f"{C}areaDesc") == "Rustenburg"
    assert area.find(f"{C}polygon") is None


def test_the_atom_index_names_areas_by_their_names() -> None:
    areas = demo_areas()
    alert = PublicAlert(id="a1", sent=T0, msg_type="Alert", severity="minor",
                        texts=(AlertText(LANG_NL, "Let op"),), expires=T0 + timedelta(hours=1),
                        areas=[cap_area("ESC-01", areas), cap_area("ESC-02", areas)])
    feed = feed_xml([alert], feed_url="https://c.example/f.xml",
                    alert_url=lambda a: f"https://c.example/{a.id}.xml", updated=T0)
    assert (b"<cap:areaDesc>Moerwijk en Zuiderpark (Escamp); Bouwlust, Vrederust en "
            b"Morgenstond (Escamp)</cap:areaDesc>") in feed


# --- the file's rules -------------------------------------------------------------


def test_a_good_file_parses_and_names_are_cleaned() -> None:
    areas = parse_areas(one_area(
        f'code = "ESC-01"\nname = "  Moer\\u200bwijk \\t "\npolygon = {SQUARE}\n'
        'geocodes = [{ value_name = "CBS", value = "BU05183601" }, '
        '{ value_name = "NUTS3", value = "NL333" }]'))
    area = areas["ESC-01"]
    assert area.name == "Moerwijk" and len(area.polygon) == 5
    assert area.geocodes == (("CBS", "BU05183601"), ("NUTS3", "NL333"))


def test_no_file_means_no_areas_and_a_file_is_read(tmp_path: Path) -> None:
    assert load_areas(tmp_path / AREAS_FILE) == {}
    (tmp_path / AREAS_FILE).write_text(one_area('code = "A1"\nname = "Een"'))
    assert load_areas(tmp_path / AREAS_FILE) == {"A1": Area("A1", "Een")}
    (tmp_path / AREAS_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(AreasError, match="cannot be read"):
        load_areas(tmp_path / AREAS_FILE)


def _ring(points: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"[{a}, {b}]" for a, b in points) + "]"


MANY = [(52.0 + 0.01 * math.cos(2 * math.pi * i / 120),
         4.3 + 0.01 * math.sin(2 * math.pi * i / 120)) for i in range(120)]


@pytest.mark.parametrize(("text", "message"), [
    ("schema_version = 1\n[[areas]\n", "not valid TOML"),
    ("schema_version = 2\n", "schema_version must be 1"),
    ("areas = []\n", "schema_version must be 1"),
    ("schema_version = 1\nzones = []\n", "unknown key 'zones'"),
    ("schema_version = 1\nareas = [1, 2]\n", "must be [[areas]] tables"),
    (one_area('code = "esc-01"\nname = "x"'), "code 'esc-01' must be an area code"),
    (one_area('name = "x"'), "code None must be an area code"),
    (one_area('code = "A1"\nname = ""'), "name must be text of 1-100"),
    (one_area('code = "A1"\nname = "' + "x" * 101 + '"'), "name must be text of 1-100"),
    (one_area('code = "A1"\nname = "x"\ncolour = "red"'), "unknown key 'colour'"),
    (one_area('code = "A1"\nname = "x"\npolygon = "52,4 53,4"'), "must be a list of"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, 4.0, 1], [52.1, 4.0]]'),
     "point 1 ([52.0, 4.0, 1]) must be [latitude, longitude]"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, "4"]]'), "point 1"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, true]]'), "point 1"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, nan]]'), "point 1"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[95.0, 4.0], [52.0, 4.1], [52.1, 4.0], '
              '[95.0, 4.0]]'), "point 1 [95.0, 4.0]: latitude must be -90..90"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, 4.0], [52.1, 4.0], [52.0, 4.0]]'),
     "at least 3 corners"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, 4.0], [52.1, 4.0], [52.1, 4.1], '
              '[52.0, 4.1]]'), "not closed: end it with its first point [52, 4]"),
    (one_area('code = "A1"\nname = "x"\npolygon = ' + _ring([*MANY, MANY[0]])),
     f"121 points; at most {MAX_VERTICES}"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, 4.0], [52.1, 4.0], [52.1, 4.0], '
              '[52.1, 4.1], [52.0, 4.0]]'), "points 2 and 3 are the same point"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.05, 184.29], [52.05, 184.3], '
              '[52.06, 184.3], [52.05, 184.29]]'), "point 1 [52.05, 184.29]: latitude must be"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.05, 4.29], [42.05, 4.29], [52.06, 4.30], '
              '[52.05, 4.29]]'), "spans more than 1.0 degree"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, 4.0], [52.1, 4.0], [52.2, 4.0], '
              '[52.0, 4.0]]'), "crosses itself|encloses no area"),
    (one_area('code = "A1"\nname = "x"\npolygon = [[52.0, 4.0], [52.1, 4.1], [52.1, 4.0], '
              '[52.0, 4.1], [52.0, 4.0]]'), "crosses itself: edge 1-2 crosses edge 3-4"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = "CBS"'), "geocodes must be a list"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = [{ value_name = "CBS", value = "WK0518" }]'),
     "'WK0518' is not a CBS code"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = [{ value_name = "bart:area", value = "A1" }]'),
     "bart:area is set by central itself"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = [{ value_name = "a b", value = "1" }]'),
     "value_name must be 1-64 characters"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = [{ value_name = "X", value = "<1>" }]'),
     "value must be 1-64 characters"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = [{ name = "X", value = "1" }]'),
     "geocode 1: unknown key 'name'"),
    (one_area('code = "A1"\nname = "x"\ngeocodes = [{ value_name = "X", value = "1" }, '
              '{ value_name = "X", value = "1" }]'), "X 1 is listed twice"),
    ('schema_version = 1\n[[areas]]\ncode = "A1"\nname = "x"\n[[areas]]\ncode = "A1"\n'
     'name = "y"\n', "area 2: code A1 is listed twice"),
])
def test_mistakes_are_refused_with_where_and_why(text: str, message: str) -> None:
    pattern = "|".join(re.escape(part) for part in message.split("|"))
    with pytest.raises(AreasError, match=pattern) as info:
        parse_areas(text, "/srv/central/areas.toml")
    assert str(info.value).startswith("/srv/central/areas.toml: ")


def test_areas_error_is_a_config_error() -> None:
    assert issubclass(AreasError, CentralConfigError)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(3, MAX_VERTICES - 1), lat=st.floats(-80, 80), lon=st.floats(-170, 170),
       radius=st.floats(0.001, 0.4), turn=st.floats(0, 2 * math.pi))
def test_any_simple_ring_is_accepted_and_round_trips_through_cap(
        n: int, lat: float, lon: float, radius: float, turn: float) -> None:
    points = [[round(lat + radius * math.cos(turn + 2 * math.pi * i / n), 6),
               round(lon + radius * math.sin(turn + 2 * math.pi * i / n), 6)] for i in range(n)]
    points.append(list(points[0]))
    ring = check_polygon(points)
    text = polygon_value(ring)
    assert [tuple(map(float, p.split(","))) for p in text.split(" ")] == list(ring)


# --- CapArea, the rendering side --------------------------------------------------------


@pytest.mark.parametrize(("area", "message"), [
    (lambda: CapArea(""), "description"),
    (lambda: CapArea("x", polygons=[[(52.0, 4.0), (52.1, 4.0), (52.0, 4.0)]]), "four points"),
    (lambda: CapArea("x", polygons=[[(52.0, 4.0), (52.1, 4.0), (52.1, 4.1), (52.0, 4.2)]]),
     "end with its first point"),
    (lambda: CapArea("x", polygons=[[(99.0, 4.0), (52.1, 4.0), (52.1, 4.1), (99.0, 4.0)]]),
     "WGS 84"),
    (lambda: CapArea("x", geocodes=[("CBS", " ")]), "valueName and a value"),
])
def test_cap_area_refuses_what_cap_cannot_carry(area: object, message: str) -> None:
    with pytest.raises(CapError, match=message):
        area()  # type: ignore[operator]


def test_polygon_coordinates_are_written_compactly() -> None:
    assert polygon_value([(52.1, -4.0), (-0.0000001, 4.1234567), (52.2, 4.0), (52.1, -4.0)]) == \
        "52.1,-4 0,4.123457 52.2,4 52.1,-4"


def test_docstring_examples() -> None:
    assert doctest.testmod(areas_module).failed == 0


def test_the_documented_example_file_is_valid() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "central.md").read_text("utf-8")
    section = docs.split("### Areas: names, outlines, geocodes", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    areas = parse_areas(example)
    assert areas["ESC-01"].geocodes == (("CBS", "WK051835"), ("CBS", "WK051836"))
    assert "xmlsec1 --verify --trusted-pem cap.pem alert.xml" in docs
    assert "`GET /api/v1/cap/cert.pem`" in docs
