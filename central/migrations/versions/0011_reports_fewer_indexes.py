"""reports: two secondary indexes fewer; on PostgreSQL no foreign key to events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 00:30:00

Every new report is written into the table and each of its indexes; the
projector's insert was the largest part of central's cost per event
(bench/central_sync.py, issue 15). Two indexes served only lists that the
other two serve as well, because a report's route is always one of the two
desks (``central.triage.ROUTES``: the rules and a staff re-route accept
nothing else):

- ``idx_reports_ts`` (``ts``): the insight page's counts over every desk and
  retention's count of older open reports now ask for ``route IN (desks)``
  (and retention for the open states), a range per desk on
  ``(route, ts, event_id)`` or ``(route, state, ts, event_id)``; an admin's list of
  every desk reads one range per desk and merges (central/handling.py).
- ``idx_reports_state_ts`` (``state, ts, event_id``): an admin's per-state
  list reads ``(route, state, ts, event_id)`` once per desk and merges; the desks'
  untaken emergencies (central/staff/alarms.py) count ``route IN (desks)``.

``(route, state, ts)`` becomes ``(route, state, ts, event_id)``: a list's
order is ``ts DESC, event_id DESC``, and without ``event_id`` SQLite's
planner preferred to read ``(route, ts, event_id)`` and skip the other
states' rows (before, ``(state, ts, event_id)``, read for one desk, was what
served a desk's per-state list: ``(route, state, ts)`` served nothing). So
three b-trees per report instead of five: the table (its primary key on
PostgreSQL; SQLite's rowid table and the key's index), ``(route, state, ts,
event_id)`` (a desk's list per state, its untaken emergencies, retention's
open reports) and ``(route, ts, event_id)`` (a desk's whole list, the
Open311 feed, the insight page).

**PostgreSQL**: the foreign key ``reports.event_id → events.id`` goes (its
check cost the server ~5 µs per row of the projector's ``COPY``). Integrity
holds by construction: the projector inserts only reports of events it has
just read from ``events`` in the same transaction, and central never deletes
an event (retention anonymises bodies in place, central/retention.py). On
SQLite the key stays: its check costs ~0.3 µs per row, and dropping it would
rebuild the table (and its triggers) on a store that may hold millions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('idx_reports_route_state_ts', 'reports', ['route', 'state', 'ts', 'event_id'])
    op.drop_index('idx_reports_route_state', table_name='reports')
    op.drop_index('idx_reports_ts', table_name='reports')
    op.drop_index('idx_reports_state_ts', table_name='reports')
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for fk in sa.inspect(bind).get_foreign_keys('reports'):
            if fk["referred_table"] == "events" and fk["name"]:
                op.drop_constraint(fk["name"], 'reports', type_='foreignkey')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key('reports_event_id_fkey', 'reports', 'events',
                              ['event_id'], ['id'])
    op.create_index('idx_reports_state_ts', 'reports', ['state', 'ts', 'event_id'])
    op.create_index('idx_reports_ts', 'reports', ['ts'])
    op.create_index('idx_reports_route_state', 'reports', ['route', 'state', 'ts'])
    op.drop_index('idx_reports_route_state_ts', table_name='reports')
