"""Schema 3: the driver lease (searches.lease_*) and the event counters in their own column.

The counters move out of ``searches.state`` (where the driver kept them, written apart from the
rows they count) into ``searches.counters``, which is only changed with those rows.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LEASE = {
    "lease_token": sa.String(32), "lease_host": sa.String(255), "lease_machine": sa.String(255),
    "lease_pid": sa.Integer(), "lease_since": sa.DateTime(), "lease_heartbeat": sa.DateTime(),
}


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("counters", sa.Text, nullable=False, server_default="{}"))
        for name, kind in _LEASE.items():
            batch.add_column(sa.Column(name, kind, nullable=True))
    searches = sa.table("searches", sa.column("id", sa.Integer), sa.column("state", sa.Text),
                        sa.column("counters", sa.Text))
    conn = op.get_bind()
    for search_id, state_text in conn.execute(sa.select(searches.c.id, searches.c.state)).all():
        state = json.loads(state_text) if state_text else {}
        counters = state.pop("counters", None) if isinstance(state, dict) else None
        if counters is None:
            continue
        conn.execute(
            sa.update(searches).where(searches.c.id == search_id).values(
                counters=json.dumps(counters, sort_keys=True, separators=(",", ":")),
                state=json.dumps(state, sort_keys=True, separators=(",", ":")),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        for column in ("counters", *_LEASE):
            batch.drop_column(column)
