"""Demo-only controls: press a simulated panic button (gpiozero mock pin).

Mounted only when the node runs with ``demo = true`` (``bart demo``). A press
holds the button's mock pin for the hold time — on the node for wired buttons,
on the point-device process for point buttons — so it takes the real path
(debounce, hold detection, outbox, MQTT/TLS, store, light), not a shortcut.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from . import deps
from .resident import render

router = APIRouter(tags=["demo"])
#: Written by ``bart demo``: button id → control URL of its point-device process.
DEMO_POINTS = "demo-points.json"


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
    rt = deps.runtime(request)
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


@router.get("/demo", include_in_schema=False)
async def demo_page(request: Request) -> Response:
    """A page with a press control per simulated button."""
    return render(request, "demo.html", buttons=await _buttons(request))


@router.post("/demo/press/{button_id}", status_code=202, response_model=None)
async def demo_press(button_id: str, request: Request) -> dict[str, str] | Response:
    """Hold a simulated button for the hold time (plus a little)."""
    rt = deps.runtime(request)
    controls = _point_controls(request)
    if rt.buttons is not None and button_id in rt.buttons.buttons:
        rt.spawn(rt.buttons.press(button_id))
    elif button_id in controls:
        await _control(controls[button_id], "POST", f"/press/{button_id}")
    else:
        raise HTTPException(404, "no simulated button with this id")
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/demo", status_code=303)
    return {"button": button_id, "pressed_for_s": str(rt.settings.hold_s + 0.2)}
