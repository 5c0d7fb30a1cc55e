"""docs/threat-model.md cannot rot (issue 17).

Every ``tests/…py::test_name`` the threat model cites must name a file that
exists and a test function in it (a parametrised test by its function name;
``[…]`` after the name is allowed). Every row of a table with a "proved by"
column must cite at least one test: a defence without a test belongs under
"Not yet proven".
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "threat-model.md"
REF = re.compile(r"(tests/[\w/.-]+\.py)::(\w+)(?:\[[^\]\s`]*\])?")
PROOF_HEADER = "proved by"


@cache
def _functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return frozenset(node.name for node in ast.walk(tree)
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def _refs(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in REF.finditer(text)]


def _missing(text: str) -> list[str]:
    """Every cited reference whose file or test function does not exist."""
    missing = []
    for path, name in _refs(text):
        file = ROOT / path
        if not file.is_file():
            missing.append(f"{path}::{name} (no such file)")
        elif not name.startswith("test_") or name not in _functions(file):
            missing.append(f"{path}::{name} (no such test function)")
    return missing


def _unproved_rows(text: str) -> list[str]:
    """Rows of tables with a "proved by" column that cite no test."""
    rows, in_proof_table = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_proof_table = False
            continue
        cells = [c.strip().lower() for c in line.strip("|").split("|")]
        if PROOF_HEADER in cells:
            in_proof_table = True
        elif in_proof_table and not set(line) <= set("|-: ") and not REF.search(line):
            rows.append(line)
    return rows


def test_the_threat_model_cites_tests() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert len(set(_refs(text))) >= 50, "the threat model cites too few tests"
    assert "## Not yet proven" in text


def test_every_cited_test_exists() -> None:
    missing = _missing(DOC.read_text(encoding="utf-8"))
    assert not missing, "docs/threat-model.md cites tests that do not exist:\n" + \
        "\n".join(missing)


def test_every_defence_row_cites_a_test() -> None:
    rows = _unproved_rows(DOC.read_text(encoding="utf-8"))
    assert not rows, "rows of docs/threat-model.md without a test:\n" + "\n".join(rows)


@pytest.mark.parametrize("text, missing", [
    ("`tests/unit/test_threat_model_refs.py::test_every_cited_test_exists`", []),
    ("`tests/unit/test_threat_model_refs.py::test_every_cited_test_exists[a-b]`", []),
    ("`tests/unit/nowhere.py::test_x`", ["tests/unit/nowhere.py::test_x (no such file)"]),
    ("`tests/unit/test_threat_model_refs.py::test_gone`",
     ["tests/unit/test_threat_model_refs.py::test_gone (no such test function)"]),
    ("`tests/unit/test_threat_model_refs.py::_missing`",
     ["tests/unit/test_threat_model_refs.py::_missing (no such test function)"]),
])
def test_the_check_finds_what_it_should(text: str, missing: list[str]) -> None:
    assert _missing(text) == missing


def test_a_row_without_a_test_is_found() -> None:
    ref = "tests/unit/test_threat_model_refs.py::test_the_check_finds_what_it_should"
    table = ("| they try | stopped by | proved by |\n| --- | --- | --- |\n"
             f"| a | b | `{ref}` |\n"
             "| c | d | (none) |\n\n| other | table |\n| --- | --- |\n| e | f |\n")
    assert _unproved_rows(table) == ["| c | d | (none) |"]
