"""Every MQTT topic used in the code appears in docs/mqtt-topics.md (STYLE rule 16)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from broker import DOCUMENTED_FILTERS, DOCUMENTED_TOPICS, EVENT_CHANNELS, MESH_PREFIX, PREFIX
from broker.topics import (
    MESH_DIRECTIONS,
    POINT_MESSAGES,
    event_topic,
    health_topic,
    mesh_topic,
    point_topic,
)

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "mqtt-topics.md"
PACKAGES = ("broker", "node", "sync", "hardware", "central", "bart")
PLACEHOLDER = re.compile(r"\{[^{}/]*\}")
#: The schemes' first levels: events (``bart/v1``) and node-to-node mesh (``bartmesh/v1``).
SCHEMES = ("bart/", "bartmesh/")


def normalise(topic: str) -> str:
    """Any ``{name}`` placeholder becomes ``{}`` so that names need not agree."""
    return PLACEHOLDER.sub("{}", topic)


def documented() -> set[str]:
    """Every backticked token on the page that starts with ``bart/`` or ``bartmesh/``."""
    text = DOC.read_text("utf-8")
    return {normalise(tok) for tok in re.findall(r"`(bart(?:mesh)?/[^`\s]*)`", text)}


def _joined(node: ast.JoinedStr) -> str:
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(value.value)
        else:
            parts.append("{}")
    return "".join(parts)


def source_topics() -> dict[str, str]:
    """``bart/…`` and ``bartmesh/…`` literals (and f-strings) in the source, with where."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text("utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.JoinedStr):
                    text = _joined(node)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                else:
                    continue
                if text.startswith(SCHEMES):
                    found.setdefault(text, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def produced_topics() -> set[str]:
    """Every pattern the topic functions produce, with a placeholder origin."""
    marker = "origin-marker"
    out = {event_topic(marker, stream, kind).replace(marker, "{origin}")
           for stream, kind in EVENT_CHANNELS}
    out.add(health_topic(marker).replace(marker, "{node}"))
    for message in POINT_MESSAGES:
        out.add(point_topic(marker, "point-marker", message)
                .replace(marker, "{node}").replace("point-marker", "{point}"))
    for direction in MESH_DIRECTIONS:
        out.add(mesh_topic(marker, direction).replace(marker, "{peer}"))
    return out


def test_the_scan_finds_the_scheme() -> None:
    # Guard against a scan that silently finds nothing.
    found = source_topics()
    assert PREFIX in found
    assert "bart/v1/+/public/#" in found
    assert MESH_PREFIX in found
    assert "bartmesh/v1/+/up" in found


def test_every_topic_literal_in_the_source_is_documented() -> None:
    docs = documented()
    missing = {text: where for text, where in source_topics().items()
               if normalise(text) not in docs}
    assert not missing, f"add these to {DOC.name}: {missing}"


def test_every_produced_topic_is_listed_and_documented() -> None:
    docs = documented()
    produced = produced_topics()
    assert produced == set(DOCUMENTED_TOPICS)
    for topic in (*produced, *DOCUMENTED_FILTERS):
        assert normalise(topic) in docs, f"{topic} is missing from {DOC.name}"


def test_every_documented_pattern_exists() -> None:
    # The page must not promise topics that nothing produces.
    known = {normalise(t) for t in (*DOCUMENTED_TOPICS, *DOCUMENTED_FILTERS, PREFIX,
                                    MESH_PREFIX)}
    assert documented() - known == set()
