"""Demo-only controls: press a simulated panic button (gpiozero mock pin).

Mounted only when the node runs with ``demo = true`` (``bart demo``): it holds
the button's mock pin for the hold time, so the press takes the real path
(debounce, hold detection, alarm, store, light) — not a shortcut.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from . import deps

router = APIRouter(tags=["demo"])


@router.get("/demo/buttons")
async def demo_buttons(request: Request) -> dict[str, Any]:
    """The simulated buttons and their lights."""
    rt = deps.runtime(request)
    if rt.buttons is None:
        return {"buttons": []}
    out = []
    for spec in rt.buttons.specs.values():
        light = rt.buttons.lights.get(spec.id)
        out.append({"id": spec.id, "meeting_point": spec.meeting_point, "device": spec.device,
                    "light": light.state.value if light else None})
    return {"buttons": out}


@router.post("/demo/press/{button_id}", status_code=202)
async def demo_press(button_id: str, request: Request) -> dict[str, str]:
    """Hold a simulated wired button for the hold time (plus a little)."""
    rt = deps.runtime(request)
    if rt.buttons is None or button_id not in rt.buttons.buttons:
        raise HTTPException(404, "no simulated wired button with this id")
    rt.spawn(rt.buttons.press(button_id))
    return {"button": button_id, "pressed_for_s": str(rt.settings.hold_s + 0.2)}
