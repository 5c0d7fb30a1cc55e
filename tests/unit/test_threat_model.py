"""Claims of docs/threat-model.md that no other test proved (issue 17).

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
* A peer cannot fill a carrier's disk: while central is away a carrier keeps at
  most ``MAX_KEPT`` sealed batches for its peers and answers the rest 503.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.config import NodeSettings
from node.enrol import enrol_dir, load_roster, save_roster
from node.mesh.carry import MAX_KEPT, Carrier, CarryFailed
from node.store import Store
from sync import KeyPair, SyncError, make_event, sealed
from sync.enrolment import check_response_mac, response_mac
from sync.mesh import Carried, Carry
from sync.roster import ACK_DOMAIN, Roster, RosterEntry, sign_document, sign_roster

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
