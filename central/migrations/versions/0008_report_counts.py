"""report_counts: the staff pages' per-desk, per-state counts, kept by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 17:00:00

The tabs of the staff list ("Nieuw (12)", "Afgehandeld (48,211)") counted the
reports table on every page load: a scan that grows with every report ever
made. ``report_counts`` holds one row per (route, state) with its number; a
trigger on ``reports`` keeps it right for every writer (the projector's
inserts, staff changes, re-routes, tests, a hand-made fix), in the same
transaction. ``idx_reports_state_ts`` serves an admin's per-state list (every
desk) newest first.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_SQLITE = [
    """CREATE TRIGGER report_counts_insert AFTER INSERT ON reports BEGIN
         INSERT INTO report_counts (route, state, n) VALUES (NEW.route, NEW.state, 1)
           ON CONFLICT (route, state) DO UPDATE SET n = n + 1;
       END""",
    """CREATE TRIGGER report_counts_update AFTER UPDATE OF route, state ON reports
       WHEN OLD.route != NEW.route OR OLD.state != NEW.state BEGIN
         UPDATE report_counts SET n = n - 1 WHERE route = OLD.route AND state = OLD.state;
         INSERT INTO report_counts (route, state, n) VALUES (NEW.route, NEW.state, 1)
           ON CONFLICT (route, state) DO UPDATE SET n = n + 1;
       END""",
    """CREATE TRIGGER report_counts_delete AFTER DELETE ON reports BEGIN
         UPDATE report_counts SET n = n - 1 WHERE route = OLD.route AND state = OLD.state;
       END""",
]

_POSTGRES = [
    """CREATE FUNCTION report_counts_keep() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP IN ('UPDATE', 'DELETE') THEN
           UPDATE report_counts SET n = n - 1 WHERE route = OLD.route AND state = OLD.state;
         END IF;
         IF TG_OP IN ('INSERT', 'UPDATE') THEN
           INSERT INTO report_counts (route, state, n) VALUES (NEW.route, NEW.state, 1)
             ON CONFLICT (route, state) DO UPDATE SET n = report_counts.n + 1;
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER report_counts_insert AFTER INSERT OR DELETE ON reports
       FOR EACH ROW EXECUTE FUNCTION report_counts_keep()""",
    """CREATE TRIGGER report_counts_update AFTER UPDATE OF route, state ON reports
       FOR EACH ROW WHEN (OLD.route IS DISTINCT FROM NEW.route
                          OR OLD.state IS DISTINCT FROM NEW.state)
       EXECUTE FUNCTION report_counts_keep()""",
]


def upgrade() -> None:
    op.create_table(
        'report_counts',
        sa.Column('route', sa.String(16), primary_key=True),
        sa.Column('state', sa.String(16), primary_key=True),
        sa.Column('n', sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO report_counts (route, state, n) "
               "SELECT route, state, count(*) FROM reports GROUP BY route, state")
    for sql in (_POSTGRES if op.get_bind().dialect.name == "postgresql" else _SQLITE):
        op.execute(sql)
    op.create_index('idx_reports_state_ts', 'reports', ['state', 'ts', 'event_id'])


def downgrade() -> None:
    op.drop_index('idx_reports_state_ts', table_name='reports')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER report_counts_update ON reports")
        op.execute("DROP TRIGGER report_counts_insert ON reports")
        op.execute("DROP FUNCTION report_counts_keep()")
    else:
        for name in ("report_counts_insert", "report_counts_update", "report_counts_delete"):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table('report_counts')
