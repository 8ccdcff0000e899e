"""A real PostgreSQL server for the storage contract tests, started in a temporary data directory.

Uses Debian's ``postgresql`` binaries (``.ci/run`` installs the package when missing). The
server listens only on a Unix socket in the data directory, with fsync off (throw-away data).
As root (CI), the server runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
Each test gets a database of its own (``CREATE DATABASE``), so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """initdb + pg_ctl start in a temporary folder; ``new_database()`` gives a fresh URL."""

    def __init__(self) -> None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)")
        self.pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="archsearch-pg-"))
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.socket.mkdir()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "archsearch", "--no-sync", "-E", "UTF8"])
        options = f"-k {self.socket} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run([pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"])
        self._names = itertools.count()

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self._as_user + argv, check=True, capture_output=True, text=True, timeout=120)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://archsearch@/{database}?host={self.socket}"

    def new_database(self) -> str:
        import psycopg2

        name = f"t{os.getpid()}_{next(self._names)}"
        conn = psycopg2.connect(dbname="postgres", user="archsearch", host=str(self.socket))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server; skipped where PostgreSQL is not installed, except in CI."""
    try:
        server = PostgresServer()
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL, but the server did not start: {detail}")
        pytest.skip(f"PostgreSQL not available: {detail}")
    yield server
    server.stop()
