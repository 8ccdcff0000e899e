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
import os
import sys

from archsearch.errors import ArchsearchError, CLIUsageError

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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``archsearch: error:`` line and exit status 1, like the rest."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise CLIUsageError(f"{command}{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        try:
            handlers.append(logging.FileHandler(args.log_file))
        except OSError as e:
            raise CLIUsageError(f"--log-file {args.log_file!r}: {e.strerror or e}") from None
    logging.basicConfig(level=level, handlers=handlers, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 success, 1 an error in the input, 130 Ctrl-C)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args)
        return int(args.func(args) or 0)
    except ArchsearchError as e:
        if debug:
            raise
        lines = str(e).splitlines() or [type(e).__name__]
        print(f"archsearch: error: {lines[0]}", file=sys.stderr)
        return 1
    except SystemExit as e:  # --help and --version print and exit
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archsearch show ... | head`: the reader left; stop quietly
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again (Python's own advice)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
