"""``archsearch db``: the schema revision of a search database, and upgrading it in place."""

from __future__ import annotations

import argparse

from archsearch.storage import DEFAULT_URL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="show or upgrade a database's schema revision")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, text, func in (
        ("current", "print the database's schema revision and the one this archsearch reads", run_current),
        ("upgrade", "upgrade the database in place to this archsearch's revision (one transaction)", run_upgrade),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--db", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
        a.set_defaults(func=func)


def run_current(args: argparse.Namespace) -> int:
    from archsearch.storage._engine import database_revision
    from archsearch.storage._migrate import HEAD_REVISION

    revision, display = database_revision(args.db)
    if revision is None:
        print(f"{display}: no archsearch tables (this archsearch reads revision {HEAD_REVISION})")
        return 0
    state = "up to date" if revision == HEAD_REVISION else "needs `archsearch db upgrade`"
    print(f"{display}: revision {revision} ({state}; this archsearch reads {HEAD_REVISION})")
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    from archsearch.storage._engine import upgrade_database

    before, after, display = upgrade_database(args.db)
    if before == after:
        print(f"{display}: already at revision {after}; nothing to do")
    else:
        print(f"{display}: upgraded from revision {before} to revision {after}")
    return 0
