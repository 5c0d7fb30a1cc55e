"""central_identity: the one central identity a database belongs to

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 19:30:00

Several ``bart central run`` processes on several hosts may share one
PostgreSQL database (docs/central-scale.md). They must be one central to the
nodes: the same signing and encryption keys, CA and CAP key. The first
process to run writes its public keys' fingerprints here; a later one with
different keys refuses to start (central/cluster.py) instead of answering
nodes with keys they do not know.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'central_identity',
        sa.Column('id', sa.Integer, primary_key=True),
        sa.Column('origin', sa.String(63), nullable=False),
        sa.Column('signing_pub', sa.String(64), nullable=False),
        sa.Column('encryption_pub', sa.String(64), nullable=False),
        sa.Column('ca_sha256', sa.String(64), nullable=False),
        sa.Column('cap_sha256', sa.String(64), nullable=False),
        sa.Column('claimed_at', sa.BigInteger, nullable=False),
        sa.Column('claimed_by', sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('central_identity')
