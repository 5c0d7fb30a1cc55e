"""indexes for the Open311 feed and the insight page: reports by time, updates by report, batches by time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 10:00:00

The public Open311 feed (central/open311.py) pages through the municipality's
reports newest first: ``reports (route, ts, event_id)``. The insight page
(central/insight.py) counts reports of the last 12 weeks for every desk
(``reports (ts)``), looks up each report's first desk answer and handling
(``report_updates (report_id, at)``) and counts the hours in which each node
delivered a batch (``batches (received_at, node)``, covering). Every query of
those pages is bounded by a time range on one of these indexes.
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('idx_reports_route_ts', 'reports', ['route', 'ts', 'event_id'])
    op.create_index('idx_reports_ts', 'reports', ['ts'])
    op.create_index('idx_report_updates_report', 'report_updates', ['report_id', 'at'])
    op.create_index('idx_batches_received', 'batches', ['received_at', 'node'])


def downgrade() -> None:
    op.drop_index('idx_batches_received', table_name='batches')
    op.drop_index('idx_report_updates_report', table_name='report_updates')
    op.drop_index('idx_reports_ts', table_name='reports')
    op.drop_index('idx_reports_route_ts', table_name='reports')
