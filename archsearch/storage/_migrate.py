"""Schema revisions (Alembic): which revision a database is at, and upgrading it in place.

A database records its revision in Alembic's ``alembic_version`` table. Databases written
before migrations existed (archsearch 0.1.0) have only ``archsearch_meta.schema_version = 1``,
which is revision ``0001``. New databases are created from the models and stamped with
:data:`HEAD_REVISION`; tests check that this equals the baseline plus every revision, and
that :data:`HEAD_REVISION` is the head of ``migrations/versions``. Reading the revision is
plain SQL, so opening a database never imports Alembic; only upgrades and stamps do.
"""

from __future__ import annotations

from sqlalchemy import inspect, select, text, update
from sqlalchemy.engine import Connection

from archsearch.storage._models import META_TABLE, MetaModel

HEAD_REVISION = "0003"  # the newest file in migrations/versions (checked by a test)
SCRIPT_LOCATION = "archsearch.storage:migrations"
VERSION_TABLE = "alembic_version"
LEGACY_REVISIONS = {"1": "0001"}  # archsearch_meta.schema_version of pre-migration databases -> revision


def _config(connection: Connection | None = None):  # -> alembic.config.Config
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def known_revisions() -> list[str]:
    """Every revision in migrations/versions, oldest first (imports Alembic)."""
    from alembic.script import ScriptDirectory

    return [s.revision for s in reversed(list(ScriptDirectory.from_config(_config()).walk_revisions()))]


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None when it has no archsearch tables at all."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        if revision is not None:
            return str(revision)
    if META_TABLE not in tables:
        return None
    found = conn.execute(select(MetaModel.value).where(MetaModel.key == "schema_version")).scalar()
    return LEGACY_REVISIONS.get(str(found), f"version {found}")


def stamp_head(conn: Connection) -> None:
    """Mark a database just created from the models as being at the head revision."""
    from alembic import command

    command.stamp(_config(conn), HEAD_REVISION)
    _record_revision(conn, HEAD_REVISION)


def upgrade_to_head(conn: Connection) -> tuple[str, str]:
    """Upgrade in the caller's transaction (a failure rolls everything back). Returns (from, to).

    Raises:
        ValueError: The revision is unknown (a newer archsearch, or not an archsearch database).
    """
    from alembic import command

    before = current_revision(conn)
    if before not in known_revisions():
        raise ValueError(f"unknown revision {before!r}")
    if VERSION_TABLE not in inspect(conn).get_table_names():
        command.stamp(_config(conn), before)  # a pre-migration database: record where it stands
    command.upgrade(_config(conn), "head")
    _record_revision(conn, HEAD_REVISION)
    return before, HEAD_REVISION


def _record_revision(conn: Connection, revision: str) -> None:
    """Keep archsearch_meta.schema_version readable by people (the revision, e.g. '0002')."""
    conn.execute(update(MetaModel).where(MetaModel.key == "schema_version").values(value=revision))
