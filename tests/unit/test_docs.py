"""Docs are tested: every CLI command, setting and HTTP endpoint is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bart.cli import build_parser
from node.config import NodeSettings

DOCS = Path(__file__).parent.parent.parent / "docs"


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, list[str]]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, f"{prefix} {name}")
    if not out:
        flags = [s for a in parser._actions for s in a.option_strings
                 if s.startswith("--") and s != "--help"]
        out.append((prefix, flags))
    return out


def test_every_cli_command_and_flag_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    for command, flags in _commands(build_parser(), "bart"):
        assert f"`{command}" in text, f"{command} missing from docs/cli.md"
        for flag in flags:
            assert re.search(rf"{flag}\b", text), f"{command} {flag} missing from docs/cli.md"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name in NodeSettings.model_fields:
        assert f"| `{name}` |" in text, f"setting {name} missing from docs/configuration.md"


def test_every_http_endpoint_is_documented(tmp_path: Path) -> None:
    from node.portal.app import create_app

    app = create_app(NodeSettings(data_dir=tmp_path, name="n1", area="ESC-01", demo=True),
                     runtime=object())  # type: ignore[arg-type]  # routes only, never started
    text = (DOCS / "http-api.md").read_text()
    for path, methods in app.openapi()["paths"].items():  # includes the ingest fast path
        for method in methods:
            assert f"`{method.upper()} {path}" in text, f"{method} {path} undocumented"
    for route in app.routes:
        path = getattr(route, "path", "")
        if not path:
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method == "HEAD":
                continue
            assert re.search(rf"`{method} {re.escape(path)}[`?]", text), (
                f"{method} {path} missing from docs/http-api.md")
