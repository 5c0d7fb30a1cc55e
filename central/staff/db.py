"""Tables of the staff side of central: accounts, sessions, lockout, audit, notes.

They live in central's one database beside the tables of :mod:`central.db`
(same ``metadata``), so that every stateless worker sees the same sessions
and lockouts. Created by Alembic revision ``0002`` (never change it once
shipped; add a revision). Times are Unix milliseconds (UTC).
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db import metadata

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

#: Staff accounts. ``key`` is the casefolded name: names are unique ignoring case.
staff = sa.Table(
    "staff", metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("pw_hash", sa.String(200), nullable=False),
    sa.Column("must_change", sa.Boolean, nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("last_login", sa.BigInteger),
)

#: Sessions: only the SHA-256 of the token is stored.
staff_sessions = sa.Table(
    "staff_sessions", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("staff_key", sa.String(40), sa.ForeignKey("staff.key", ondelete="CASCADE"),
              nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("last_seen", sa.BigInteger, nullable=False),
)
sa.Index("idx_staff_sessions_staff", staff_sessions.c.staff_key)

#: Wrong passwords per name, whether or not the account exists (no name oracle).
staff_name_failures = sa.Table(
    "staff_name_failures", metadata,
    sa.Column("key", sa.String(160), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("lockouts", sa.Integer, nullable=False),
    sa.Column("locked_until", sa.BigInteger),
    sa.Column("last_failure", sa.BigInteger, nullable=False),
)

#: Failed logins per client address (throttling).
staff_client_failures = sa.Table(
    "staff_client_failures", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("client", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
)
sa.Index("idx_staff_client_failures", staff_client_failures.c.client, staff_client_failures.c.at)

#: Every staff action: who, when, what (and on what).
staff_audit = sa.Table(
    "staff_audit", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("staff", sa.String(40), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
)
sa.Index("idx_staff_audit_at", staff_audit.c.at)

#: Staff notes on a report (never sent to the node or the resident).
report_notes = sa.Table(
    "report_notes", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("report_id", sa.String(36), sa.ForeignKey("reports.event_id"), nullable=False),
    sa.Column("staff", sa.String(40), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)
sa.Index("idx_report_notes_report", report_notes.c.report_id, report_notes.c.id)
