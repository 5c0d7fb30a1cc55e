"""Demo-only controls: panic buttons on mock pins, cutting the uplink and mesh links.

Mounted only when the node runs with ``demo = true`` (``bart demo``). A press
holds the button's mock pin for the hold time — on the node for wired buttons,
on the point-device process for point buttons — so it takes the real path
(debounce, hold detection, outbox, MQTT/TLS, store, light), not a shortcut.

Cutting the uplink pauses the node's real uplink (:meth:`node.uplink.Uplink.pause`):
events keep being stored and wait (the backlog in ``/healthz`` grows); restoring
it sends them to central in the next batches. That form carries a CSRF token
(double submit: a ``SameSite=Strict`` cookie and the same value in the form),
and a press from a page of another site is refused by its ``Origin``.

Cutting a mesh link blocks a peer in the node's mesh
(:meth:`node.mesh.engine.Mesh.block`): its sessions with that peer close and
what it sends is ignored, so events take another way round, or wait; healing
it lets the sessions start again, and both sides send what the other lacks.
``bart demo link`` does so on both nodes of a link; the ``/demo`` page's form
asks this node to do its own side and the other node's (its address from
``demo-links.json``).

``bart demo`` also writes ``demo-links.json``: the demo's central and every
node, so that each node's ``/demo`` page links all of them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from sync.bodies import SLUG

from ..config import NodeSettings
from ..hub import Hub
from ..uplink import UplinkState
from . import deps
from .resident import page_lang, render

if TYPE_CHECKING:
    from ..buttons import ButtonService
    from ..mesh.engine import Mesh

class DemoUplink(Protocol):
    """The uplink as the demo cuts and restores it."""

    @property
    def state(self) -> UplinkState: ...

    def pause(self, paused: bool) -> None: ...


class DemoTrust(Protocol):
    """Whom this node trusts as a mesh peer."""

    def peer(self, name: str) -> bool: ...


class DemoRuntime(Protocol):
    """What the demo pages need of the running node (not the whole
    :class:`node.runtime.NodeRuntime`)."""

    @property
    def settings(self) -> NodeSettings: ...

    @property
    def team_hub(self) -> Hub: ...

    @property
    def buttons(self) -> ButtonService | None: ...

    @property
    def uplink(self) -> DemoUplink | None: ...

    @property
    def mesh(self) -> Mesh | None: ...

    @property
    def trust(self) -> DemoTrust: ...

    def peer_names(self) -> dict[str, str]: ...

    def spawn(self, coro: Any) -> None: ...


def demo_runtime(request: Request) -> DemoRuntime:
    """The running node, as far as the demo pages use it."""
    rt: DemoRuntime = request.app.state.runtime
    return rt


router = APIRouter(tags=["demo"])
#: Written by ``bart demo``: button id → control URL of its point-device process.
DEMO_POINTS = "demo-points.json"
#: Written by ``bart demo``: {"central": {...}, "nodes": [{...}, ...]} for the links.
DEMO_LINKS = "demo-links.json"
CSRF_COOKIE = "bart_demo_csrf"
UPLINK_ACTIONS = {"cut": True, "restore": False}
#: ``POST /demo/link`` actions: whether the link is blocked afterwards.
LINK_ACTIONS = {"cut": True, "heal": False}
#: How long this node waits for the other node of a link (the /demo page's form).
PEER_TIMEOUT_S = 5.0


def _point_controls(request: Request) -> dict[str, str]:
    path = deps.settings(request).data_dir / DEMO_POINTS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


async def _control(url: str, method: str, path: str) -> bytes:
    """A tiny HTTP/1.0 request to a point device's local control port."""
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise HTTPException(502, "point control must be local")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", parts.port), 2)
    try:
        writer.write(f"{method} {path} HTTP/1.0\r\n\r\n".encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(65536), 2)
    finally:
        writer.close()
    return reply.split(b"\r\n\r\n", 1)[-1]


async def _buttons(request: Request) -> list[dict[str, Any]]:
    rt = demo_runtime(request)
    if rt.buttons is None:
        return []
    controls = _point_controls(request)
    out = []
    for spec in rt.buttons.specs.values():
        light = rt.buttons.lights.get(spec.id)
        state = light.state.value if light else None
        if spec.device == "point" and spec.id in controls:
            try:
                lights = json.loads(await _control(controls[spec.id], "GET", "/state"))
                state = lights["lights"].get(spec.id)
            except (OSError, ValueError, KeyError, TimeoutError):
                state = "unreachable"
        out.append({"id": spec.id, "meeting_point": spec.meeting_point,
                    "device": spec.device, "light": state})
    return out


@router.get("/demo/buttons")
async def demo_buttons(request: Request) -> dict[str, Any]:
    """The simulated buttons and their lights."""
    return {"buttons": await _buttons(request)}


def _links(request: Request) -> dict[str, Any]:
    """The demo's central and nodes (empty when ``bart demo`` wrote none)."""
    path = deps.settings(request).data_dir / DEMO_LINKS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    nodes = [n for n in data.get("nodes", []) if isinstance(n, dict)
             and str(n.get("url", "")).startswith("http")]
    central = data.get("central")
    if not (isinstance(central, dict) and str(central.get("url", "")).startswith("http")):
        central = None
    return {"central": central, "nodes": nodes}


def _uplink_state(request: Request) -> dict[str, Any]:
    """The uplink as ``/healthz`` shows it."""
    uplink = demo_runtime(request).uplink
    return uplink.state.to_dict() if uplink is not None else {"enabled": False}


def _foreign_origin(request: Request) -> bool:
    """True for a request a page of another site made (its ``Origin`` names another host).

    Our pages send ``Referrer-Policy: no-referrer``, so a browser posts their forms
    with ``Origin: null``: that says nothing either way, and the token decides.
    """
    origin = request.headers.get("origin")
    return origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host")


def _csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)


def _with_csrf_cookie(response: Response, token: str) -> Response:
    response.set_cookie(CSRF_COOKIE, token, path="/demo", samesite="strict", httponly=True)
    return response


def _csrf_ok(request: Request, given: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    return (not _foreign_origin(request) and bool(cookie) and bool(given)
            and hmac.compare_digest(str(cookie).encode(), given.encode()))


def _lacks(mesh: Mesh, peer: str) -> int | None:
    """How many of the events held here ``peer`` lacks, by the newest vector it sent.

    Two static peers dial each other: two sessions, and a peer sends its periodic
    vector on only one of them, so the one :meth:`Mesh.view` shows may keep the
    vector of its hello. What a peer holds only grows: the smallest count is the
    newest.
    """
    counts = [sum(mesh.lacks(link.vector).values()) for link in list(mesh.links.values())
              if link.peer == peer and link.vector is not None]
    return min(counts) if counts else None


def _mesh_state(request: Request) -> dict[str, Any]:
    """This node's mesh links: one per other node of the demo (and any other peer),
    each connected, cut or waiting, with its round trip and what it lacks of ours."""
    rt = demo_runtime(request)
    mesh = rt.mesh
    if mesh is None:
        return {"enabled": False, "peers": []}
    view = mesh.view()
    live = {p["name"]: p for p in view["peers"]}
    blocked = set(view["blocked"])
    me = deps.settings(request).name
    known = {str(n.get("name")): str(n.get("display_name") or n.get("name"))
             for n in _links(request).get("nodes", []) if n.get("name") != me}
    names = rt.peer_names()
    peers = []
    for name in [*known, *sorted((set(live) | blocked) - set(known))]:
        link = live.get(name)
        peers.append({
            "name": name, "display_name": known.get(name) or names.get(name, name),
            "state": "cut" if name in blocked else "connected" if link else "waiting",
            "rtt_ms": link["rtt_ms"] if link else None,
            "lacks": _lacks(mesh, name) if link else None})
    return {"enabled": True, "peers": peers}


async def _page(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = _csrf_token(request)
    response = render(request, "demo.html", status=status, buttons=await _buttons(request),
                      links=_links(request), uplink=_uplink_state(request),
                      mesh=_mesh_state(request), this_node=deps.settings(request).name,
                      team_watching=demo_runtime(request).team_hub.subscriber_count,
                      csrf_token=token, error=error)
    return _with_csrf_cookie(response, token)


@router.get("/demo", include_in_schema=False)
async def demo_page(request: Request) -> Response:
    """Links to everything in the demo, the uplink control, a press control per button."""
    return await _page(request)


@router.get("/demo/uplink")
async def demo_uplink_state(request: Request) -> Response:
    """The uplink's state (as in ``/healthz``) and a CSRF token for ``POST /demo/uplink``.

    Sets the token's cookie too: a client that keeps cookies (``bart demo uplink``)
    can then post. Another site's page cannot read this answer (no CORS).
    """
    token = _csrf_token(request)
    response = JSONResponse({"uplink": _uplink_state(request), "csrf": token},
                            headers={"Cache-Control": "no-store"})
    return _with_csrf_cookie(response, token)


@router.post("/demo/uplink", response_model=None)
async def demo_uplink(request: Request) -> Response:
    """Cut (``action=cut``) or restore (``action=restore``) the uplink to central.

    A form post with the CSRF token of ``GET /demo`` or ``GET /demo/uplink``
    (field ``csrf``, and its cookie). While cut, events are stored as always
    and wait; restored, they go to central in the next batches.
    """
    form = await request.form(max_files=0, max_fields=5)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    html = "text/html" in request.headers.get("accept", "")
    action = values.get("action", "")
    if not _csrf_ok(request, values.get("csrf", "")):
        if html:
            msg = deps.translate(request, page_lang(request), "demo.uplink.csrf")
            return await _page(request, error=msg, status=403)
        raise HTTPException(403, "missing or wrong CSRF token (GET /demo/uplink gives one)")
    if action not in UPLINK_ACTIONS:
        raise HTTPException(422, "action must be cut or restore")
    uplink = demo_runtime(request).uplink
    if uplink is None or not uplink.state.enabled:
        raise HTTPException(409, "this node is not enrolled with a central: it has no uplink")
    uplink.pause(UPLINK_ACTIONS[action])
    if html:
        return RedirectResponse("/demo", status_code=303)
    return JSONResponse({"uplink": uplink.state.to_dict()},
                        headers={"Cache-Control": "no-store"})


@router.get("/demo/link")
async def demo_link_state(request: Request) -> Response:
    """This node's mesh links (as the ``/demo`` page shows them) and a CSRF token for
    ``POST /demo/link``, whose cookie it sets (as ``GET /demo/uplink`` does)."""
    token = _csrf_token(request)
    response = JSONResponse({"mesh": _mesh_state(request), "csrf": token},
                            headers={"Cache-Control": "no-store"})
    return _with_csrf_cookie(response, token)


async def _fields(request: Request) -> dict[str, str]:
    """The string fields of a form, or of a JSON object (``Content-Type: application/json``)."""
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        try:
            data = await request.json()
        except ValueError as exc:
            raise HTTPException(422, "the body is not JSON") from exc
        if not isinstance(data, dict):
            raise HTTPException(422, "the body must be a JSON object")
        return {str(k): ("1" if v is True else v) for k, v in data.items()
                if isinstance(v, str) or v is True}
    form = await request.form(max_files=0, max_fields=6)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _peer_url(request: Request, peer: str) -> str | None:
    """The portal of ``peer`` in this demo (from demo-links.json; loopback only)."""
    for node in _links(request).get("nodes", []):
        url = str(node.get("url", ""))
        if node.get("name") == peer and urlsplit(url).hostname == "127.0.0.1":
            return url.rstrip("/")
    return None


async def _other_side(request: Request, peer: str, action: str) -> str:
    """Ask ``peer``'s node to do its side of the link; "" when it did, else why not."""
    url = _peer_url(request, peer)
    if url is None:
        return f"{peer} is not a node of this demo (demo-links.json)"
    me = deps.settings(request).name
    try:
        async with httpx.AsyncClient(timeout=PEER_TIMEOUT_S, trust_env=False) as client:
            first = await client.get(f"{url}/demo/link")
            first.raise_for_status()
            reply = await client.post(f"{url}/demo/link", data={
                "peer": me, "action": action, "csrf": first.json()["csrf"]})
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return f"{url} did not answer: {exc}"
    if reply.status_code != 200:
        try:
            detail = str(reply.json().get("detail", reply.reason_phrase))
        except (ValueError, AttributeError):
            detail = reply.reason_phrase
        return f"{url}: {reply.status_code} {detail}"
    return ""


@router.post("/demo/link", response_model=None)
async def demo_link(request: Request) -> Response:
    """Cut (``action=cut``) or heal (``action=heal``) this node's mesh link with ``peer``.

    Form fields (or a JSON object) ``peer``, ``action`` and ``csrf`` (the token of
    ``GET /demo`` or ``GET /demo/link``, with its cookie). Cut, this node closes
    its sessions with ``peer`` and ignores it; healed, the sessions start again
    and each side sends what the other lacks. Only this node's side, unless
    ``both=1`` (the ``/demo`` page's form): then this node asks ``peer``'s node
    to do its side too.
    """
    values = await _fields(request)
    html = "text/html" in request.headers.get("accept", "")
    if not _csrf_ok(request, values.get("csrf", "")):
        if html:
            msg = deps.translate(request, page_lang(request), "demo.uplink.csrf")
            return await _page(request, error=msg, status=403)
        raise HTTPException(403, "missing or wrong CSRF token (GET /demo/link gives one)")
    action, peer = values.get("action", ""), values.get("peer", "")
    if action not in LINK_ACTIONS:
        raise HTTPException(422, "action must be cut or heal")
    if not SLUG.fullmatch(peer):
        raise HTTPException(422, "peer must be a node name")
    rt = demo_runtime(request)
    mesh = rt.mesh
    if mesh is None:
        raise HTTPException(409, "this node's mesh is off (not enrolled with a central, "
                            "or mesh.port is 0): it has no links")
    if not (rt.trust.peer(peer) or peer in mesh.blocked):
        raise HTTPException(422, f"{peer} is not a peer of this node (not in central's "
                            "roster)")
    mesh.block(peer, LINK_ACTIONS[action])
    other = (await _other_side(request, peer, action)
             if values.get("both") in ("1", "true", "on") else None)
    if html:
        if other:
            msg = deps.translate(request, page_lang(request), "demo.mesh.other_side")
            return await _page(request, error=f"{msg} ({other})", status=502)
        return RedirectResponse("/demo", status_code=303)
    body: dict[str, Any] = {"link": {"peer": peer, "cut": LINK_ACTIONS[action]},
                            "mesh": _mesh_state(request)}
    if other is not None:
        body["other_side"] = {"ok": not other, "detail": other}
    return JSONResponse(body, status_code=502 if other else 200,
                        headers={"Cache-Control": "no-store"})


@router.post("/demo/press/{button_id}", status_code=202, response_model=None)
async def demo_press(button_id: str, request: Request,
                     hold_s: float | None = Query(None, gt=0, le=60),
                     ) -> dict[str, str] | Response:
    """Hold a simulated button for the hold time (plus a little).

    ``?hold_s=`` holds a wired button that long instead (a short press, a
    press cut by a power cut in a test).

    A browser's post (it sends ``Origin``) must carry the form's CSRF token; a
    client that is not a browser (``bart demo press``, tests) sends no ``Origin``.
    """
    if "origin" in request.headers:
        form = await request.form(max_files=0, max_fields=5)
        token = form.get("csrf")
        if not _csrf_ok(request, token if isinstance(token, str) else ""):
            raise HTTPException(403, "a demo control may only be used from the node's "
                                "own /demo page")
    rt = demo_runtime(request)
    controls = _point_controls(request)
    if rt.buttons is not None and button_id in rt.buttons.buttons:
        rt.spawn(rt.buttons.press(button_id, hold_s))
    elif hold_s is not None and button_id in controls:
        raise HTTPException(422, "hold_s is for wired buttons; a point device holds its own")
    elif button_id in controls:
        await _control(controls[button_id], "POST", f"/press/{button_id}")
    else:
        raise HTTPException(404, "no simulated button with this id")
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/demo", status_code=303)
    held = rt.settings.hold_s + 0.2 if hold_s is None else hold_s
    return {"button": button_id, "pressed_for_s": str(held)}
