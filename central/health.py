"""Node health as central sees it: last seen, backlog, version, revoked, silent.

A node is *silent* when it is not revoked and central has heard nothing from
it (no batch; nodes send an empty batch every ``uplink_poll_s``, 30 s by
default) for longer than its ``silent_after_s`` (900 s unless set per node).
A node that never synced counts from its enrolment. Silent nodes raise the
alarm on every staff page and in ``GET /api/v1/nodes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import db


@dataclass(frozen=True)
class NodeHealth:
    """One node's health at ``now``."""

    name: str
    area: str
    enrolled_at: int
    last_seen: int | None
    last_batch_seq: int
    backlog: int | None
    version: str | None
    revoked_at: int | None
    silent_after_s: int
    #: Seconds since central last heard from it (or since enrolment).
    quiet_s: int
    silent: bool
    #: The community centre's name, as the node tells it (its slug until it does).
    display: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form of ``GET /api/v1/nodes``."""
        out = asdict(self)
        out["revoked"] = self.revoked_at is not None
        return out


def node_health(engine: Engine, now: int) -> list[NodeHealth]:
    """Every enrolled node, silent ones first, then by name."""
    with db.reading(engine) as conn:
        rows = conn.execute(sa.select(db.nodes).order_by(db.nodes.c.name)).all()
    out = []
    for r in rows:
        since = int(r.last_seen if r.last_seen is not None else r.enrolled_at)
        quiet_s = max(0, (now - since) // 1000)
        silent = r.revoked_at is None and quiet_s > int(r.silent_after_s)
        out.append(NodeHealth(
            name=r.name, area=r.area, enrolled_at=int(r.enrolled_at),
            last_seen=int(r.last_seen) if r.last_seen is not None else None,
            last_batch_seq=int(r.last_batch_seq),
            backlog=int(r.backlog) if r.backlog is not None else None, version=r.version,
            revoked_at=int(r.revoked_at) if r.revoked_at is not None else None,
            silent_after_s=int(r.silent_after_s), quiet_s=int(quiet_s), silent=silent,
            display=r.display or r.name))
    out.sort(key=lambda n: (not n.silent, n.name))
    return out


def silent_nodes(engine: Engine, now: int) -> list[NodeHealth]:
    """Only the silent nodes (for the banner of every staff page)."""
    return [n for n in node_health(engine, now) if n.silent]


def node_names(engine: Engine) -> dict[str, str]:
    """Community-centre names by node slug (the slug where a node has not told one)."""
    with db.reading(engine) as conn:
        return {str(name): str(display or name) for name, display in conn.execute(
            sa.select(db.nodes.c.name, db.nodes.c.display))}
