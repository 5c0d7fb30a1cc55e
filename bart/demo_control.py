"""``bart demo press``, ``bart demo uplink`` and ``bart demo link``: drive a running
``bart demo``.

The running demo leaves its addresses in :data:`STATE_FILE` (central, and
per node its portal URL and buttons). The commands go through the nodes' own
demo endpoints (``/demo/press/…``, ``/demo/uplink``, ``/demo/link``), as the
``/demo`` page does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

#: Where a running demo leaves its addresses, unless $BART_DEMO_STATE names a file.
STATE_FILE = Path(tempfile.gettempdir()) / f"bart-demo-{os.getuid()}.json"


def state_file() -> Path:
    """The file a running demo leaves its addresses in ($BART_DEMO_STATE or STATE_FILE)."""
    return Path(os.environ.get("BART_DEMO_STATE") or STATE_FILE)


def write_state(state: dict[str, Any]) -> None:
    """Record the running demo (atomically: a reader never sees half a file)."""
    path = state_file()
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def clear_state() -> None:
    """Forget the demo's addresses, unless another demo has written them since."""
    path = state_file()
    try:
        if json.loads(path.read_text()).get("pid") != os.getpid():
            return
    except (OSError, ValueError, AttributeError):
        return
    path.unlink(missing_ok=True)


def read_state() -> dict[str, Any] | None:
    """The running demo's addresses, or None (with a message on stderr)."""
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("nodes"), list):
        print("bart: no demo is running (start one: bart demo)", file=sys.stderr)
        return None
    return state


def _http_url(url: str) -> bool:
    if url.startswith(("http://", "https://")):
        return True
    print(f"bart: {url} is not an http URL", file=sys.stderr)
    return False


def press(button: str, url: str | None = None) -> int:
    """``bart demo press BUTTON``: hold a simulated button of the running demo.

    Without ``url``, the node is the one of the running demo that has this button.
    """
    if url is None:
        state = read_state()
        if state is None:
            return 1
        owners = [n["url"] for n in state["nodes"] if button in n.get("buttons", [])]
        if not owners:
            known = ", ".join(b for n in state["nodes"] for b in n.get("buttons", []))
            print(f"bart: no button {button!r} in the running demo (buttons: {known})",
                  file=sys.stderr)
            return 1
        url = str(owners[0])
    if not _http_url(url):
        return 1
    try:
        reply = httpx.post(f"{url.rstrip('/')}/demo/press/{button}", timeout=10)
    except httpx.HTTPError as exc:
        print(f"bart: demo at {url} did not answer: {exc}", file=sys.stderr)
        return 1
    if reply.status_code >= 400:
        print(f"bart: {button}: {reply.status_code} {_detail(reply)}", file=sys.stderr)
        return 1
    print(f"pressed {button}: {reply.status_code}")
    return 0


def _find_node(state: dict[str, Any], node: str) -> tuple[str, str] | None:
    """Name and portal URL of ``node``: its name, or its number (1, 2, 3) in the demo."""
    nodes = state["nodes"]
    for i, n in enumerate(nodes, 1):
        if node in (n.get("name"), str(i)):
            return str(n["name"]), str(n["url"])
    names = ", ".join(f"{i} = {n.get('name')}" for i, n in enumerate(nodes, 1))
    print(f"bart: no node {node!r} in the running demo (nodes: {names})", file=sys.stderr)
    return None


def uplink(node: str, action: str, url: str | None = None) -> int:
    """``bart demo uplink NODE cut|restore``: cut or restore a node's uplink to central.

    Takes the CSRF token and its cookie from ``GET /demo/uplink``, then posts the
    form as the ``/demo`` page does.
    """
    if url is None:
        state = read_state()
        if state is None:
            return 1
        found = _find_node(state, node)
        if found is None:
            return 1
        node, url = found
    if not _http_url(url):
        return 1
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=10) as client:
            first = client.get(f"{base}/demo/uplink")
            if first.status_code != 200:
                print(f"bart: {base}/demo/uplink: {first.status_code} {_detail(first)}",
                      file=sys.stderr)
                return 1
            reply = client.post(f"{base}/demo/uplink",
                                data={"action": action, "csrf": first.json()["csrf"]})
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"bart: demo at {base} did not answer: {exc}", file=sys.stderr)
        return 1
    if reply.status_code != 200:
        print(f"bart: uplink {action}: {reply.status_code} {_detail(reply)}", file=sys.stderr)
        return 1
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
        return f"demo at {base} did not answer: {exc}"
    if reply.status_code != 200:
        return f"{base}: {reply.status_code} {_detail(reply)}"
    return ""


def link(a: str, b: str, action: str) -> int:
    """``bart demo link A B cut|heal``: cut or heal the mesh link between two nodes of the
    running demo, on both sides (each node's ``POST /demo/link`` for the other)."""
    state = read_state()
    if state is None:
        return 1
    first, second = _find_node(state, a), _find_node(state, b)
    if first is None or second is None:
        return 1
    (name_a, url_a), (name_b, url_b) = first, second
    if name_a == name_b:
        print(f"bart: {name_a} has no mesh link with itself (name two nodes)", file=sys.stderr)
        return 1
    if not (_http_url(url_a) and _http_url(url_b)):
        return 1
    with httpx.Client(timeout=10) as client:
        failed = [f"{name}: {why}" for name, why in (
            (name_a, _set_link(client, url_a, name_b, action)),
            (name_b, _set_link(client, url_b, name_a, action))) if why]
    if failed:
        for line in failed:
            print(f"bart: link {action}: {line}", file=sys.stderr)
        if len(failed) == 1:
            print(f"bart: the other side is done; try again: bart demo link {a} {b} {action}",
                  file=sys.stderr)
        return 1
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
