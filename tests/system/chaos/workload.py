"""The chaos run's clients: residents reporting on every node, a panic button on node-a.

Each client runs on a thread of its own inside its node's network namespace
and records every operation in the :class:`~.history.History`:

- a resident's report to the authorities (``POST /api/v1/reports``, audience
  ``authorities``): acknowledged by a 201 with the report's id;
- a resident's report for the neighbours too (audience ``both``): the same
  201, and the node appends a public alert referring to it — this is the
  "alert" the checker follows onto every node;
- a hold of node-a's wired panic button (``POST /demo/press/…``, gpiozero's
  MockFactory pin held for the hold time): acknowledged when the button's light
  turns to ``stored`` from a state that was not (the light says stored only after
  the COMMIT). After each stored press a team member of node-a resolves the alarm
  (``POST /team/ack``), which turns the light to ``resolved``: the next press can
  be seen as new.

Anything but a 2xx is not an acknowledgement: a refused or unanswered request
may or may not have been stored, and the checker demands nothing of it beyond
"not twice".
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import httpx

from .history import History, Op

#: Seconds a client waits for an answer; a node being killed answers nothing.
REQUEST_TIMEOUT_S = 5.0
STORED = ("stored", "coming")


class Workload:
    """Reporter threads for each node and a presser for node-a; ``stop()`` ends them."""

    def __init__(self, history: History, nodes: dict[str, Any], in_netns: Callable[[str], Any],
                 *, button: str, press_node: str, team_member: Callable[[], Any],
                 pause_s: tuple[float, float] = (0.15, 0.6)) -> None:
        self.history = history
        self.nodes = nodes
        self.in_netns = in_netns
        self.button = button
        self.press_node = press_node
        self.team_member = team_member
        self.pause_s = pause_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self) -> None:
        for i, name in enumerate(self.nodes):
            rng = random.Random(self.history.seed * 1000 + i)
            self._threads.append(threading.Thread(target=self._guard, args=(self._reporter,
                                                                            name, rng),
                                                  name=f"chaos-report-{name}", daemon=True))
        rng = random.Random(self.history.seed * 1000 + 99)
        self._threads.append(threading.Thread(target=self._guard, args=(self._presser,
                                                                        self.press_node, rng),
                                              name="chaos-press", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def _guard(self, target: Callable[[str, random.Random], None], name: str,
               rng: random.Random) -> None:
        try:
            with self.in_netns(self.nodes[name].netns):
                target(name, rng)
        except BaseException as exc:  # the test fails on it, with the history
            self.errors.append(exc)

    # -- residents --------------------------------------------------------------------

    def _reporter(self, name: str, rng: random.Random) -> None:
        node = self.nodes[name]
        n = 0
        with httpx.Client(base_url=node.base_url, timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.wait(rng.uniform(*self.pause_s)):
                n += 1
                alert = rng.random() < 0.5
                kind = "alert" if alert else "report"
                text = f"chaos {self.history.seed} {name} {kind} {n}"
                op = self.history.begin(kind, name, text)
                body = {"category": "suspicious" if alert else "nuisance", "text": text,
                        "audience": "both" if alert else "authorities",
                        "place": {"point": None, "text": "Hoefkade"}}
                self._post_report(client, op, body)

    def _post_report(self, client: httpx.Client, op: Op, body: dict[str, Any]) -> None:
        try:
            r = client.post("/api/v1/reports", json=body)
        except httpx.ConnectError as exc:  # never reached a listening portal
            self.history.end(op, "refused", detail=f"connect: {exc}")
            return
        except httpx.HTTPError as exc:  # sent, maybe stored: unknown
            self.history.end(op, "unknown", detail=f"{type(exc).__name__}: {exc}")
            return
        if r.status_code == 201:
            self.history.end(op, "ok", r.status_code, str(r.json()["id"]))
        else:
            self.history.end(op, "refused", r.status_code, detail=r.text[:160])

    # -- the panic button -----------------------------------------------------------------

    def _presser(self, name: str, rng: random.Random) -> None:
        node = self.nodes[name]
        member: Any = None
        n = 0
        with httpx.Client(base_url=node.base_url, timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.wait(rng.uniform(0.5, 2.0)):
                light = self._light(client)
                if light is None:
                    continue
                if light in STORED:
                    # The last alarm is still open (its resolve failed): resolve first.
                    member = self._resolve(client, member)
                    continue
                n += 1
                op = self.history.begin("press", name, f"press {n}")
                try:
                    r = client.post(f"/demo/press/{self.button}")
                except httpx.HTTPError as exc:
                    self.history.end(op, "refused" if isinstance(exc, httpx.ConnectError)
                                     else "unknown", detail=f"{type(exc).__name__}")
                    continue
                if r.status_code != 202:
                    self.history.end(op, "refused", r.status_code, detail=r.text[:160])
                    continue
                seen = None
                for _ in range(80):  # the hold (0.5 s) and the COMMIT, under load
                    if self._stop.wait(0.1):
                        break
                    seen = self._light(client)
                    if seen in STORED:
                        break
                if seen in STORED:
                    self.history.end(op, "ok", 202, detail=f"light {seen}")
                    member = self._resolve(client, member)
                else:
                    self.history.end(op, "unknown", 202, detail=f"light {seen}")

    def _light(self, client: httpx.Client) -> str | None:
        try:
            r = client.get("/demo/buttons")
            if r.status_code != 200:
                return None
            for b in r.json()["buttons"]:
                if b["id"] == self.button:
                    return str(b["light"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return None

    def _resolve(self, client: httpx.Client, member: Any) -> Any:
        """A team member of the node resolves the button's open alarm (best effort)."""
        try:
            r = client.get("/api/v1/alerts")
            open_alarms = [a for a in r.json()["alerts"]
                           if a.get("button") == self.button and a.get("phase") != "resolved"]
            if not open_alarms:
                return member
            if member is None:
                member = self.team_member()
            r = member.post("/team/ack", ref=str(open_alarms[0]["id"]), action="resolved")
            if r.status_code != 303:
                self.history.note(f"resolve of {open_alarms[0]['id']}: {r.status_code}")
                return None  # log in again next time (a restarted node may have lost it)
        except (httpx.HTTPError, ValueError, KeyError, AssertionError) as exc:
            self.history.note(f"resolve failed: {type(exc).__name__}: {str(exc)[:100]}")
            return None
        return member
