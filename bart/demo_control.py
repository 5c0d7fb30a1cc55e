"""``bart demo press``, ``bart demo uplink`` and ``bart demo link``: drive a running
``bart demo``.

The running demo leaves its addresses in :data:`STATE_FILE` (central, and
per node its portal URL and buttons). The commands go through the nodes' own
demo endpoints (``/demo/press/…``, ``/demo/uplink``, ``/demo/link``), as the
``/demo`` page does, and answer in words; what goes wrong is raised as
:class:`bart.errors.CommandError` for ``bart``'s one place that says it.

The file is also the demo's claim on this machine: ``bart demo`` takes it
before it starts anything (:func:`claim_state`), and a second ``bart demo``
finds it and refuses, naming the running one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

from common.files import write_atomic

from .errors import CommandError, Unavailable

#: Where a running demo leaves its addresses, unless $BART_DEMO_STATE names a file.
STATE_FILE = Path(tempfile.gettempdir()) / f"bart-demo-{os.getuid()}.json"


def state_file() -> Path:
    """The file a running demo leaves its addresses in ($BART_DEMO_STATE or STATE_FILE)."""
    return Path(os.environ.get("BART_DEMO_STATE") or STATE_FILE)


def write_state(state: dict[str, Any]) -> None:
    """Record the running demo (atomically: a reader never sees half a file)."""
    path = state_file()
    write_atomic(path, json.dumps(state, indent=1).encode(), mode=0o644)


def _alive(pid: object) -> bool:
    """True when ``pid`` is a running ``bart demo`` (not a process that reused its id)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"demo" in cmdline


def _running() -> dict[str, Any] | None:
    """The state of the demo that holds the state file, if it still runs."""
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and _alive(state.get("pid")) else None


def claim_state(data_dir: Path | None) -> None:
    """Take the state file for this process before the demo starts anything; a
    CommandError naming the other demo when one runs (a file left by a demo that has
    ended is taken over)."""
    path = state_file()
    mine = {"pid": os.getpid(), "starting": True, "data_dir": str(data_dir or ""),
            "central": "", "url": "", "nodes": []}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    for _ in range(2):
        tmp.write_text(json.dumps(mine, indent=1))
        try:
            os.link(tmp, path)  # atomic, and only when no file is there
            return
        except FileExistsError:
            other = _running()
            if other is not None:
                raise _refusal(other) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a demo that ended without clearing it
        finally:
            tmp.unlink(missing_ok=True)
    raise Unavailable(f"another bart demo is starting at this moment ({path})",
                      "wait a few seconds, then: bart demo press BUTTON (or start again)")


def _refusal(other: dict[str, Any]) -> CommandError:
    pid = other.get("pid")
    where = (f": {other['url']}/demo, central {other.get('central', '?')}"
             if other.get("url") else " (still starting)")
    kept = f", data in {other['data_dir']}" if other.get("data_dir") else ""
    return Unavailable(
        f"a demo is running already on this machine (pid {pid}{kept}){where}",
        f"use that one, or stop it first (Ctrl-C where it runs, or: kill {pid}); a second "
        "demo beside it needs its own state file: BART_DEMO_STATE=/tmp/other.json bart demo")


def clear_state() -> None:
    """Forget the demo's addresses, unless another demo has written them since."""
    path = state_file()
    try:
        if json.loads(path.read_text()).get("pid") != os.getpid():
            return
    except (OSError, ValueError, AttributeError):
        return
    path.unlink(missing_ok=True)


def read_state() -> dict[str, Any]:
    """The running demo's addresses; Unavailable when no demo runs (or it is starting)."""
    state = _running()
    if state is None or not isinstance(state.get("nodes"), list):
        raise Unavailable("no demo is running on this machine", "start one: bart demo")
    if state.get("starting"):
        raise Unavailable(f"the demo (pid {state.get('pid')}) is still starting",
                          "try again in a few seconds: it prints its addresses when ready")
    return state


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--url {url} is not an http URL",
                           "give the node's portal, e.g. --url http://127.0.0.1:8080")
    return url.rstrip("/")


def press(button: str, url: str | None = None) -> int:
    """``bart demo press BUTTON``: hold a simulated button of the running demo.

    Without ``url``, the node is the one of the running demo that has this button.
    """
    node = ""
    if url is None:
        state = read_state()
        owners = [n for n in state["nodes"] if button in n.get("buttons", [])]
        if not owners:
            known = ", ".join(b for n in state["nodes"] for b in n.get("buttons", []))
            raise CommandError(f"no button {button!r} in the running demo",
                               f"its buttons: {known}")
        node, url = str(owners[0].get("name", "")), str(owners[0]["url"])
    base = _http_url(url)
    try:
        reply = httpx.post(f"{base}/demo/press/{button}", timeout=10)
    except httpx.HTTPError as exc:
        raise _no_answer(base, exc) from exc
    if reply.status_code >= 400:
        raise CommandError(f"button {button} was not pressed: {_detail(reply)} "
                           f"({base}, {reply.status_code})", f"see the buttons on {base}/demo")
    held = _field(reply, "pressed_for_s")
    print(f"Pressed {button}{f' of {node}' if node else ''}"
          f"{f', held {held} s as a person would' if held else ''}: its alarm shows "
          f"on the team page {base}/team in a moment (answer it there), and the light "
          "beside the button says stored.")
    return 0


def _field(reply: httpx.Response, key: str) -> str:
    try:
        return str(reply.json().get(key, ""))
    except (ValueError, AttributeError):
        return ""


def _no_answer(base: str, exc: Exception) -> Unavailable:
    return Unavailable(f"the demo's node at {base} does not answer ({type(exc).__name__})",
                       "is the demo still running? Start it: bart demo")


def _find_node(state: dict[str, Any], node: str) -> tuple[str, str]:
    """Name and portal URL of ``node``: its name, or its number (1, 2, 3) in the demo."""
    nodes = state["nodes"]
    for i, n in enumerate(nodes, 1):
        if node in (n.get("name"), str(i)):
            return str(n["name"]), str(n["url"])
    names = ", ".join(f"{i} = {n.get('name')}" for i, n in enumerate(nodes, 1))
    raise CommandError(f"no node {node!r} in the running demo",
                       f"name one by its name or number: {names}")


def uplink(node: str, action: str, url: str | None = None) -> int:
    """``bart demo uplink NODE cut|restore``: cut or restore a node's uplink to central.

    Takes the CSRF token and its cookie from ``GET /demo/uplink``, then posts the
    form as the ``/demo`` page does.
    """
    if url is None:
        node, url = _find_node(read_state(), node)
    base = _http_url(url)
    try:
        with httpx.Client(timeout=10) as client:
            first = client.get(f"{base}/demo/uplink")
            if first.status_code != 200:
                raise CommandError(f"{base} has no demo uplink control: {_detail(first)} "
                                   f"({first.status_code})", "is it a node of bart demo?")
            reply = client.post(f"{base}/demo/uplink",
                                data={"action": action, "csrf": first.json()["csrf"]})
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise _no_answer(base, exc) from exc
    if reply.status_code != 200:
        done = "cut" if action == "cut" else "restored"
        raise CommandError(f"the uplink of {node} was not {done}: {_detail(reply)} "
                           f"({reply.status_code})")
    state_now = reply.json()["uplink"]
    if action == "cut":
        print(f"Uplink of {node} cut: its events are stored and wait "
              f"(backlog {state_now.get('backlog', '?')}, see {base}/demo or /healthz).")
        print(f"  restore it with: bart demo uplink {node} restore")
    else:
        print(f"Uplink of {node} restored: what waited (backlog "
              f"{state_now.get('backlog', '?')}) goes to central in the next batches.")
    return 0


def _set_link(client: httpx.Client, url: str, peer: str, action: str) -> str:
    """Cut or heal ``url``'s node's side of its link with ``peer``; "" or what went wrong."""
    base = url.rstrip("/")
    try:
        first = client.get(f"{base}/demo/link")
        if first.status_code != 200:
            return f"{base}/demo/link: {first.status_code} {_detail(first)}"
        reply = client.post(f"{base}/demo/link",
                            data={"peer": peer, "action": action, "csrf": first.json()["csrf"]})
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return f"{base} does not answer ({type(exc).__name__})"
    if reply.status_code != 200:
        return f"{base}: {reply.status_code} {_detail(reply)}"
    return ""


def link(a: str, b: str, action: str) -> int:
    """``bart demo link A B cut|heal``: cut or heal the mesh link between two nodes of the
    running demo, on both sides (each node's ``POST /demo/link`` for the other)."""
    state = read_state()
    (name_a, url_a), (name_b, url_b) = _find_node(state, a), _find_node(state, b)
    if name_a == name_b:
        raise CommandError(f"{name_a} has no mesh link with itself", "name two nodes")
    url_a, url_b = _http_url(url_a), _http_url(url_b)
    with httpx.Client(timeout=10) as client:
        failed = [f"{name}: {why}" for name, why in (
            (name_a, _set_link(client, url_a, name_b, action)),
            (name_b, _set_link(client, url_b, name_a, action))) if why]
    if failed:
        raise CommandError(f"link {action}: {'; '.join(failed)}",
                           ("the other side is done; " if len(failed) == 1 else "")
                           + f"try again: bart demo link {a} {b} {action}")
    others = [str(n["name"]) for n in state["nodes"] if n.get("name") not in (name_a, name_b)]
    around = f" through {' and '.join(others)}" if others else ""
    if action == "cut":
        print(f"Mesh link between {name_a} and {name_b} cut: they no longer pass events to "
              f"each other. An alarm on one still reaches the other{around}, hop by hop "
              f"(see {url_a}/api/v1/mesh and {url_b}/demo).")
        button = next((btn for n in state["nodes"] if n.get("name") == name_a
                       for btn in n.get("buttons", [])), None)
        if button:
            print(f"  try: bart demo press {button}   (then look at {url_b}/team)")
        print(f"  heal it with: bart demo link {a} {b} heal")
    else:
        print(f"Mesh link between {name_a} and {name_b} healed: their sessions start again, "
              "each sends the other what it lacks, and new events go straight across "
              f"(see {url_a}/demo).")
    return 0


def _detail(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("detail", reply.reason_phrase))
    except (ValueError, AttributeError):
        return reply.reason_phrase
