"""Schema 1: the tables written by archsearch 0.1.0 (the baseline; frozen, never edit).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archsearch_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "searches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("finished", sa.DateTime, nullable=True),
    )
    op.create_table(
        "architectures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("search_id", sa.Integer, sa.ForeignKey("searches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("graph_json", sa.Text, nullable=False),
        sa.Column("structural_hash", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("architectures.id"), nullable=True),
        sa.Column("mutation", sa.Text, nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("search_id", "structural_hash", name="uq_architectures_search_hash"),
        sa.UniqueConstraint("search_id", "name", name="uq_architectures_search_name"),
    )
    op.create_index("ix_architectures_search_stage", "architectures", ["search_id", "stage"])
    op.create_index("ix_architectures_search_fingerprint", "architectures", ["search_id", "fingerprint"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("architecture_id", sa.Integer, sa.ForeignKey("architectures.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("hparams", sa.Text, nullable=False),
        sa.Column("hparams_hash", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metric", sa.Float, nullable=True),
        sa.Column("valid", sa.Float, nullable=True),
        sa.Column("test", sa.Float, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("epochs", sa.Integer, nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("params", sa.BigInteger, nullable=True),
        sa.Column("diverged", sa.Boolean, nullable=False),
        sa.Column("worker", sa.String(256), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("finished", sa.DateTime, nullable=True),
        sa.UniqueConstraint("architecture_id", "task", "hparams_hash", name="uq_evaluations_arch_task_hparams"),
    )
    op.create_index("ix_evaluations_status", "evaluations", ["status"])
    op.create_index("ix_evaluations_arch_status_task", "evaluations", ["architecture_id", "status", "task"])


def downgrade() -> None:
    for table in ("evaluations", "architectures", "searches", "archsearch_meta"):
        op.drop_table(table)
