"""Opening a leaderboard database: URLs, SQLite pragmas, and the schema-revision check.

SQLite runs in WAL mode with a busy timeout, so a read-only reader never blocks the
writing driver and vice versa. Writers start transactions with ``BEGIN IMMEDIATE``
(they queue behind each other instead of failing on a stale snapshot); readers use a
plain ``BEGIN`` so each call reads one consistent snapshot. Read-only SQLite opens the
file with the URI flag ``mode=ro`` and ``PRAGMA query_only``; on read-only media (a WAL
reader cannot create the ``-shm`` index there) a checkpointed database is opened with
``immutable=1`` instead, and one with changes still in its ``-wal`` file is refused
with a clear message.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from typing import Any

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from archsearch import __version__
from archsearch.errors import StorageError
from archsearch.storage._migrate import HEAD_REVISION, current_revision, stamp_head, upgrade_to_head
from archsearch.storage._models import META_TABLE, BaseModel, MetaModel
from archsearch.storage._records import utcnow

_logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30  # how long a locked SQLite database is waited for before failing


def error_text(error: BaseException) -> str:
    """One line describing a driver error (the DBAPI message without SQL and links)."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        return f"{type(error.orig).__name__}: {error.orig}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def open_engine(url_text: str, read_only: bool) -> tuple[Engine, str]:
    """An engine for ``url_text`` and the URL to show users (password hidden).

    Raises:
        StorageError: The URL is malformed, names an unknown dialect or a driver that
            is not installed, or (SQLite) points into a missing directory or, read-only,
            at a missing file.
    """
    try:
        url = make_url(url_text)
    except (SQLAlchemyError, ValueError) as e:
        raise StorageError(f"cannot open database {url_text!r}: not an SQLAlchemy URL ({e})") from e
    display = url.render_as_string(hide_password=True)
    url, kwargs = _engine_args(url, read_only)
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as e:
        raise StorageError(f"cannot open database {display}: its driver is not installed ({e})") from e
    except (SQLAlchemyError, ValueError) as e:
        raise StorageError(f"cannot open database {display}: {error_text(e)}") from e
    if engine.dialect.name == "sqlite":
        _install_sqlite_events(engine, read_only)
    elif read_only and engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgres_read_only)
    return engine, display


def _sqlite_path(url: URL) -> str | None:
    """The file path of a SQLite URL, or None for an in-memory database."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):  # already a SQLite URI filename
        return urllib.parse.unquote(database[len("file:") :].split("?")[0])
    return database


def _engine_args(url: URL, read_only: bool) -> tuple[URL, dict[str, Any]]:
    """The URL and ``create_engine`` keywords for ``url``; SQLite paths are checked first."""
    if url.get_backend_name() != "sqlite":
        return url, {}
    connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    path = _sqlite_path(url)
    if path is None:
        if read_only:
            raise StorageError("an in-memory SQLite database cannot be opened read-only")
        return url, {"poolclass": StaticPool, "connect_args": connect_args}
    path = os.path.abspath(path)
    if read_only:
        if not os.path.isfile(path):
            raise StorageError(f"no database file at {path}; read-only mode never creates one")
        query = {**url.query, "mode": "ro", "uri": "true"}
        if not _opens_read_only(path):
            query["immutable"] = _immutable_fallback(path)
        url = url.set(database="file:" + urllib.parse.quote(path), query=query)
    elif not os.path.isdir(os.path.dirname(path)):
        raise StorageError(f"cannot create database {path}: directory {os.path.dirname(path)} does not exist")
    return url, {"connect_args": connect_args}


def _opens_read_only(path: str) -> bool:
    """False only if SQLite cannot open ``path`` with ``mode=ro`` because its folder is read-only
    (a WAL database needs to create ``-shm``); any other problem is reported by the normal open."""
    if os.access(os.path.dirname(path), os.W_OK):
        return True
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        return "unable to open" not in str(e)
    except sqlite3.Error:
        return True
    return True


def _immutable_fallback(path: str) -> str:
    """``"1"`` for the ``immutable`` URI flag, or StorageError if that would hide committed changes."""
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise StorageError(
            f"cannot open {path} read-only: its folder is not writable (read-only media?) and {wal} still holds "
            f"changes that SQLite can only read after creating {path}-shm there; copy the .db and -wal files "
            f"to a writable folder and read the copy"
        )
    _logger.info("%s: folder not writable, opening the database as immutable (read-only media)", path)
    return "1"


def _install_sqlite_events(engine: Engine, read_only: bool) -> None:
    """Connection pragmas and explicit transaction control for SQLite.

    pysqlite's own transaction handling starts transactions late and never for
    SELECTs; taking control of BEGIN gives real snapshots (the SQLAlchemy recipe).
    None of these pragmas writes to the file.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            # In WAL mode NORMAL survives process crashes; only a power loss may drop the
            # last commits, which a resumable search re-runs.
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _postgres_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()


# ------------------------------------------------------------------ schema


def prepare_schema(engine: Engine, display: str, read_only: bool) -> None:
    """Check the schema version, creating the tables only in a new, empty database.

    Raises:
        StorageError: The database cannot be read, is not an archsearch database (it
            is then left untouched), is empty in read-only mode, or has another
            schema version.
    """
    try:
        with engine.begin() as conn:
            _check_or_create(conn, display, read_only)
        if engine.dialect.name == "sqlite" and not read_only and not isinstance(engine.pool, StaticPool):
            _enable_wal(engine, display)  # a file (in memory, SQLite keeps journal mode "memory")
    except StorageError:
        raise
    except (SQLAlchemyError, OSError) as e:
        raise StorageError(f"cannot open database {display}: {error_text(e)}") from e
    except engine.dialect.loaded_dbapi.Error as e:  # raw-connection errors from _enable_wal
        raise StorageError(f"cannot open database {display}: {type(e).__name__}: {e}") from e


def _check_or_create(conn: Connection, display: str, read_only: bool) -> None:
    tables = set(inspect(conn).get_table_names())
    if META_TABLE in tables:
        _check_revision(current_revision(conn), display)
        missing = sorted(set(BaseModel.metadata.tables) - tables)
        if missing:  # refused before anything (journal mode included) is changed
            raise StorageError(f"{display} is a damaged archsearch database: table(s) {', '.join(missing)} "
                               f"missing; it was left untouched")
    elif tables:
        raise StorageError(
            f"{display} is not an archsearch database (it has tables {', '.join(sorted(tables))} "
            f"but no {META_TABLE}); it was left untouched, use another file"
        )
    elif read_only:
        raise StorageError(f"{display} is empty, not an archsearch database")
    else:
        BaseModel.metadata.create_all(conn)
        conn.execute(MetaModel.__table__.insert(), _meta_rows())
        stamp_head(conn)
        _logger.info("created archsearch database %s (schema revision %s)", display, HEAD_REVISION)


def _check_revision(revision: str | None, display: str) -> None:
    if revision == HEAD_REVISION:
        return
    from archsearch.storage._migrate import known_revisions

    if revision in known_revisions():
        raise StorageError(
            f"{display} is at schema revision {revision}, older than this archsearch {__version__} reads "
            f"({HEAD_REVISION}); upgrade it in place with `archsearch db upgrade --db {display}`"
        )
    raise StorageError(
        f"{display} has schema {revision}, unknown to this archsearch {__version__} (which reads revision "
        f"{HEAD_REVISION}); it was probably written by a newer archsearch: upgrade archsearch to open it"
    )


def database_revision(url_text: str) -> tuple[str | None, str]:
    """(the database's schema revision or None if it has no archsearch tables, its display URL)."""
    engine, display = open_engine(url_text, read_only=True)
    try:
        with engine.begin() as conn:
            return current_revision(conn), display
    except SQLAlchemyError as e:
        raise StorageError(f"cannot open database {display}: {error_text(e)}") from e
    finally:
        engine.dispose()


def upgrade_database(url_text: str) -> tuple[str, str, str]:
    """Upgrade a database in place to the head revision, all in one transaction.

    Returns:
        (revision before, revision after, display URL).

    Raises:
        StorageError: Not an archsearch database, an unknown (newer) revision, or the upgrade
            failed; the database is then exactly as it was.
    """
    path = _sqlite_path(make_url(url_text)) if url_text.startswith("sqlite") else None
    if path is not None and not os.path.isfile(path):
        raise StorageError(f"no database file at {os.path.abspath(path)}; nothing to upgrade")
    engine, display = open_engine(url_text, read_only=False)
    try:
        with engine.begin() as conn:
            if META_TABLE not in inspect(conn).get_table_names():
                raise StorageError(f"{display} is not an archsearch database; nothing to upgrade")
            before, after = upgrade_to_head(conn)
    except ValueError as e:
        raise StorageError(f"cannot upgrade {display}: {e}; a newer archsearch wrote it") from e
    except StorageError:
        raise
    except Exception as e:  # any failure inside a migration: the transaction was rolled back
        raise StorageError(f"upgrading {display} failed and was rolled back: {error_text(e)}") from e
    finally:
        engine.dispose()
    return before, after, display


def _enable_wal(engine: Engine, display: str) -> None:
    # journal_mode cannot change inside a transaction, so use the raw connection.
    raw = engine.raw_connection()
    try:
        mode = raw.cursor().execute("PRAGMA journal_mode=WAL").fetchone()[0]
    finally:
        raw.close()
    if mode != "wal":
        _logger.warning("SQLite database %s stays in journal mode %r, not WAL", display, mode)


def _meta_rows() -> list[dict[str, str]]:
    return [
        {"key": "schema_version", "value": HEAD_REVISION},
        {"key": "archsearch_version", "value": __version__},
        {"key": "created", "value": utcnow().isoformat()},
    ]
