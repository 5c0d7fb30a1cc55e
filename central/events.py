"""Central's own events (broadcasts, answers): signed by central, seq'd in the database.

Central is an origin like any node (``central-NAME``). Its seq per stream is
allocated from the ``counters`` table with a row lock, so several workers
never hand out the same seq; the event is inserted in the same transaction.
Nodes receive central's public events in their sync replies and show them
only after verifying central's signature.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from sqlalchemy.engine import Connection

from sync import Event, make_event

from . import db
from .enrol import next_counter
from .identity import Central


def append_central_event(conn: Connection, central: Central, kind: str, stream: str,
                         body: dict[str, Any]) -> Event:
    """Create, sign and store an event of central inside ``conn``'s transaction."""
    seq = next_counter(conn, f"seq/{central.origin}/{stream}")
    now = time.time_ns() // 1_000_000
    event = make_event(central.keys, origin=central.origin, stream=stream, seq=seq, kind=kind,
                       body=body, ts=now)
    conn.execute(db.events.insert().values(
        id=event.id, origin=event.origin, stream=event.stream, seq=event.seq, ts=event.ts,
        kind=event.kind, body=event.body_json().decode(), sig=base64.b64encode(event.sig).decode(),
        via=central.origin, received_at=now))
    # Central's own stream is gapless by construction: its head moves with it.
    from .ingest import advance_head

    advance_head(conn, event.origin, event.stream)
    return event
