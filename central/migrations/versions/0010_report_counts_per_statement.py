"""report_counts: new reports counted once per statement, not once per row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 23:00:00

Migration 0008's per-row ``AFTER INSERT`` trigger cost more than the insert
itself: the projector inserts a batch of up to 1,000 reports at a time, and
each row ran the trigger's upsert of one of a few hot counter rows
(bench/central_sync.py, issue 15: SQLite ~21 µs per row with it, ~7 without;
PostgreSQL's server 36–43 µs per row against 21).

- **PostgreSQL**: a statement-level trigger with a transition table
  (``REFERENCING NEW TABLE``): one grouped upsert per ``INSERT`` statement,
  whoever the writer is, so the counts stay exact for every writer as before.
  Deletes are counted the same way; a change of route or state stays the
  per-row trigger of 0008 (staff change one report at a time).
- **SQLite** has no statement-level triggers: the insert trigger is dropped,
  and the writer of new reports counts what it inserted in the same
  transaction (``central.projector.insert_reports``; the projector is the
  only writer of new reports). Changes of route or state and deletes keep
  0008's per-row triggers. A row inserted by hand on SQLite is not counted:
  insert through ``insert_reports`` instead.
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_POSTGRES_UP = [
    "DROP TRIGGER report_counts_insert ON reports",
    """CREATE FUNCTION report_counts_added() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO report_counts (route, state, n)
           SELECT route, state, count(*) FROM report_counts_new GROUP BY route, state
           ON CONFLICT (route, state) DO UPDATE SET n = report_counts.n + excluded.n;
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION report_counts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE report_counts c SET n = c.n - gone.n
           FROM (SELECT route, state, count(*) AS n FROM report_counts_old
                 GROUP BY route, state) gone
           WHERE c.route = gone.route AND c.state = gone.state;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER report_counts_insert AFTER INSERT ON reports
       REFERENCING NEW TABLE AS report_counts_new
       FOR EACH STATEMENT EXECUTE FUNCTION report_counts_added()""",
    """CREATE TRIGGER report_counts_delete AFTER DELETE ON reports
       REFERENCING OLD TABLE AS report_counts_old
       FOR EACH STATEMENT EXECUTE FUNCTION report_counts_removed()""",
]

_POSTGRES_DOWN = [
    "DROP TRIGGER report_counts_delete ON reports",
    "DROP TRIGGER report_counts_insert ON reports",
    "DROP FUNCTION report_counts_removed()",
    "DROP FUNCTION report_counts_added()",
    """CREATE TRIGGER report_counts_insert AFTER INSERT OR DELETE ON reports
       FOR EACH ROW EXECUTE FUNCTION report_counts_keep()""",
]

_SQLITE_DOWN = [
    """CREATE TRIGGER report_counts_insert AFTER INSERT ON reports BEGIN
         INSERT INTO report_counts (route, state, n) VALUES (NEW.route, NEW.state, 1)
           ON CONFLICT (route, state) DO UPDATE SET n = n + 1;
       END""",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sql in _POSTGRES_UP:
            op.execute(sql)
    else:
        op.execute("DROP TRIGGER report_counts_insert")


def downgrade() -> None:
    for sql in (_POSTGRES_DOWN if op.get_bind().dialect.name == "postgresql"
                else _SQLITE_DOWN):
        op.execute(sql)
