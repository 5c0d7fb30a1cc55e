"""Shared request helpers for the page and API routers.

The routers see the running node through :class:`PortalRuntime`, a small
interface of what the resident pages and the API use (as
:class:`node.team.session.TeamRuntime` for the team pages, and
:class:`node.portal.demo.DemoRuntime` for the demo pages): not the whole
:class:`node.runtime.NodeRuntime`, which this module does not import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fastapi import HTTPException, Request

from common.ratelimit import RateLimiter
from sync import Event

from ..config import NodeSettings
from ..hub import Hub
from ..reports import Submitted
from ..uplink import UplinkState
from .render import Renderer
from .views import Phase, alert_phase, is_visible, local_time


class PortalStore(Protocol):
    """What the resident pages and the API read from the node store."""

    def recent(self, kind: str, *, limit: int = 50, since_ms: int = 0) -> list[Event]: ...

    def acks_for(self, ref_ids: list[str]) -> dict[str, list[Event]]: ...

    def replaced_alerts(self, alert_ids: list[str]) -> set[str]: ...

    def get_event(self, event_id: str) -> Event | None: ...

    def receipt(self, code: str) -> tuple[str, Event] | None: ...

    def receipt_reply(self, code: str) -> tuple[str, int] | None: ...


class UplinkView(Protocol):
    """The uplink as the pages see it."""

    @property
    def state(self) -> UplinkState: ...

    @property
    def central_origin(self) -> str: ...


class MeshView(Protocol):
    """The mesh as ``/api/v1/mesh`` shows it."""

    def view(self) -> dict[str, Any]: ...


class CarryView(Protocol):
    """Carry's counters for ``/api/v1/mesh``."""

    def status(self) -> dict[str, Any]: ...


class PortalRuntime(Protocol):
    """What the resident pages and the API need of the running node."""

    @property
    def settings(self) -> NodeSettings: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def uplink(self) -> UplinkView | None: ...

    @property
    def mesh(self) -> MeshView | None: ...

    @property
    def carrier(self) -> CarryView | None: ...

    def require_store(self) -> PortalStore: ...

    def peer_names(self) -> dict[str, str]: ...

    def now_ms(self) -> int: ...

    def health(self) -> dict[str, Any]: ...

    async def submit_report(self, clean: Mapping[str, Any]) -> Submitted: ...


def runtime(request: Request) -> PortalRuntime:
    """The running node, as far as the resident pages and the API use it."""
    rt: PortalRuntime = request.app.state.runtime
    return rt


def settings(request: Request) -> NodeSettings:
    """The node's settings."""
    s: NodeSettings = request.app.state.settings
    return s


def renderer(request: Request) -> Renderer:
    """The page renderer."""
    r: Renderer = request.app.state.renderer
    return r


def client_key(request: Request) -> str:
    """The address a rate limit applies to."""
    return request.client.host if request.client else "unknown"


def allowed(request: Request, limiter_name: str) -> bool:
    """Take one unit of the client's budget; False when it is used up."""
    limiter: RateLimiter = getattr(request.app.state, limiter_name)
    return limiter.allow(client_key(request))


def refund(request: Request, limiter_name: str) -> None:
    """Give back the unit :func:`allowed` took (the request did not count)."""
    limiter: RateLimiter = getattr(request.app.state, limiter_name)
    limiter.refund(client_key(request))


def limit(request: Request, limiter_name: str) -> None:
    """Raise 429 when the client used up its budget."""
    if not allowed(request, limiter_name):
        raise HTTPException(429, "too many requests; wait a minute and try again",
                            headers={"Retry-After": "60"})


def central_origin(request: Request) -> str | None:
    """Origin of the central this node is enrolled with (None when it is not)."""
    uplink = getattr(runtime(request), "uplink", None)
    if uplink is None or not uplink.state.enabled:
        return None
    origin: str = uplink.central_origin
    return origin


def visible_alerts(request: Request, limit_count: int = 50,
                   since_ms: int = 0) -> list[Event]:
    """Public alerts residents of this node should see now, newest first
    (see :func:`visible_alert_phases`)."""
    return [e for e, _ in visible_alert_phases(request, limit_count, since_ms)]


def visible_alert_phases(request: Request, limit_count: int = 50,
                         since_ms: int = 0) -> list[tuple[Event, Phase]]:
    """Public alerts residents of this node should see now, newest first, each
    with its phase (new, someone coming, resolved).

    A "hidden" answer counts only from the alert's own origin (its team): a
    neighbouring node cannot hide another node's or central's alerts. An alert
    that a later alert of the same origin refers to was updated or cancelled
    (central's broadcasts, docs/protocol.md): only the newest is shown. A
    resolved alert leaves the list ``resolved_alert_keep_s`` after its answer.
    """
    rt = runtime(request)
    s = settings(request)
    now = rt.now_ms()  # the node's time (node/clock.py): a wrong wall clock expires nothing
    keep_ms = int(s.resolved_alert_keep_s * 1000)
    store = rt.require_store()
    events = store.recent("alert", limit=limit_count * 2, since_ms=since_ms)
    acks = store.acks_for([e.id for e in events])
    phases = {e.id: alert_phase(e, acks.get(e.id, ())) for e in events}
    hidden = {e.id for e in events
              if any(a.body["action"] == "hidden" and a.origin == e.origin
                     for a in acks.get(e.id, ()))}
    hidden |= store.replaced_alerts(list(phases))
    central = central_origin(request)
    return [(e, phases[e.id]) for e in events if e.id not in hidden
            and not phases[e.id].gone(now, keep_ms)
            and is_visible(e, s, now, central_origin=central)][:limit_count]


def alert_phase_of(request: Request, alert: Event) -> Phase:
    """The phase of one alert, from the answers the store holds now."""
    acks = runtime(request).require_store().acks_for([alert.id])
    return alert_phase(alert, acks.get(alert.id, ()))


def report_status(state: str, event: Event, s: NodeSettings,
                  lang: str = "nl", reply: tuple[str, int] | None = None) -> dict[str, Any]:
    """What the receipt lookup shows: never text or contact data; the desk's public
    answer (``reply``: text, ms) when there is one."""
    t, d = local_time(event.ts, s.timezone, lang)
    out: dict[str, Any] = {"receipt": event.body["receipt"], "state": state,
                           "category": event.body["category"], "ts": event.ts, "time": t,
                           "date": d, "reply": None}
    if reply is not None:
        rt, rd = local_time(reply[1], s.timezone, lang)
        out["reply"] = {"text": reply[0], "at": reply[1], "time": rt, "date": rd}
    return out


def translate(request: Request, lang: str, key: str, default: str | None = None) -> str:
    """A catalogue message; ``default`` when the catalogue lacks ``key``."""
    cat = renderer(request).catalogue
    for messages in (cat.messages(lang), cat.messages("nl")):
        if key in messages:
            return messages[key]
    return default if default is not None else key
