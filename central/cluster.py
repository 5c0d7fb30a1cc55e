"""Several ``bart central run`` processes over one database (docs/central-scale.md).

Workers are stateless; two things are not, and live here:

- **One central identity.** Nodes hold central's public keys from their
  enrolment; every process answering them must sign and decrypt with the
  same keys, issue certificates from the same CA and sign CAP documents with
  the same key. The first process to run writes the fingerprints of its
  public keys into ``central_identity``; a process with other keys refuses
  to start (:func:`claim_identity`) instead of answering nodes with keys
  they do not know. The second host gets the keys by copying the first
  host's ``keys/``, ``ca/`` and ``cap/`` (mode 0600).
- **One projector.** On PostgreSQL every ``bart central run`` starts a
  projector process, but only the one holding a session-level advisory lock
  (:class:`ProjectorLock`, on a connection of its own for as long as it
  projects) routes reports; the others try for the lock every
  :data:`STANDBY_POLL_S` seconds. When the holder dies, its connection
  closes, PostgreSQL drops the lock and a standby takes over. A host that
  vanishes without closing its connection (power cut, cable) is noticed by
  the keepalives set on the lock's session (:data:`KEEPALIVE`): within
  about 25 s. On SQLite (one machine) the single projector runs without a
  lock, as before.

Projection itself stays safe with two projectors at once (``FOR UPDATE SKIP
LOCKED`` and one transaction per batch, central/projector.py): the lock keeps
alarms and escalations in order and the work in one place, and exactly-once
does not depend on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from sync.keys import b64, fingerprint

from . import queries
from .errors import CentralConfigError
from .identity import Central

log = logging.getLogger(__name__)

#: The advisory lock's two keys: "BART" and 1 (the projector). Advisory locks
#: are per database, so two centrals on one PostgreSQL server do not meet.
LOCK_KEYS = (0x42415254, 1)
#: How often a standby tries for the lock: the bulk of a failover's time.
STANDBY_POLL_S = 0.5
#: TCP keepalives of the lock's session, on both ends (PostgreSQL's settings
#: for the server's socket, libpq's for ours): idle 10 s, then 3 probes 5 s apart.
KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}
#: ``application_name`` of a lock session: ``bart-projector HOST PID``.
APP_PREFIX = "bart-projector"

_KEYS = {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]}
_TRY_LOCK = queries.TRY_LOCK.text()
_UNLOCK = queries.UNLOCK.text()
_HELD = queries.LOCK_HELD.text()
_HOLDERS = queries.LOCK_HOLDERS.text()

identity_table = sa.Table(
    "central_identity", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("origin", sa.String(63), nullable=False),
    sa.Column("signing_pub", sa.String(64), nullable=False),
    sa.Column("encryption_pub", sa.String(64), nullable=False),
    sa.Column("ca_sha256", sa.String(64), nullable=False),
    sa.Column("cap_sha256", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.BigInteger, nullable=False),
    sa.Column("claimed_by", sa.String(255), nullable=False),
)


class IdentityMismatch(CentralConfigError):
    """This data directory's keys are not those of the central the database belongs to."""


def host_name() -> str:
    """This machine's name, as lock sessions and identity claims carry it."""
    return socket.gethostname()[:40] or "localhost"


def _spki_sha256(key: Any) -> str:
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def identity_of(central: Central) -> dict[str, str]:
    """The public parts that make ``central`` the central nodes know."""
    return {"origin": central.origin,
            "signing_pub": b64(central.keys.signing_public),
            "encryption_pub": b64(central.keys.encryption_public),
            "ca_sha256": _spki_sha256(central.ca_cert.public_key()),
            "cap_sha256": _spki_sha256(central.cap_cert.public_key())}


_WHAT = {"origin": "name (origin)", "signing_pub": "signing key (keys/)",
         "encryption_pub": "encryption key (keys/)", "ca_sha256": "CA (ca/)",
         "cap_sha256": "CAP signing key (cap/)"}


def claim_identity(engine: Engine, central: Central) -> None:
    """Record ``central``'s identity in the database, or refuse if another one is there.

    Raises :class:`IdentityMismatch` naming what differs and how to fix it.
    """
    mine = identity_of(central)
    t = identity_table
    with engine.begin() as conn:
        conn.execute(db_insert_ignore(conn, t).values(
            id=1, claimed_at=time.time_ns() // 1_000_000, claimed_by=host_name(), **mine))
        held = conn.execute(sa.select(t).where(t.c.id == 1)).one()._mapping
    differ = [_WHAT[k] for k, v in mine.items() if held[k] != v]
    if not differ:
        return
    theirs = fingerprint_of(held["signing_pub"])
    raise IdentityMismatch(
        f"this database belongs to central {held['origin']} (signing key {theirs}, first run "
        f"on {held['claimed_by']}), but {central.data_dir} holds another central "
        f"({central.origin}, signing key {central.keys.fingerprint}); different: "
        f"{', '.join(differ)}. Two hosts over one database must be one central, or nodes "
        f"get answers signed with keys they do not know.\n"
        f"  fix: copy keys/, ca/ and cap/ from the first host's data directory into "
        f"{central.data_dir} (mode 0600; docs/central-scale.md), or give this central a "
        f"database of its own")


def fingerprint_of(signing_pub_b64: str) -> str:
    """The human-checkable fingerprint of a stored signing key (``?`` if unreadable)."""
    import base64
    import binascii

    try:
        return fingerprint(base64.b64decode(signing_pub_b64, validate=True))
    except (binascii.Error, ValueError):
        return "?"


def db_insert_ignore(conn: Connection, table: sa.Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


# ------------------------------------------------------------ the projector's lock

def application_name(pid: int | None = None, host: str | None = None) -> str:
    """The ``application_name`` of the lock session of projector ``pid`` on ``host``."""
    return f"{APP_PREFIX} {host or host_name()} {pid or os.getpid()}"[:63]


class ProjectorLock:
    """The PostgreSQL advisory lock that makes one projector active, on its own connection.

    Session-level: it is held as long as that connection lives, and dropped by
    PostgreSQL when the connection goes (the process died, the host vanished
    and the keepalives gave up). :meth:`try_acquire` never waits;
    :meth:`held` asks PostgreSQL whether this session still holds it.
    """

    def __init__(self, database_url: str) -> None:
        if database_url.startswith("postgresql://"):  # psycopg 3, as central/db.py
            database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
        opts = " ".join(f"-c tcp_keepalives_{k}={v}" for k, v in KEEPALIVE.items())
        self.engine = sa.create_engine(
            database_url, poolclass=NullPool,
            connect_args={"application_name": application_name(), "connect_timeout": 10,
                          "keepalives": 1, "keepalives_idle": KEEPALIVE["idle"],
                          "keepalives_interval": KEEPALIVE["interval"],
                          "keepalives_count": KEEPALIVE["count"],
                          "options": f"{opts} -c statement_timeout=10000"})
        self._conn: Connection | None = None
        self.holding = False

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this session holds it now.

        A database error drops the connection (the next call opens a new one)
        and is raised.
        """
        try:
            got = bool(self._connection().execute(_TRY_LOCK, _KEYS).scalar_one())
        except sa.exc.SQLAlchemyError:
            self._drop()
            raise
        self.holding = got
        return got

    def held(self) -> bool:
        """Whether this session still holds the lock (False when its connection is gone)."""
        if self._conn is None or not self.holding:
            return False
        try:
            n = self._conn.execute(_HELD, _KEYS).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            log.error("projector lock's connection lost (%s)", exc.__class__.__name__)
            self._drop()
            return False
        self.holding = bool(n)
        return self.holding

    def _drop(self) -> None:
        self.holding = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.invalidate()
                conn.close()

    def close(self) -> None:
        """Let go of the lock and its connection (safe to call twice)."""
        if self._conn is not None and self.holding:
            # Closing the connection drops it anyway.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.execute(_UNLOCK, _KEYS)
        self.holding = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    def __enter__(self) -> ProjectorLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Holder:
    """The process holding the projector lock, as PostgreSQL sees it."""

    host: str
    pid: int
    since: float  # Unix time its session began (not when it took the lock)


def lock_holders(conn: Connection) -> list[Holder]:
    """Who holds the projector lock (none, or one), from ``pg_locks``."""
    rows = conn.execute(_HOLDERS, _KEYS).all()
    out = []
    for name, since in rows:
        parts = str(name or "").split(" ")
        if len(parts) == 3 and parts[0] == APP_PREFIX and parts[2].isdigit():
            out.append(Holder(parts[1], int(parts[2]), float(since or 0)))
        else:  # someone took it by hand (psql): still a holder
            out.append(Holder(str(name or "?")[:40], 0, float(since or 0)))
    return out
