"""staff accounts, sessions, lockout, audit log and report notes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 01:30:00

Tables of central/staff/db.py. Times are Unix milliseconds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('staff',
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('pw_hash', sa.String(length=200), nullable=False),
    sa.Column('must_change', sa.Boolean(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('last_login', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('staff_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('staff_key', sa.String(length=40), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('last_seen', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['staff_key'], ['staff.key'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash')
    )
    op.create_index('idx_staff_sessions_staff', 'staff_sessions', ['staff_key'])
    op.create_table('staff_name_failures',
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('lockouts', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.BigInteger(), nullable=True),
    sa.Column('last_failure', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('staff_client_failures',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_staff_client_failures', 'staff_client_failures', ['client', 'at'])
    op.create_table('staff_audit',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('staff', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=64), server_default='', nullable=False),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_staff_audit_at', 'staff_audit', ['at'])
    op.create_table('report_notes',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('report_id', sa.String(length=36), nullable=False),
    sa.Column('staff', sa.String(length=40), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['report_id'], ['reports.event_id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_report_notes_report', 'report_notes', ['report_id', 'id'])


def downgrade() -> None:
    op.drop_index('idx_report_notes_report', table_name='report_notes')
    op.drop_table('report_notes')
    op.drop_index('idx_staff_audit_at', table_name='staff_audit')
    op.drop_table('staff_audit')
    op.drop_index('idx_staff_client_failures', table_name='staff_client_failures')
    op.drop_table('staff_client_failures')
    op.drop_table('staff_name_failures')
    op.drop_index('idx_staff_sessions_staff', table_name='staff_sessions')
    op.drop_table('staff_sessions')
    op.drop_table('staff')
