"""Central's ``/api/docs`` works offline too, and ``/favicon.ico`` answers.

A real ``bart central run``; headless Chromium renders Swagger UI from the
package (common/apidocs.py) under the staff CSP, with no console error and
no request leaving 127.0.0.1 (anything else is aborted and fails the test).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.browser import page_errors
from tests.support.central import CentralProcess, init_central_process

with contextlib.suppress(ImportError):  # a missing Playwright is reported by the fixture
    from playwright.sync_api import Browser, Route, expect

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CentralProcess]:
    running = init_central_process(Path(tmp_path_factory.mktemp("central-docs")))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_central_docs_render_offline(browser: Browser, central: CentralProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=central.url)
    context.set_default_timeout(15_000)
    outside: list[str] = []

    def route(r: Route) -> None:
        if urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    try:
        page = context.new_page()
        errors = page_errors(page)
        page.goto("/api/docs")
        expect(page.locator(".opblock").first).to_be_visible()
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/batches").first) \
            .to_be_visible()
        page.wait_for_timeout(300)
        assert outside == [], f"requests left central: {outside}"
        assert errors == [], errors
    finally:
        context.close()


def test_central_favicon_and_docs_policy(central: CentralProcess) -> None:
    icon = httpx.get(f"{central.url}/favicon.ico", timeout=5)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    docs = httpx.get(f"{central.url}/api/docs", timeout=5)
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "https://" not in docs.text
    login = httpx.get(f"{central.url}/staff/login", timeout=5).headers["content-security-policy"]
    assert "'self'" not in login.split("script-src")[1].split(";")[0]
