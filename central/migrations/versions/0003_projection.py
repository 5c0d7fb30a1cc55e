"""report projection out of the ingest path: batches.pending

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:40:00

Ingest stores events and answers; the projector (central/projector.py) derives
the triaged ``reports`` rows afterwards. A batch that brought reports keeps
their event ids in ``pending`` (a JSON array) until the projector has handled
them, then ``pending`` is NULL. Batches stored before this revision were
projected at ingest, so NULL is right for them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batches') as batch:
        batch.add_column(sa.Column('pending', sa.Text(), nullable=True))
    op.create_index('idx_batches_pending', 'batches', ['received_at'],
                    sqlite_where=sa.text('pending IS NOT NULL'),
                    postgresql_where=sa.text('pending IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('idx_batches_pending', table_name='batches')
    with op.batch_alter_table('batches') as batch:
        batch.drop_column('pending')
