"""Central's alarm desk in-process: an enrolled node whose events reach central as
sealed batches through ``Ingest``, the projector, and central's app under a real
uvicorn server (for the live stream and the browser)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn

from central.ingest import Ingest
from central.projector import Projector
from central.server import CentralServer
from sync import Event, make_event
from sync.event import event_from_dict
from sync.exchange import Ack
from tests.support.base import free_port, wait_until
from tests.support.central import staff_http_login
from tests.support.ingest import batch, enrol
from tests.support.staff import PASSWORD, Env

NODE = "wereld"
AREA = "ESC-01"


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """An enrolled node as central sees it: its keys, streams and sealed batches."""

    def __init__(self, env: Env, name: str = NODE) -> None:
        self.env = env
        self.name = name
        self.keys = enrol(env.engine, env.central, name, AREA)
        self.seqs = {"public": 0, "private": 0}
        self.batch_seq = 0
        self.updates_after = 0
        self.central_head = 0
        self.ingest = Ingest(env.engine, env.central)

    def event(self, stream: str, kind: str, body: dict[str, Any],
              ts: int | None = None) -> Event:
        self.seqs[stream] += 1
        return make_event(self.keys, origin=self.name, stream=stream, seq=self.seqs[stream],
                          kind=kind, ts=ts if ts is not None else now_ms(), body=body)

    def panic(self, button: str = "klimboom-hek", place: str = "Speeltuin De Klimboom") -> Event:
        """As node/alarms.py button_alarm_body makes it."""
        return self.event("public", "alert", {
            "source": "button", "category": "emergency", "severity": "extreme", "title": "",
            "text": "", "place": {"point": "klimboom", "text": place}, "areas": [AREA],
            "expires": None, "ref": None, "called_112": False, "called_112_by": "",
            "button": button})

    def report(self, category: str = "nuisance", text: str = "Geluidsoverlast",
               place: str = "plein", receipt: str = "K7F-3QX") -> Event:
        return self.event("private", "report", {
            "category": category, "text": text, "place": {"point": None, "text": place},
            "audience": "authorities", "receipt": receipt, "lang": "nl"})

    def team_ack(self, ref: Event, action: str, by: str = "Sanne", note: str = "",
                 to: str | None = None) -> list[Event]:
        """As node/alarms.py store_team_ack: public "team" ack (alerts) plus a private one."""
        if ref.stream != "public":
            return [self.event("private", "ack", {"ref": ref.id, "action": action, "by": by,
                                                  "note": note, "to": to}, ts=ref.ts + 1000)]
        ts = max(ref.ts + 1000, now_ms())
        return [self.event("public", "ack", {"ref": ref.id, "action": action, "by": "team",
                                             "note": "", "to": to}, ts=ts),
                self.event("private", "ack", {"ref": ref.id, "action": action, "by": by,
                                              "note": note, "to": to}, ts=ts)]

    def send(self, *events: Event) -> dict[str, Any]:
        """One sealed batch through Ingest; the reply as the node gets it."""
        self.batch_seq += 1
        meta = {"heads": {self.env.central.origin: {"public": self.central_head}},
                "updates_after": self.updates_after}
        return self.ingest.handle(batch(self.keys, self.name, self.batch_seq, list(events),
                                        self.env.central, meta=meta))

    def sync(self) -> tuple[Ack, list[Event]]:
        """A poll: the verified ack (with receipt updates) and central's verified events."""
        reply = self.send()
        ack = Ack.verify(reply["ack"], self.env.central.keys.signing_public)
        events = [event_from_dict(raw) for raw in reply["events"]]
        for e in events:
            e.verify(self.env.central.keys.signing_public)
        return ack, events


def project(env: Env) -> int:
    return Projector(env.engine, central_origin=env.central.origin).drain()


class Served:
    """``env.app`` under uvicorn (central's server class) on a free port, in a thread."""

    def __init__(self, env: Env) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = CentralServer(uvicorn.Config(
            env.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=1, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="central-uvicorn",
                                       daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        wait_until(lambda: self.server.started, 20.0, message="uvicorn started")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def http_member(env: Env, url: str, name: str, role: str) -> httpx.Client:
    """A member logged in over HTTP with their own password."""
    return staff_http_login(url, name, env.accounts.add(name, role), PASSWORD)
