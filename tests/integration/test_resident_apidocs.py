"""``/api/docs`` works offline: Swagger UI from the package, under the node's CSP.

Headless Chromium against a real ``bart node run``: the page renders the API's
operations, logs no console error (no CSP refusal), and not one request
leaves the node (every request the page makes goes to 127.0.0.1; anything
else is aborted and fails the test).
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.browser import page_errors
from tests.support.node import NodeProcess

with contextlib.suppress(ImportError):  # a missing Playwright is reported by the fixture
    from playwright.sync_api import Browser, Route, expect

pytestmark = pytest.mark.timeout(60)


def test_docs_render_offline_without_console_errors(browser: Browser,
                                                    running_node: NodeProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  base_url=running_node.base_url)
    context.set_default_timeout(15_000)
    outside: list[str] = []
    local: list[str] = []

    def route(r: Route) -> None:
        host = urlsplit(r.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            local.append(r.request.url)
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    try:
        page = context.new_page()
        errors = page_errors(page)
        page.goto("/api/docs")
        operations = page.locator(".opblock")
        expect(operations.first).to_be_visible()
        assert operations.count() >= 5
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/reports").first) \
            .to_be_visible()
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/alerts").first) \
            .to_be_visible()
        page.wait_for_timeout(300)
        assert outside == [], f"requests left the node: {outside}"
        assert errors == [], errors
        assert any(u.endswith("/api/openapi.json") for u in local)
        assert any("/api/docs/static/swagger-ui-bundle.js" in u for u in local)
    finally:
        context.close()


def test_docs_assets_and_csp(running_node: NodeProcess) -> None:
    base = running_node.base_url
    page = httpx.get(f"{base}/api/docs", timeout=5)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "cdn" not in page.text.lower()
    assert "https://" not in page.text
    js = httpx.get(f"{base}/api/docs/static/swagger-ui-bundle.js", timeout=5)
    assert js.status_code == 200 and len(js.content) > 100_000
    assert js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{base}/api/docs/static/../../etc", timeout=5).status_code == 404
    assert httpx.get(f"{base}/api/docs/static/secret.py", timeout=5).status_code == 404
    # Every other page keeps the strict policy: nothing without the nonce.
    home = httpx.get(f"{base}/", timeout=5).headers["content-security-policy"]
    assert "'self'" not in home.split("script-src")[1].split(";")[0]
