"""Alembic environment: always run on the connection (and inside the transaction) given by the caller."""

from __future__ import annotations

from alembic import context

from archsearch.storage._models import BaseModel

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=BaseModel.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them; batch mode does that for us
    transaction_per_migration=False,
)
context.run_migrations()
