"""Claims of docs/threat-model.md that no other test proved, against a real
``bart node run`` (issue 17).

* A flood of reports from one phone: after its budget (``reports_per_minute``,
  default 20, a burst of half) the API and the form answer 429 in words with
  ``Retry-After``, and store nothing more; another phone is still served.
* The data directory after ``bart node init`` and a run: no file or folder in
  it is open to other accounts of the machine, and the private keys, MQTT
  secrets and team accounts are for the node's own account alone.
* A "police" alert in central's reply that central did not sign (another key,
  another origin, or central's alert with its words changed) is never stored
  by the node's uplink, whatever path the reply took; central's own is.
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MEETING_POINTS, NodeProcess, init_node, require_binary, stop_and_check

from node.setup import init_node as init_node_files
from node.store import Store
from node.uplink import Uplink
from sync import KeyPair, make_event
from sync.exchange import Ack, SyncReply
from sync.roster import ACK_DOMAIN, sign_document

TIMEOUT = 30.0
#: ``reports_per_minute`` (node/config.py) and its burst: half of it.
REPORTS_PER_MINUTE = 20
BURST = REPORTS_PER_MINUTE // 2


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with the report budget as in production (the tests' nodes otherwise
    run with ``BART_REPORTS_PER_MINUTE=0``: no limits)."""
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    node = init_node(tmp_path_factory.mktemp("limited"), mosquitto)
    node.env_extra["BART_REPORTS_PER_MINUTE"] = str(REPORTS_PER_MINUTE)
    try:
        node.start()
        yield node
    except BaseException:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
        raise
    stop_and_check(node)


def _report(text: str) -> dict[str, Any]:
    return {"category": "nuisance", "text": text,
            "place": {"point": MEETING_POINTS[0]["id"], "text": "bij het hek"},
            "audience": "authorities", "called_112": False}


def _stored(node: NodeProcess, label: str) -> int:
    with sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'report' "
                           "AND json_extract(body, '$.text') LIKE ?", (f"{label}%",)).fetchone()
    return int(row[0])


def test_a_flood_of_reports_from_one_phone_is_held_to_its_budget(
        limited_node: NodeProcess) -> None:
    node = limited_node
    label = f"vloed-{uuid.uuid4().hex[:8]}"
    flooder = httpx.Client(base_url=node.base_url, timeout=TIMEOUT,
                           transport=httpx.HTTPTransport(local_address="127.0.0.7"))
    other = httpx.Client(base_url=node.base_url, timeout=TIMEOUT,
                         transport=httpx.HTTPTransport(local_address="127.0.0.8"))
    with flooder, other:
        codes = [flooder.post("/api/v1/reports", json=_report(f"{label}-{i}")).status_code
                 for i in range(3 * BURST)]
        accepted = codes.count(201)
        # The bucket refills one report every 3 s: a slow machine may earn one more.
        assert BURST <= accepted <= BURST + 2, codes
        assert set(codes) == {201, 429}, codes
        assert codes[-1] == 429 and codes.index(429) == accepted, codes

        refused = flooder.post("/api/v1/reports", json=_report(f"{label}-x"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "60"
        assert refused.json() == {"detail": "too many reports; wait a minute and try again"}

        # The form takes from the same budget and says so on its page, in Dutch.
        fields = {"category": "nuisance", "text": f"{label}-formulier",
                  "place_point": MEETING_POINTS[1]["id"], "place_text": "achter de school",
                  "audience": "authorities", "called_112": "no", "called_112_by": "",
                  "contact": "", "csrf": "", "lang": "nl"}
        form = flooder.post("/report", data=fields, headers={"Origin": node.base_url})
        assert form.status_code == 429, form.text[:500]
        assert 'lang="nl"' in form.text and f"{label}-formulier" in form.text  # words kept
        assert "Traceback" not in form.text

        assert _stored(node, label) == accepted

        # Another phone on the hotspot is served as before.
        r = other.post("/api/v1/reports", json=_report(f"{label}-buur"))
        assert r.status_code == 201, r.text
        assert _stored(node, label) == accepted + 1


def _others_may(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o007)


def test_the_data_directory_is_closed_to_other_accounts(limited_node: NodeProcess) -> None:
    data_dir = limited_node.data_dir
    assert not _others_may(data_dir), oct(data_dir.stat().st_mode)
    private = [data_dir / "keys" / "signing.key", data_dir / "keys" / "encryption.key",
               data_dir / "secrets" / "mqtt.json", data_dir / "team.db"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    for folder in (data_dir / "keys", data_dir / "secrets"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


CENTRAL_ORIGIN = "central-haaglanden"


def _central_alert(keys: KeyPair, seq: int, title: str, *, origin: str = CENTRAL_ORIGIN,
                   now_ms: int) -> dict[str, Any]:
    return make_event(keys, origin=origin, stream="public", seq=seq, kind="alert", ts=now_ms,
                      body={"source": "central", "category": "suspicious",
                            "severity": "severe", "title": title, "areas": [],
                            "expires": now_ms + 3_600_000}).to_dict()


def test_an_alert_central_did_not_sign_is_never_stored(tmp_path: Path) -> None:
    central, attacker = KeyPair.generate(), KeyPair.generate()
    settings, keys = init_node_files(tmp_path / "node", name="wereld", area="ESC-01")
    now = int(time.time() * 1000)
    genuine = _central_alert(central, 1, "Inbraakgolf in Escamp", now_ms=now)
    tampered = {**genuine, "body": {**genuine["body"], "title": "Verlaat uw huis nu"}}
    forged = _central_alert(attacker, 2, "Politie: deur open laten", now_ms=now)
    impostor = _central_alert(attacker, 1, "Politie: geef de code", origin="central-nep",
                              now_ms=now)
    ack = Ack(node="wereld", batch_seq=1, count=0, new=0, replay=False, holds={},
              updates=(), at=now)
    reply = SyncReply(ack=sign_document(ack.to_doc(), central, ACK_DOMAIN),
                      events=(tampered, forged, impostor, genuine))

    async def main() -> list[tuple[str, str]]:
        with Store(settings.db_path, origin=settings.name, keys=keys) as store:
            uplink = Uplink(settings, store, keys)
            uplink.central_origin = CENTRAL_ORIGIN  # as enrolment sets them
            uplink.central_signing = central.signing_public
            await uplink._apply(reply, ack)
            rows = store._reader().execute(
                "SELECT origin, json_extract(body, '$.title') FROM events "
                "WHERE kind = 'alert'").fetchall()
            return [(str(o), str(t)) for o, t in rows]

    assert asyncio.run(main()) == [(CENTRAL_ORIGIN, "Inbraakgolf in Escamp")]
