"""Schema 2: searches.normalizers, the reference's best score per task fixed when initialization ends.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for searches started before: they keep normalizing by the reference's live best scores
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("normalizers", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("normalizers")
