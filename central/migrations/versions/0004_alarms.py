"""the alarm desk: alarms (panic buttons, team escalations) and the desk's change mark

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 16:30:00

A node's panic alarm (an ``alert`` with a button) and a team's escalation (an
``ack`` with action ``escalated``) become one ``alarms`` row each, keyed by
the event they are about, so that an alarm a team escalates stays one row.
The projector writes them; the desk answers them (central/alarms.py). The
``counters`` row ``desk`` grows with every change a staff page shows, so that
the live stream of the staff pages reads one row to know whether to update.
Alert and ack events stored before this revision are not projected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'alarms',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('origin', sa.String(63), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('subject', sa.String(8), nullable=False),
        sa.Column('desk', sa.String(16), nullable=False),
        sa.Column('place', sa.String(200), nullable=False, server_default=''),
        sa.Column('what', sa.String(32), nullable=False, server_default=''),
        sa.Column('note', sa.Text(), nullable=False, server_default=''),
        sa.Column('ts', sa.BigInteger(), nullable=False),
        sa.Column('received_at', sa.BigInteger(), nullable=False),
        sa.Column('escalated_at', sa.BigInteger(), nullable=True),
        sa.Column('team_state', sa.String(16), nullable=False, server_default='new'),
        sa.Column('state', sa.String(16), nullable=False, server_default='new'),
        sa.Column('handler', sa.String(80), nullable=True),
        sa.Column('answered_at', sa.BigInteger(), nullable=True),
        sa.Column('updated_at', sa.BigInteger(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False, server_default='1'),
    )
    op.create_index('idx_alarms_desk_state', 'alarms', ['desk', 'state', 'ts'])
    op.execute("INSERT INTO counters (name, value) VALUES ('desk', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE name = 'desk'")
    op.drop_index('idx_alarms_desk_state', table_name='alarms')
    op.drop_table('alarms')
