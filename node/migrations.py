"""Named, transactional schema migrations of the node store.

Each migration runs once, inside one transaction, and is recorded by name in
``_migrations`` (the runner is :mod:`common.migrations`, shared with
``team.db``). Never edit a migration that has shipped; add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from common import migrations as _runner

if TYPE_CHECKING:
    import sqlite_utils

Migration = tuple[str, Callable[["sqlite_utils.Database"], None]]


# sqlite-utils writes the CREATE TABLE statements; they are executed here
# so that each migration stays inside its one transaction (sqlite-utils'
# own create() commits on its own).


def _m001_events(db: sqlite_utils.Database) -> None:
    sql = db.create_table_sql(
        "events",
        {
            "id": str,
            "origin": str,
            "stream": str,
            "seq": int,
            "ts": int,
            "kind": str,
            "body": str,
            "sig": bytes,
            "received_at": int,
        },
        pk="id",
        not_null={"origin", "stream", "seq", "ts", "kind", "body", "sig", "received_at"},
    )
    db.execute(sql)
    db.execute("CREATE UNIQUE INDEX idx_events_origin_stream_seq ON events (origin, stream, seq)")
    db.execute("CREATE INDEX idx_events_kind_ts ON events (kind, ts)")


def _m002_receipts(db: sqlite_utils.Database) -> None:
    sql = db.create_table_sql(
        "receipts",
        {"receipt": str, "event_id": str, "state": str, "updated_at": int},
        pk="receipt",
        not_null={"event_id", "state", "updated_at"},
        foreign_keys=[("event_id", "events", "id")],
    )
    db.execute(sql)


def _m003_point_presses(db: sqlite_utils.Database) -> None:
    # A press id from a point device maps to the event it produced, so a press
    # delivered twice (QoS 1 is at least once) raises one alarm.
    db.execute(db.create_table_sql(
        "point_presses",
        {"press_id": str, "point": str, "button": str, "kind": str, "event_id": str,
         "received_at": int},
        pk="press_id",
        not_null={"point", "button", "kind", "event_id", "received_at"},
    ))


def _m004_json_indexes(db: sqlite_utils.Database) -> None:
    # Acks are looked up by what they answer, alarms by their button: without
    # these, each lookup scans the whole history (and some run in the writer).
    db.execute("CREATE INDEX idx_events_ack_ref ON events (json_extract(body, '$.ref')) "
               "WHERE kind = 'ack'")
    db.execute("CREATE INDEX idx_events_alert_button ON events "
               "(json_extract(body, '$.button'), ts) WHERE kind = 'alert'")


def _m005_uplink(db: sqlite_utils.Database) -> None:
    # The uplink's durable state: the last batch seq used (never reused after a
    # crash), what central holds per origin/stream, cursors of central's replies.
    db.execute(db.create_table_sql("uplink_state", {"key": str, "value": int}, pk="key",
                                   not_null={"value"}))


def _m006_armed_alarms(db: sqlite_utils.Database) -> None:
    # A panic-button alarm made and signed during its hold, flushed to disk
    # before the hold completes: the COMMIT at the deadline then need not wait
    # for the disk. A row left at start-up (power cut during or right after a
    # hold) becomes its alarm; a release before the deadline deletes it.
    db.execute(db.create_table_sql(
        "armed_alarms",
        {"button": str, "id": str, "origin": str, "stream": str, "seq": int, "ts": int,
         "kind": str, "body": str, "sig": bytes, "armed_at": int},
        pk="button",
        not_null={"id", "origin", "stream", "seq", "ts", "kind", "body", "sig", "armed_at"},
    ))


def _m007_mesh(db: sqlite_utils.Database) -> None:
    # held_floor: every seq up to it counts as held although pruned (central has
    # it), so the mesh's gapless heads do not fall back after a prune.
    db.execute(db.create_table_sql("held_floor", {"origin": str, "stream": str, "seq": int},
                                   pk=("origin", "stream"), not_null={"seq"}))
    # carried: sealed batches of peers without an uplink, kept (unopened) until
    # central answered and the answer went back to their node.
    db.execute(db.create_table_sql(
        "carried",
        {"node": str, "batch_seq": int, "wire": bytes, "received_at": int,
         "status": int, "reply": bytes, "answered_at": int},
        pk=("node", "batch_seq"), not_null={"wire", "received_at"}))


def _m008_receipt_reply(db: sqlite_utils.Database) -> None:
    # A desk's short public answer to the resident (central's receipt updates).
    db.execute("ALTER TABLE receipts ADD COLUMN reply TEXT")
    db.execute("ALTER TABLE receipts ADD COLUMN replied_at INTEGER")


def _m009_central_state(db: sqlite_utils.Database) -> None:
    # The report's handling state at central (its desk's answer), apart from the
    # receipt's state, which the team's own answers move too: the team page shows both.
    db.execute("ALTER TABLE receipts ADD COLUMN central_state TEXT")


def _m010_alert_ref(db: sqlite_utils.Database) -> None:
    # Alerts that replace an earlier one (central's updates and cancels) are found
    # by their ref; without this index each home page walked every alert stored.
    db.execute("CREATE INDEX idx_events_alert_ref ON events (json_extract(body, '$.ref')) "
               "WHERE kind = 'alert'")


MIGRATIONS: list[Migration] = [
    ("001_events", _m001_events),
    ("002_receipts", _m002_receipts),
    ("003_point_presses", _m003_point_presses),
    ("004_json_indexes", _m004_json_indexes),
    ("005_uplink", _m005_uplink),
    ("006_armed_alarms", _m006_armed_alarms),
    ("007_mesh", _m007_mesh),
    ("008_receipt_reply", _m008_receipt_reply),
    ("009_central_state", _m009_central_state),
    ("010_alert_ref", _m010_alert_ref),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; return the names applied now.

    sqlite-utils is imported only when a migration is pending: a running node
    whose store is up to date never loads it (issue 15, memory).
    """
    views: list[sqlite_utils.Database] = []

    def db() -> sqlite_utils.Database:
        if not views:
            import sqlite_utils

            views.append(sqlite_utils.Database(conn))
        return views[0]

    return _runner.migrate(conn, [(name, _on(db, apply)) for name, apply in MIGRATIONS])


def _on(db: Callable[[], sqlite_utils.Database],
        apply: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite3.Connection], None]:
    """``apply`` as the runner calls it: on ``db()``, the connection's sqlite-utils view."""
    def run(_conn: sqlite3.Connection) -> None:
        apply(db())
    return run
