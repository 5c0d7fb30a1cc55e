"""Enrolment, revocation and the roster on central (DESIGN.md §5)."""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from common.clock import now_ms
from sync.enrolment import (
    EnrolRequest,
    check_area,
    code_hash,
    new_code,
    normalise_code,
    response_mac,
)
from sync.keys import b64, fingerprint
from sync.roster import Roster, RosterEntry, sign_roster

from . import db
from .errors import EnrolmentRefused
from .identity import Central

log = logging.getLogger(__name__)


def issue_code(engine: Engine, central: Central, node: str, area: str) -> tuple[str, int]:
    """A one-time code for ``node`` in ``area``; returns (code, expires_ms)."""
    check_area(area)
    code = new_code()
    created = now_ms()
    expires = created + central.settings.enrol_code_ttl_s * 1000
    with engine.begin() as conn:
        if conn.execute(sa.select(db.nodes.c.name).where(db.nodes.c.name == node)).first():
            raise EnrolmentRefused("node_exists", f"a node named {node!r} is already enrolled")
        conn.execute(db.enrol_codes.insert().values(
            code_hash=code_hash(code), node=node, area=area, created=created, expires=expires))
    log.info("enrolment code issued for node %s in area %s", node, area)
    return code, expires


def _register(conn: Connection, central: Central, req: EnrolRequest, area: str) -> dict[str, Any]:
    keys = [b64(req.signing_pub), b64(req.encryption_pub)]
    taken = conn.execute(sa.select(db.used_keys.c.node).where(
        db.used_keys.c.public_key.in_(keys))).first()
    if taken:
        raise EnrolmentRefused("key_enrolled", (
            f"this public key is already enrolled (by {taken[0]}); a node cloned from another's "
            "SD card must generate its own keys"))
    if conn.execute(sa.select(db.nodes.c.name).where(db.nodes.c.name == req.node)).first():
        raise EnrolmentRefused("node_exists", f"a node named {req.node!r} is already enrolled")
    cert = central.issue_node_cert(req.csr_pem.encode(), req.node).decode()
    at = now_ms()
    conn.execute(db.nodes.insert().values(
        name=req.node, area=area, signing_pub=keys[0], encryption_pub=keys[1], cert_pem=cert,
        enrolled_at=at, version=req.version or None,
        silent_after_s=central.settings.silent_after_s))
    conn.execute(db.used_keys.insert(), [{"public_key": k, "node": req.node, "at": at}
                                         for k in keys])
    signed_roster = publish_roster(conn, central)
    log.info("node %s enrolled in area %s (key %s)", req.node, area,
             fingerprint(req.signing_pub))
    return {"v": 1, "node": req.node, "area": area, "cert_pem": cert,
            "central": central.public_info(), "roster": signed_roster}


def enrol_with_code(engine: Engine, central: Central, req: EnrolRequest) -> dict[str, Any]:
    """Enrol a node that presents a valid one-time code; returns the MAC'd answer."""
    code = normalise_code(req.code)
    with engine.begin() as conn:
        row = conn.execute(sa.select(db.enrol_codes).where(
            db.enrol_codes.c.code_hash == code_hash(code)).with_for_update()).first()
        if row is None:
            raise EnrolmentRefused("bad_code", "unknown enrolment code")
        if row.used_at is not None:
            raise EnrolmentRefused("code_used", "this enrolment code was already used")
        if row.expires < now_ms():
            raise EnrolmentRefused("code_expired",
                                   "this enrolment code has expired; ask for a new one")
        if row.node != req.node:
            raise EnrolmentRefused("wrong_node",
                                   f"this code is for node {row.node!r}, not {req.node!r}")
        doc = _register(conn, central, req, row.area)
        conn.execute(db.enrol_codes.update().where(
            db.enrol_codes.c.code_hash == row.code_hash).values(used_at=now_ms()))
    return {"doc": doc, "mac": response_mac(code, doc)}


def enrol_bundle(engine: Engine, central: Central, req: EnrolRequest, area: str) -> dict[str, Any]:
    """Offline enrolment: the answer for a request file carried by hand."""
    check_area(area)
    with engine.begin() as conn:
        doc = _register(conn, central, req, area)
    return {"doc": doc, "mac": ""}


def revoke(engine: Engine, central: Central, node: str) -> dict[str, Any]:
    """Revoke ``node``: its batches are refused and the next roster says so."""
    with engine.begin() as conn:
        done = conn.execute(db.nodes.update().where(
            db.nodes.c.name == node, db.nodes.c.revoked_at.is_(None)).values(revoked_at=now_ms()))
        if done.rowcount == 0:
            exists = conn.execute(
                sa.select(db.nodes.c.name).where(db.nodes.c.name == node)).first()
            if not exists:
                raise EnrolmentRefused("unknown_node", f"node {node!r} is not enrolled")
            raise EnrolmentRefused("already_revoked", f"node {node!r} is already revoked")
        signed = publish_roster(conn, central)
    log.warning("node %s revoked; roster serial %s", node, signed["doc"]["serial"])
    return signed


def publish_roster(conn: Connection, central: Central) -> dict[str, Any]:
    """Sign a new roster from the nodes table and store it (serial + 1)."""
    serial = next_counter(conn, "roster")
    entries = tuple(
        RosterEntry(name=r.name, area=r.area, signing_pub=r.signing_pub,
                    encryption_pub=r.encryption_pub, enrolled=r.enrolled_at, revoked=r.revoked_at)
        for r in conn.execute(sa.select(db.nodes).order_by(db.nodes.c.name))
    )
    roster = Roster(serial=serial, issued=now_ms(), central_origin=central.origin, nodes=entries)
    signed = sign_roster(roster, central.keys)
    conn.execute(db.roster_docs.insert().values(serial=serial, issued=roster.issued,
                                                signed=json.dumps(signed)))
    return signed


def current_roster(conn: Connection) -> dict[str, Any] | None:
    """The newest signed roster, if any node was ever enrolled."""
    row = conn.execute(sa.select(db.roster_docs.c.signed).order_by(
        db.roster_docs.c.serial.desc()).limit(1)).first()
    return json.loads(row[0]) if row else None


def next_counter(conn: Connection, name: str) -> int:
    """Allocate the next value of a named counter (row-locked; safe across workers)."""
    table = db.counters
    got = conn.execute(table.update().where(table.c.name == name)
                       .values(value=table.c.value + 1).returning(table.c.value)).first()
    if got is not None:
        return int(got[0])
    ins = db.insert_ignore(conn.dialect.name, table).values(name=name, value=1)
    if conn.execute(ins.returning(table.c.value)).first() is not None:
        return 1
    got = conn.execute(table.update().where(table.c.name == name)
                       .values(value=table.c.value + 1).returning(table.c.value)).first()
    assert got is not None
    return int(got[0])
