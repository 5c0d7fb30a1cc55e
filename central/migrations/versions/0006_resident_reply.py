"""report_updates.reply: a desk's short public answer to the resident

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 16:40:00

A desk may answer a report in a few words ("Thank you, the wijkagent will
come by today"). The answer travels to the report's node with the receipt
updates and is shown with the receipt code; it is public to whoever holds
the code, so the staff page says so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('report_updates') as batch:
        batch.add_column(sa.Column('reply', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('report_updates') as batch:
        batch.drop_column('reply')
