"""Who is logged in: team accounts on the app, session cookie, CSRF tokens.

The session cookie ``bart_team`` is HttpOnly, SameSite=Strict, Path=/team and
Secure when the request came over https. A form's CSRF token is
HMAC-SHA256(session token, "csrf"): bound to the session, never stored.
Also the interface the team pages expect of the runtime (:class:`TeamRuntime`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response

from common import csrf, logins
from common.csrf import csrf_token as csrf_token  # re-exported for the pages
from sync import Event

from ..config import NodeSettings
from ..hub import Hub
from ..portal import deps
from . import TEAM_DB
from .accounts import Member, TeamAccounts

COOKIE = "bart_team"
COOKIE_PATH = "/team"
_accounts_lock = threading.Lock()


class TeamStore(Protocol):
    """What the team pages read from the node store."""

    def open_items(self, limit: int = 100, *,
                   area: str | None = None) -> list[dict[str, Any]]: ...

    def get_event(self, event_id: str) -> Event | None: ...

    def button_faults(self) -> list[tuple[str, int]]: ...


class TeamRuntime(Protocol):
    """What the team pages need of the running node."""

    team_hub: Hub

    def require_store(self) -> TeamStore: ...

    async def team_ack(self, ref: str, action: str, by: str, note: str = "",
                       to: str | None = None) -> Event: ...

    async def team_alert(self, title: str, text: str, severity: str, expires_ms: int | None,
                         by: str) -> Event: ...

    def peer_names(self) -> dict[str, str]: ...

    def now_ms(self) -> int: ...

    def mesh_peers(self) -> list[str] | None: ...


def open_accounts(app: FastAPI, settings: NodeSettings) -> TeamAccounts:
    """Open ``<data_dir>/team.db`` for ``app`` (else the first team request does)."""
    team = TeamAccounts(settings.data_dir / TEAM_DB)
    app.state.team_accounts = team
    return team


def close_accounts(app: FastAPI) -> None:
    """Close the app's team accounts, if they were opened (lifespan shutdown)."""
    team: TeamAccounts | None = getattr(app.state, "team_accounts", None)
    if team is not None:
        team.close()
        app.state.team_accounts = None


def accounts(request: Request) -> TeamAccounts:
    """The node's team accounts (opened on first use)."""
    state = request.app.state
    team: TeamAccounts | None = getattr(state, "team_accounts", None)
    if team is None:
        with _accounts_lock:
            team = getattr(state, "team_accounts", None)
            if team is None:
                team = TeamAccounts(deps.settings(request).data_dir / TEAM_DB)
                state.team_accounts = team
    return team


def team_runtime(request: Request) -> TeamRuntime:
    """The running node, as far as the team pages use it."""
    rt: TeamRuntime = request.app.state.runtime
    return rt


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site
    (:func:`common.csrf.same_origin`: Origin, else Referer, against Host)."""
    return csrf.same_origin(request.headers)


def csrf_ok(request: Request, given: str) -> bool:
    """Same origin, and ``given`` is the token of the request's session (length capped)."""
    return csrf.csrf_ok(request.cookies.get(COOKIE), given, request.headers)


async def current_member(request: Request, *, touch: bool = True) -> Member | None:
    """The member whose session cookie came with ``request``, or None."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(accounts(request).session, token, touch=touch)


async def require_member(request: Request) -> Member:
    """The logged-in member; else 303 to the login page (or to choose a password)."""
    return logins.require_login(await current_member(request), request.url.path,
                                login_url="/team/login", choose_url="/team/password")


async def require_stream_member(request: Request) -> Member:
    """The logged-in member for the live stream; else 401 (no redirect for EventSource)."""
    member = await current_member(request, touch=False)
    if member is None or member.must_change:
        raise HTTPException(401, "log in first")
    return member


MemberDep = Annotated[Member, Depends(require_member)]


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    """Give the browser the session cookie (a browser-session cookie: no Max-Age)."""
    response.set_cookie(COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def read_form(request: Request) -> dict[str, str]:
    """The text fields of a posted form (no files; at most 20 fields)."""
    form = await request.form(max_files=0, max_fields=20)
    return {k: v for k, v in form.items() if isinstance(v, str)}
