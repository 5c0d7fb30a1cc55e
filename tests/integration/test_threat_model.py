"""Claims of docs/threat-model.md that no other test proved (issue 17), with
real parts: a real ``bart node run``, real SQLite files, real sockets.

Against a running node:

* A flood of reports from one phone: after its budget (``reports_per_minute``,
  default 20, a burst of half) the API and the form answer 429 in words with
  ``Retry-After``, and store nothing more; another phone is still served.
* The data directory after ``bart node init`` and a run: no file or folder in
  it is open to other accounts of the machine, and the private keys, MQTT
  secrets and team accounts are for the node's own account alone.

On the node's own code and files, without a running node:

* A "police" alert in central's reply that central did not sign (another key,
  another origin, or central's alert with its words changed) is never stored
  by the node's uplink, whatever path the reply took; central's own is.
* A node never takes a roster older than (or as old as) the one it holds, nor
  one signed by another key or under another domain: a network attacker who
  replays an older roster cannot bring a revoked node back.
* An enrolment answer altered on the way (central's keys swapped for the
  attacker's), or answered without the code, is refused by the node.
* A carrier's refusal of a peer's batch is never taken as central's word: the
  origin only hears that the batch was not carried (a forged "revoked" would
  stop its uplink).
* A sealed batch opens only with central's key: a carrier (or anyone on the
  path) that relabels it for its own key learns nothing, and the private
  report words are nowhere in the bytes it holds.
* A point device's account may write only its own button's presses and read
  only its own light: not alerts, not another point's presses.
* A peer cannot fill a carrier's disk: while central is away a carrier keeps at
  most ``MAX_KEPT`` sealed batches for its peers and answers the rest 503.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import BrokerSettings, MqttUser, render_acl
from node.config import NodeSettings
from node.enrol import enrol_dir, load_roster, save_roster
from node.mesh.carry import MAX_KEPT, Carrier, CarryFailed
from node.setup import init_node as init_node_files
from node.store import Store
from node.uplink import Uplink
from sync import KeyPair, SyncError, make_event, sealed
from sync.enrolment import check_response_mac, response_mac
from sync.exchange import Ack, SyncReply
from sync.mesh import Carried, Carry
from sync.roster import ACK_DOMAIN, Roster, RosterEntry, sign_document, sign_roster
from tests.support.base import require_binary
from tests.support.node import (
    MEETING_POINTS,
    NodeProcess,
    node_running,
)

TIMEOUT = 30.0
#: ``reports_per_minute`` (node/config.py) and its burst: half of it.
REPORTS_PER_MINUTE = 20
BURST = REPORTS_PER_MINUTE // 2


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with the report budget as in production (the tests' nodes otherwise
    run with ``BART_REPORTS_PER_MINUTE=0``: no limits)."""
    yield from _budgeted(tmp_path_factory.mktemp("limited"))


def _budgeted(base: Path, extra_toml: str = "") -> Iterator[NodeProcess]:
    """A running node with the production report budget; checked when it stops."""
    with node_running(base, require_binary("mosquitto", "/usr/sbin/mosquitto"),
                      settings=extra_toml,
                      env={"BART_REPORTS_PER_MINUTE": str(REPORTS_PER_MINUTE)}) as node:
        yield node


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


PROXY = "127.0.0.9"


@pytest.fixture(scope="module")
def proxied_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node behind a reverse proxy at 127.0.0.9 (``trusted_proxies``), with the
    production report budget."""
    yield from _budgeted(tmp_path_factory.mktemp("proxied"), f'trusted_proxies = ["{PROXY}"]')


def _flood(client: httpx.Client, label: str, headers: Any = None) -> list[int]:
    """Reports until the budget says no (at most 3 bursts); each call may set headers."""
    codes = []
    for i in range(3 * BURST):
        h = headers(i) if callable(headers) else headers
        codes.append(client.post("/api/v1/reports", json=_report(f"{label}-{i}"),
                                 headers=h).status_code)
        if codes[-1] == 429:
            break
    return codes


def test_the_report_budget_counts_each_phone_behind_a_trusted_proxy(
        proxied_node: NodeProcess) -> None:
    """Behind the configured proxy the budget follows X-Forwarded-For (each phone
    apart); from anywhere else the header is ignored, so a flooder cannot pick a
    new address per report."""
    node = proxied_node
    label = f"proxy-{uuid.uuid4().hex[:8]}"
    proxy = httpx.Client(base_url=node.base_url, timeout=TIMEOUT,
                         transport=httpx.HTTPTransport(local_address=PROXY))
    spoofer = httpx.Client(base_url=node.base_url, timeout=TIMEOUT,
                           transport=httpx.HTTPTransport(local_address="127.0.0.10"))
    with proxy, spoofer:
        first = _flood(proxy, f"{label}-a", {"X-Forwarded-For": "10.1.0.11"})
        assert first[-1] == 429 and BURST <= first.count(201) <= BURST + 2, first
        # The next phone behind the same proxy has its own budget.
        second = proxy.post("/api/v1/reports", json=_report(f"{label}-b"),
                            headers={"X-Forwarded-For": "10.1.0.12"})
        assert second.status_code == 201, second.text
        # A client that is not the proxy: its made-up header is not believed.
        spoofed = _flood(spoofer, f"{label}-s",
                         lambda i: {"X-Forwarded-For": f"10.2.{i // 250}.{i % 250 + 1}"})
        assert spoofed[-1] == 429 and spoofed.count(201) <= BURST + 2, spoofed
    assert _stored(node, f"{label}-a") == first.count(201)
    assert _stored(node, f"{label}-s") == spoofed.count(201)


def _others_may(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o007)


def test_the_data_directory_is_closed_to_other_accounts(limited_node: NodeProcess) -> None:
    data_dir = limited_node.data_dir
    assert not _others_may(data_dir), oct(data_dir.stat().st_mode)
    private = [data_dir / "keys" / "signing.key", data_dir / "keys" / "encryption.key",
               data_dir / "secrets" / "mqtt.json", data_dir / "team.db",
               limited_node.db_path, limited_node.db_path.with_name("node.db-wal")]
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


# -- without a running node ----------------------------------------------------------

CENTRAL = KeyPair.generate()
STOLEN = "escamp-gestolen"
CODE = "K7FQ-3QXA-M2PD-W9RT"


def _entry(name: str, revoked: int | None) -> RosterEntry:
    keys = KeyPair.generate()
    return RosterEntry(name=name, area="ESC-01",
                       signing_pub=base64.b64encode(keys.signing_public).decode(),
                       encryption_pub=base64.b64encode(keys.encryption_public).decode(),
                       enrolled=1_760_000_000_000, revoked=revoked)


def _roster(serial: int, revoked: int | None) -> Roster:
    return Roster(serial=serial, issued=1_760_000_000_000 + serial,
                  central_origin="central-haaglanden",
                  nodes=(_entry("escamp-west", None), _entry(STOLEN, revoked)))


def test_an_older_roster_cannot_bring_a_revoked_node_back(tmp_path: Path) -> None:
    settings = NodeSettings(data_dir=tmp_path, name="escamp-west", area="ESC-01")
    enrol_dir(settings).mkdir()
    before = sign_roster(_roster(1, None), CENTRAL)
    revoking = sign_roster(_roster(2, 1_760_000_100_000), CENTRAL)
    taken = save_roster(settings, revoking, CENTRAL.signing_public, 1)
    assert taken is not None and taken.member(STOLEN) is None
    on_disk = (enrol_dir(settings) / "roster.json").read_bytes()

    # A replay of the older roster, or another one under the same serial: not taken.
    assert save_roster(settings, before, CENTRAL.signing_public, 2) is None
    same_serial = sign_roster(_roster(2, None), CENTRAL)
    assert save_roster(settings, same_serial, CENTRAL.signing_public, 2) is None
    # Newer, but not central's: signed by another key, or central's signature
    # over another kind of document (an acknowledgement).
    forged = sign_roster(_roster(3, None), KeyPair.generate())
    other_domain = sign_document(_roster(3, None).to_doc(), CENTRAL, ACK_DOMAIN)
    for bad in (forged, other_domain):
        with pytest.raises(SyncError):
            save_roster(settings, bad, CENTRAL.signing_public, 2)

    assert (enrol_dir(settings) / "roster.json").read_bytes() == on_disk
    held = load_roster(settings, CENTRAL.signing_public)
    assert held is not None and held.serial == 2 and held.member(STOLEN) is None


def _answer() -> dict[str, Any]:
    return {"v": 1, "node": "escamp-west", "area": "ESC-01", "cert_pem": "-----",
            "central": {"origin": "central-haaglanden",
                        "signing_pub": base64.b64encode(CENTRAL.signing_public).decode(),
                        "encryption_pub": base64.b64encode(CENTRAL.encryption_public).decode(),
                        "kid": "k-0011223344556677", "url": "http://central.example",
                        "ca_pem": "-----"},
            "roster": None}


def test_an_enrolment_answer_altered_on_the_way_is_refused() -> None:
    doc = _answer()
    mac = response_mac(CODE, doc)
    check_response_mac(CODE, doc, mac)  # central's own answer passes

    attacker = KeyPair.generate()
    swapped = json.loads(json.dumps(doc))
    swapped["central"]["signing_pub"] = base64.b64encode(attacker.signing_public).decode()
    swapped["central"]["encryption_pub"] = base64.b64encode(attacker.encryption_public).decode()
    for altered, with_mac in ((swapped, mac),                    # keys swapped, MAC kept
                              (swapped, response_mac("AAAA-BBBB-CCCC-DDDD", swapped)),
                              (doc, None), (doc, ""), (doc, mac[:-1])):
        with pytest.raises(SyncError, match="not made with this code"):
            check_response_mac(CODE, altered, with_mac)


class _RefusingPeer:
    """A connected peer that says it has an uplink and answers every carry with
    a refusal it made up (it holds no key of central's)."""

    peer = "escamp-carrier"
    uplink = True

    def __init__(self, carrier: Carrier, status: int) -> None:
        self.carrier, self.status, self.sent = carrier, status, 0

    def send(self, data: bytes) -> None:
        self.sent += 1
        doc = json.loads(data)
        forged = Carried(doc["node"], doc["batch_seq"], self.status,
                         b'{"error": "revoked", "detail": "this node is revoked"}')
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(self.carrier.answered(forged)))


class _Mesh:
    def __init__(self, links: list[_RefusingPeer]) -> None:
        self.links = links

    def live_links(self) -> list[_RefusingPeer]:
        return self.links


@pytest.mark.parametrize("status", [401, 403, 409])
def test_a_carriers_refusal_is_not_taken_as_centrals_word(tmp_path: Path, status: int) -> None:
    async def main() -> None:
        with Store(tmp_path / "node.db", origin="escamp-west", keys=KeyPair.generate()) as store:
            carrier = Carrier(store, None)
            peer = _RefusingPeer(carrier, status)
            with pytest.raises(CarryFailed, match=f"not taken through a peer \\({status}\\)"):
                await carrier.send(_Mesh([peer]), "escamp-west", 7, b"BSB1 sealed", timeout=5.0)  # type: ignore[arg-type]
            assert peer.sent == 1 and carrier.carried_by_peers == 0

    asyncio.run(main())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_peer_cannot_fill_the_carriers_disk(tmp_path: Path) -> None:
    central_away = f"http://127.0.0.1:{_closed_port()}"  # nothing listens: refused at once

    async def main() -> list[int]:
        with Store(tmp_path / "node.db", origin="escamp-west", keys=KeyPair.generate()) as store:
            # One real transport for all posts (a client per post would make an
            # SSL context each time: seconds of CPU on a loaded machine).
            carrier = Carrier(store, central_away, httpx.AsyncHTTPTransport(verify=False))
            statuses = []
            for seq in range(1, MAX_KEPT + 11):
                answer = await carrier.take(Carry("escamp-flood", seq, b"BSB1" + bytes(1000)))
                assert answer is not None
                statuses.append(answer.status)
            kept = store._reader().execute("SELECT COUNT(*) FROM carried").fetchone()[0]
            assert kept == MAX_KEPT
            return statuses

    statuses = asyncio.run(main())
    assert statuses == [503] * (MAX_KEPT + 10)  # central away: kept, or refused when full


def test_a_sealed_batch_opens_only_with_centrals_key() -> None:
    node, carrier = KeyPair.generate(), KeyPair.generate()
    words, contact = "Man bij de achterdeur van nummer 12", "06-12345678"
    report = make_event(node, origin="escamp-west", stream="private", seq=1, kind="report",
                        ts=1_795_000_000_000,
                        body={"category": "suspicious", "text": words, "contact": contact,
                              "audience": "authorities", "receipt": "K7F-3QX"})
    wire = sealed.seal(sealed.Payload.of([report]), node_id="escamp-west", batch_seq=1,
                       created=1_795_000_000_000, keys=node,
                       central_encryption_public=CENTRAL.encryption_public)
    assert words.encode() not in wire and contact.encode() not in wire

    envelope = sealed.parse(wire)
    sealed.verify(envelope, node.signing_public)
    with pytest.raises(sealed.BatchWrongKey):
        sealed.open_envelope(envelope, carrier.encryption)
    # Relabelled for the carrier's own key: the header no longer matches what was
    # sealed, and the carrier's key is not central's.
    header = replace(envelope.header, central_kid=sealed.key_id(carrier.encryption_public))
    relabelled = replace(envelope, header=header, header_bytes=header.encode())
    with pytest.raises(sealed.BatchBadTag):
        sealed.open_envelope(relabelled, carrier.encryption)
    # Central opens it.
    [back] = sealed.iter_events(sealed.open_envelope(envelope, CENTRAL.encryption))
    assert back.body["contact"] == contact


def test_a_point_account_writes_only_its_own_presses() -> None:
    users = (MqttUser("point-vliegerpad", "x" * 24, "point", point="vliegerpad"),
             MqttUser("point-kompasplein", "y" * 24, "point", point="kompasplein"))
    acl = render_acl(BrokerSettings(state_dir=Path("/var/lib/bart/mqtt"), port=18830,
                                    users=users, run_as_user="bart"))
    blocks = {block.splitlines()[0]: block.splitlines()[1:]
              for block in acl.split("\n\n")[1:]}
    assert blocks == {
        "user point-vliegerpad": ["topic write bart/v1/+/points/vliegerpad/press",
                                  "topic read bart/v1/+/points/vliegerpad/state"],
        "user point-kompasplein": ["topic write bart/v1/+/points/kompasplein/press",
                                   "topic read bart/v1/+/points/kompasplein/state"],
    }
    directives = [ln for ln in acl.splitlines() if ln and not ln.startswith("#")]
    assert not [ln for ln in directives if ln.startswith("pattern")]
    assert directives[0].startswith("user ")  # no grant before the first user
