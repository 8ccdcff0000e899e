"""Schema migrations: old databases upgrade in place, keep every row, and fail atomically.

``tests/data/schema1-archsearch-0.1.0.db`` was written by archsearch 0.1.0 (schema 1, before
migrations existed) through the storage API (``archsearch.report._demo.make_demo_db``).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from postgres_server import postgres_server  # noqa: F401 (the fixture)

from archsearch.cli import main
from archsearch.errors import StorageError
from archsearch.storage import open_storage
from archsearch.storage import _migrate
from archsearch.storage._models import BaseModel

FIXTURE = Path(__file__).parent / "data" / "schema1-archsearch-0.1.0.db"
# `archsearch leaderboard --format json --top 100` of FIXTURE, printed by archsearch 0.1.0
FIXTURE_LEADERBOARD = FIXTURE.with_suffix(".leaderboard.json")


@pytest.fixture
def old_db(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    return path, f"sqlite:///{path}"


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def _fitness(url: str, capsys) -> dict[str, float]:
    import json

    assert main(["leaderboard", "--db", url, "--format", "json", "--top", "100"]) == 0
    return {row["name"]: row["fitness"] for row in json.loads(capsys.readouterr().out)}


def test_head_revision_is_the_newest_migration():
    assert _migrate.known_revisions()[-1] == _migrate.HEAD_REVISION
    assert _migrate.known_revisions()[0] == "0001"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_baseline_plus_every_revision_equals_the_models(backend, tmp_path, request):
    """A database upgraded from the baseline has exactly the schema new databases get."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_server").new_database()
    engine = create_engine(url)
    with engine.begin() as conn:
        from alembic import command

        command.upgrade(_migrate._config(conn), "head")
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), BaseModel.metadata)
    engine.dispose()
    assert diffs == []


def test_old_database_upgrades_in_place_with_the_same_leaderboard(old_db, capsys):
    path, url = old_db
    import json

    before = {row["name"]: row["fitness"] for row in json.loads(FIXTURE_LEADERBOARD.read_text())}
    assert main(["db", "current", "--db", url]) == 0
    assert "revision 0001" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"revision {_migrate.HEAD_REVISION}" in capsys.readouterr().out
    after = _fitness(url, capsys)
    with sqlite3.connect(FIXTURE) as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM architectures")}
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("searches", "architectures", "evaluations")]
    with sqlite3.connect(path) as conn:
        assert [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("searches", "architectures", "evaluations")] == counts
    assert set(after) <= names and len(after) > 3
    assert after == before
    assert main(["db", "upgrade", "--db", url]) == 0  # a second upgrade has nothing to do
    assert "nothing to do" in capsys.readouterr().out


def test_a_failed_upgrade_leaves_the_database_as_it_was(old_db, monkeypatch, capsys):
    path, url = old_db
    before = _dump(path)

    def fail(conn, revision):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_migrate, "_record_revision", fail)  # after the DDL of stamping and upgrading ran
    assert main(["db", "upgrade", "--db", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("archsearch: error: upgrading") and "rolled back" in err and "disk on fire" in err
    assert _dump(path) == before


def test_an_unknown_revision_is_refused_by_every_command(old_db, capsys):
    path, url = old_db
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE archsearch_meta SET value = '999' WHERE key = 'schema_version'")
    for read_only in (False, True):
        with pytest.raises(StorageError, match="unknown to this archsearch.*upgrade archsearch"):
            open_storage(url, read_only=read_only)
    assert main(["db", "upgrade", "--db", url]) == 1
    assert "a newer archsearch wrote it" in capsys.readouterr().err


def test_db_commands_on_missing_or_foreign_files(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["db", "upgrade", "--db", missing]) == 1
    assert "no database file" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = _dump(foreign)
    assert main(["db", "upgrade", "--db", f"sqlite:///{foreign}"]) == 1
    assert "not an archsearch database" in capsys.readouterr().err
    assert _dump(foreign) == before


def test_new_databases_are_stamped_with_the_head(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    open_storage(url).close()
    assert main(["db", "current", "--db", url]) == 0
    assert f"revision {_migrate.HEAD_REVISION} (up to date" in capsys.readouterr().out
