"""Argument types shared by every command, and the one rule for output files.

The types are argparse ``type=`` functions: a bad value is refused while the
command line is parsed, before anything (a database, an output file) is created.
:func:`check_output` is called on every output path before work starts, and
:func:`atomic_output` writes through a temporary file in the same folder, so an
interrupted or failed command never leaves a partial file.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from archsearch.errors import CLIUsageError

MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch accept any non-negative int; keep seeds portable
MAX_NAME_CHARS = 128  # search names (shown in tables and used as a database key)


def _integer(text: str) -> int:
    """An integer from ``text``; also ``1e6`` (a float literal with an integral value)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer")
    return int(value)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: must be at least {low}" + (f" and at most {high}" if high is not None else ""))
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(low: float, high: float | None = None, *, include_low: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number >= low (> low unless ``include_low``) and <= high."""

    def parse(text: str) -> float:
        value = _number(text)
        if value < low or (value == low and not include_low) or (high is not None and value > high):
            bounds = f"{'at least' if include_low else 'above'} {low:g}" + (f" and at most {high:g}" if high else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    parse.__name__ = "number"
    return parse


def name_text(text: str) -> str:
    """An argparse type: a non-empty name of printable characters on one line."""
    if not text.strip() or not text.isprintable() or len(text) > MAX_NAME_CHARS:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a name (printable text on one line, 1 to {MAX_NAME_CHARS} characters)")
    return text


positive_int = int_range(1)
seed_int = int_range(0, MAX_SEED)
positive_float = float_range(0.0, include_low=False)


def add_force(parser: argparse.ArgumentParser) -> None:
    """The ``--force`` flag of every command that writes files."""
    parser.add_argument("--force", action="store_true", help="overwrite output files that already exist")


def check_output(path: str, suffixes: tuple[str, ...], force: bool, option: str) -> Path:
    """Refuse an output path before any work: wrong extension, a directory, a missing or
    unwritable folder, or an existing file without ``--force``.

    Args:
        path: The path the user gave.
        suffixes: Accepted extensions, lower case with the dot (``(".py",)``).
        force: Whether an existing file may be replaced.
        option: The option's name, for the message.

    Raises:
        CLIUsageError: One line saying what is wrong.
    """
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise CLIUsageError(f"{option} {path!r}: unsupported extension, use {' or '.join(suffixes)}")
    if target.is_dir():
        raise CLIUsageError(f"{option} {path!r} is a directory, not a file")
    folder = target.parent
    if not folder.is_dir():
        raise CLIUsageError(f"{option} {path!r}: folder {str(folder)!r} does not exist")
    if (target.exists() or target.is_symlink()) and not force:
        raise CLIUsageError(f"{option} {path!r} already exists; use --force to overwrite it")
    try:  # the real test of "can I create a file there" (read-only media, permissions, quotas)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIUsageError(f"{option} {path!r}: cannot write into {str(folder)!r}: {e.strerror or e}") from None
    return target


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` in one step.

    On any error (or Ctrl-C) the temporary file is removed and ``target`` is left as it was.
    An OSError while writing becomes one :class:`CLIUsageError` line.
    """
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    except OSError as e:
        raise CLIUsageError(f"cannot write {str(target)!r}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CLIUsageError(f"cannot write {str(target)!r}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
