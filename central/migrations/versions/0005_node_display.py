"""nodes.display: the community centre's name, as each node tells it in its batches

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 17:00:00

The desks show "Buurthuis De Kleine Wereld", not ``escamp-kleine-wereld``.
A node sends its ``display_name`` in every batch's meta (``status.display``);
until its first batch after this revision the slug is shown.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('display', sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('display')
