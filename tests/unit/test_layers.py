"""DESIGN.md §2's import rules, checked on the source (ast, no imports run).

| package | may import (Bart packages) |
| sync, common, hardware | none |
| broker | sync |
| point | sync, broker, hardware |
| node | sync, common, broker, hardware |
| central | sync, common |

``bart`` is the front door and may import everything. A violation names the
file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BART_PACKAGES = {"sync", "common", "broker", "hardware", "point", "node", "central", "bart"}
ALLOWED = {
    "sync": set(),
    "common": set(),
    "hardware": set(),
    "broker": {"sync"},
    "point": {"sync", "broker", "hardware"},
    "node": {"sync", "common", "broker", "hardware"},
    "central": {"sync", "common"},
}


def imported(path: Path) -> set[str]:
    """Top-level Bart packages ``path`` imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & BART_PACKAGES


def test_each_package_imports_only_what_design_allows() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = imported(path) - allowed - {package}
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(extra))}")
    assert not wrong, "imports against DESIGN.md §2:\n" + "\n".join(wrong)
