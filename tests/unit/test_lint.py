"""ruff and mypy are part of the bar: the test run fails when either finds something."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require

ROOT = Path(__file__).parent.parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]])
def test_clean(tool: list[str]) -> None:
    exe = BIN / tool[0]
    require(exe.exists(), f"{tool[0]} is not installed (./install.sh --dev)")
    result = subprocess.run([str(exe), *tool[1:]], cwd=ROOT, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
