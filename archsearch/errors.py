"""The exception hierarchy: every error archsearch raises on purpose is an ``ArchsearchError``.

The CLI prints such errors as one line (the full traceback only with ``--debug``);
anything else is a bug.
"""

from __future__ import annotations


class ArchsearchError(Exception):
    """Root of all errors raised on purpose by archsearch."""


class InvalidGraphError(ArchsearchError):
    """A cell graph breaks a rule of the IR; the message names the offending node."""


class DSLError(InvalidGraphError):
    """A seed-cell equation file could not be parsed."""


class CompileError(ArchsearchError):
    """A valid graph cannot be compiled with the requested sizes."""


class TaskError(ArchsearchError):
    """Unknown task, missing or unreadable data."""


class HyperParameterError(ArchsearchError):
    """A hyper-parameter value outside the allowed ranges."""


class StorageError(ArchsearchError):
    """The leaderboard database cannot be opened, read or written."""


class SearchConfigError(ArchsearchError):
    """A search configuration is invalid or contradicts the stored one."""


class CLIUsageError(ArchsearchError):
    """Bad command-line input."""


class SearchExistsError(StorageError):
    """A search with this name was created meanwhile (e.g. by a driver started at the same moment)."""


class LeaseHeldError(StorageError):
    """Another live driver holds the search's lease; the message names it."""


class LeaseLostError(StorageError):
    """This driver's lease was taken over; it must stop without writing further."""
