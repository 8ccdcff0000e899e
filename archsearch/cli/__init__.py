"""The ``archsearch`` command line.

Each subcommand lives in its own module with ``register(subparsers)``, which adds
a parser and sets ``func`` to a handler ``(args) -> int``. Data goes to stdout,
logs and errors to stderr; an :class:`ArchsearchError` is one line (traceback
with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from archsearch.errors import ArchsearchError

# subcommand modules, in the order `archsearch --help` lists them
COMMANDS = [
    "archsearch.cli._cells",
    "archsearch.cli._search",
    "archsearch.cli._inspect",
    "archsearch.cli._mutate",
    "archsearch.cli._train",
    "archsearch.cli._baselines",
    "archsearch.cli._report",
    "archsearch.cli._db",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archsearch", description="Evolutionary search for recurrent cells (Jozefowicz et al. 2015)."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--log-file", help="also write the log to this file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.ERROR if args.quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=level, handlers=handlers, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except ArchsearchError as e:
        if args.debug:
            raise
        print(f"archsearch: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
