"""The hardware docs say what the code does: patterns, settings, public names, diagram."""

from __future__ import annotations

import inspect
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import hardware
from hardware import PATTERNS, HoldDetector, LightState

DOCS = Path(__file__).parent.parent.parent / "docs" / "hardware"
README = DOCS / "README.md"


def table_row(text: str, key: str) -> list[str]:
    """Cells of the first table row that starts with ``| `key` |``."""
    for line in text.splitlines():
        if line.startswith(f"| `{key}` |"):
            return [cell.strip() for cell in line.strip().strip("|").split("|")]
    raise AssertionError(f"no table row for `{key}` in {README}")


@pytest.mark.parametrize("state", list(LightState))
def test_every_light_state_has_its_pattern_documented(state: LightState) -> None:
    row = table_row(README.read_text(), state.value)
    pattern = PATTERNS[state]
    assert row[2] == pattern.describe_led(), f"LED pattern of {state} differs from the docs"
    assert row[3] == pattern.describe_buzzer(), f"buzzer pattern of {state} differs from the docs"
    assert str(pattern.colour) in row[4], f"colour of {state} differs from the docs"


def test_every_button_setting_is_documented_with_its_default() -> None:
    text = README.read_text()
    for name, param in inspect.signature(HoldDetector).parameters.items():
        row = table_row(text, name)
        assert float(row[1]) == param.default, f"default of {name} differs from the docs"


def test_every_public_name_is_documented() -> None:
    text = README.read_text()
    missing = [name for name in hardware.__all__ if not re.search(rf"`{name}\b", text)]
    assert missing == [], f"not in docs/hardware/README.md: {missing}"


def test_the_wiring_diagram_is_an_svg_that_the_readme_shows() -> None:
    root = ET.parse(DOCS / "wiring.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    svg_text = (DOCS / "wiring.svg").read_text()
    for label in ("GPIO17", "GPIO23", "GPIO26", "330 Ω", "1N4148"):
        assert label in svg_text
    assert "](wiring.svg)" in README.read_text()


@pytest.mark.parametrize("module", ["hardware.hold", "hardware.button", "hardware.patterns",
                                    "hardware.light"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
