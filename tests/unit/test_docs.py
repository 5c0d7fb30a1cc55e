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


# -- central: the same checks as the node's ----------------------------------------------

#: Where central's settings and routes are documented.
CENTRAL_DOCS = ("central.md", "http-api.md")


def test_every_central_setting_is_documented() -> None:
    from central.config import CentralSettings

    text = (DOCS / "central.md").read_text()
    for name in CentralSettings.model_fields:
        assert f"| `{name}` |" in text, f"central setting {name} missing from docs/central.md"


def _route_pattern(method: str, path: str) -> str:
    """``METHOD PATH`` in backticks; docs may name a path parameter their own way
    (``{id}`` for ``{alert_id}``) and show the format parameter as ``.json``."""
    parts = re.split(r"(\{[a-z_]+\})", path)
    body = "".join(r"(json|xml)" if part == "{fmt}" else r"\{[a-z_]+\}"
                   if part.startswith("{") else re.escape(part) for part in parts)
    return rf"`{method} {body}[`?]"


def test_every_central_http_endpoint_is_documented(tmp_path: Path) -> None:
    from central.app import create_app
    from central.config import CentralSettings
    from central.identity import init_central

    app = create_app(init_central(tmp_path / "central", CentralSettings(name="docs")))
    text = "\n".join((DOCS / name).read_text() for name in CENTRAL_DOCS)
    missing = []
    for path, methods in app.openapi()["paths"].items():  # includes the batch fast path
        for method in methods:
            if not re.search(_route_pattern(method.upper(), path), text):
                missing.append(f"{method.upper()} {path}")
    for route in app.routes:
        path = getattr(route, "path", "")
        if not path:
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD" and not re.search(_route_pattern(method, path), text):
                missing.append(f"{method} {path}")
    assert not missing, ("central's routes missing from docs/central.md and docs/http-api.md: "
                         + ", ".join(sorted(set(missing))))
