"""install.sh and .ci/run: syntax, lint, argument handling, and that CI runs
exactly the test command the README gives."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.base import require_binary

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "install.sh"
CI_RUN = REPO / ".ci" / "run"
README = REPO / "README.md"
TEST_COMMAND = "./install.sh --dev && .venv/bin/pytest"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("script", [INSTALL, CI_RUN], ids=["install.sh", ".ci/run"])
def test_script_is_executable_bash_with_valid_syntax(script: Path) -> None:
    assert script.is_file()
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    result = run("bash", "-n", str(script))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [INSTALL, CI_RUN], ids=["install.sh", ".ci/run"])
def test_script_passes_shellcheck(script: Path) -> None:
    shellcheck = require_binary("shellcheck")
    result = run(shellcheck, str(script))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0_with_usage(flag: str) -> None:
    result = run(str(INSTALL), flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ./install.sh")
    assert "--dev" in result.stdout
    assert ".venv/bin/pytest" in result.stdout


@pytest.mark.parametrize("flag", ["--bogus", "--nodes", "dev"])
def test_unknown_flag_exits_2_with_usage(flag: str) -> None:
    result = run(str(INSTALL), flag)
    assert result.returncode == 2
    assert f"unknown option: {flag}" in result.stderr
    assert "Usage: ./install.sh" in result.stderr
    assert result.stdout == ""


def test_unknown_flag_is_refused_before_any_work() -> None:
    # even after a valid flag: nothing is installed when any flag is wrong
    result = run(str(INSTALL), "--dev", "--bogus")
    assert result.returncode == 2
    assert "==>" not in result.stdout + result.stderr


def test_help_says_what_each_mode_does() -> None:
    text = run(str(INSTALL), "--help").stdout
    plain = text[text.index("(no option)"):text.index("  --node ")]
    assert "Nothing starts at boot" in plain and "no system user" in plain
    for flag in ("--node", "--hotspot", "--mesh-radio IFACE", "--no-start", "--uninstall"):
        assert f"  {flag}" in text, flag


@pytest.mark.parametrize(("args", "message"), [
    (["--no-start"], "add --node (or --hotspot)"),
    (["--dev", "--no-start"], "add --node (or --hotspot)"),
    (["--dev", "--node"], "cannot be combined with --node"),
    (["--node", "--uninstall"], "--uninstall cannot be combined with --node"),
])
def test_flags_that_do_not_go_together_are_refused_before_any_work(
        args: list[str], message: str) -> None:
    result = run(str(INSTALL), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "==>" not in result.stdout + result.stderr


def readme_test_command() -> str | None:
    """The line of a fenced code block in README.md that runs `install.sh --dev`."""
    if not README.is_file():
        return None
    in_fence = False
    for line in README.read_text().splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        if in_fence and "install.sh --dev" in line:
            return line.strip().removeprefix("$ ").strip()
    return None


def ci_commands() -> list[str]:
    return [
        line.strip()
        for line in CI_RUN.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_ci_runs_the_readme_test_command() -> None:
    expected = readme_test_command()
    if README.is_file():
        assert expected is not None, (
            "README.md has no fenced code line with `install.sh --dev` (the test command)"
        )
    else:
        expected = TEST_COMMAND
    commands = ci_commands()
    assert expected in commands, f".ci/run does not run {expected!r}: {commands}"
    # the test command is the last thing CI does: its exit status is CI's
    assert commands[-1] == expected


def test_ci_sets_ci_and_runs_from_repo_root() -> None:
    commands = ci_commands()
    assert "set -euo pipefail" in commands
    assert "export CI=true" in commands
    assert any(c.startswith("cd ") for c in commands)
