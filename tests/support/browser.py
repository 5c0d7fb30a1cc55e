"""Headless Debian Chromium driven by Playwright (never a downloaded browser), and
the steps the browser tests share: a context of a given size, the errors a page
shows, a team member's and a staff member's first login.

Playwright is imported lazily: a machine without it skips (locally) or fails
(in CI) the browser tests through ``launch_chromium``, not at collection.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from node.team import TEAM_DB, TeamAccounts
from tests.support.base import require, require_binary
from tests.support.leaks import owned_threads
from tests.support.node import NodeProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
#: A small phone's viewport in CSS pixels.
PHONE: ViewportSize = {"width": 360, "height": 740}
#: What a new team member chooses as their own password.
TEAM_PASSWORD = "een lange zin als wachtwoord"


@contextlib.contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless; closed (and Playwright's driver ended) afterwards."""
    chromium = require_binary("chromium", "/usr/bin/chromium", "chromium-browser")
    require(importlib.util.find_spec("playwright") is not None,
            "playwright (python) is not installed")
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    with manager as pw, owned_threads("playwright-loop"):
        # Playwright's event loop starts executor threads when it needs one, during
        # any test that uses the browser: named, they are the browser's, not a leak.
        manager._loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="playwright-loop"))
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def browser_context(browser: Browser, timeout_ms: float = 10_000,
                    **options: Any) -> Iterator[BrowserContext]:
    """A fresh context (``options`` as for ``Browser.new_context``), closed afterwards."""
    context = browser.new_context(**options)
    context.set_default_timeout(timeout_ms)
    try:
        yield context
    finally:
        context.close()


def page_errors(page: Page, *, resources: bool = True) -> list[str]:
    """Console errors (CSP violations among them), script errors and every answer
    >= 400 by its URL, collected while the page lives.

    ``resources=False`` leaves out what the browser fetches of its own accord:
    ``/favicon.ico`` and its console line ("Failed to load resource").
    """
    errors: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type == "error" and (resources
                                    or not msg.text.startswith("Failed to load resource")):
            errors.append(msg.text)

    def on_response(response: Any) -> None:
        if response.status >= 400 and (resources or not response.url.endswith("/favicon.ico")):
            errors.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("response", on_response)
    return errors


def team_member(node: NodeProcess) -> tuple[str, str]:
    """A new team member on ``node``: their name and one-time password."""
    name = f"Lid {uuid.uuid4().hex[:6]}"
    with TeamAccounts(node.data_dir / TEAM_DB) as team:
        return name, team.add(name)


def team_login(page: Page, node: NodeProcess, *, start: str = "/team/login?lang=nl",
               password: str = TEAM_PASSWORD,
               typed: Callable[[str], str] = lambda otp: otp) -> str:
    """A new member opens ``start``, logs in with a one-time password (as ``typed``
    turns it) and chooses their own; ends on /team. Their name."""
    name, otp = team_member(node)
    page.goto(start)
    page.wait_for_url(re.compile(r"/team/login"))
    page.fill("[data-testid=login-name]", name)
    page.fill("[data-testid=login-password]", typed(otp))
    page.click("[data-testid=login-submit]")
    page.wait_for_url(re.compile(r"/team/password$"))
    page.fill("[data-testid=password-current]", otp)
    page.fill("[data-testid=password-new]", password)
    page.fill("[data-testid=password-repeat]", password)
    page.click("[data-testid=password-submit]")
    page.wait_for_url(re.compile(r"/team$"))
    return name


def staff_first_login(page: Page, name: str, otp: str, password: str,
                      on_password: Callable[[], None] | None = None) -> None:
    """On central's login page: a new staff member's one-time password, then their
    own (``on_password`` runs on the password page first); ends on /staff/reports."""
    page.fill('[data-testid="login-name"]', name)
    page.fill('[data-testid="login-password"]', otp)
    page.click('[data-testid="login-submit"]')
    page.wait_for_url("**/staff/password")
    if on_password:
        on_password()
    page.fill('[data-testid="password-old"]', otp)
    page.fill('[data-testid="password-new"]', password)
    page.fill('[data-testid="password-repeat"]', password)
    page.click('[data-testid="password-submit"]')
    page.wait_for_url("**/staff/reports*")
