"""The leaderboard database: searches, architectures and their evaluations.

Open one with :func:`open_storage`; the driver writes, readers open it with
``read_only=True`` and may read while the driver runs. Importing this package loads
neither torch nor ray, nor SQLAlchemy (that happens in :func:`open_storage`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archsearch.storage._base import (
    DEFAULT_REFERENCE,
    LeaderboardStorage,
    evaluation_score,
    normalized_fitness,
)
from archsearch.storage._lease import HEARTBEAT_S, LEASE_TIMEOUT_S, DriverId, Lease
from archsearch.storage._records import (
    COMPLETE_STAGE,
    EVALUATION_STATUSES,
    MAX_ERROR_LENGTH,
    MAX_HASH_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PURPOSE_LENGTH,
    MAX_STAGE_LENGTH,
    MAX_TASK_LENGTH,
    MAX_WORKER_LENGTH,
    ORIGINS,
    RESULT_KEYS,
    SEARCH_STATUSES,
    ArchitectureRecord,
    EvalStatus,
    EvaluationRecord,
    SearchRecord,
    SearchStatus,
    hparams_hash,
)

if TYPE_CHECKING:
    from archsearch.storage._sql import SQLStorage

DEFAULT_URL = "sqlite:///archsearch.db"

__all__ = [
    "COMPLETE_STAGE",
    "DEFAULT_REFERENCE",
    "DEFAULT_URL",
    "HEARTBEAT_S",
    "LEASE_TIMEOUT_S",
    "EVALUATION_STATUSES",
    "MAX_ERROR_LENGTH",
    "MAX_HASH_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PURPOSE_LENGTH",
    "MAX_STAGE_LENGTH",
    "MAX_TASK_LENGTH",
    "MAX_WORKER_LENGTH",
    "ORIGINS",
    "RESULT_KEYS",
    "SEARCH_STATUSES",
    "ArchitectureRecord",
    "EvalStatus",
    "DriverId",
    "EvaluationRecord",
    "Lease",
    "LeaderboardStorage",
    "SQLStorage",
    "SearchRecord",
    "SearchStatus",
    "evaluation_score",
    "hparams_hash",
    "normalized_fitness",
    "open_storage",
]


def open_storage(url: str = DEFAULT_URL, *, read_only: bool = False) -> LeaderboardStorage:
    """Open (and, unless read-only, create if missing) a leaderboard database.

    SQLite files run in WAL mode with a busy timeout and foreign keys on, so one
    writer and any number of read-only readers can work at the same time.

    Args:
        url: An SQLAlchemy URL: ``sqlite:///path.db``, ``sqlite://`` (in memory, for
            tests) or e.g. ``postgresql+psycopg2://user@host/db`` for clusters.
        read_only: Never create or write anything; a missing database is an error.

    Raises:
        StorageError: The URL cannot be opened, the database is not an archsearch
            database (it is left untouched), or its schema version differs.
    """
    from archsearch.storage._sql import SQLStorage

    return SQLStorage(url, read_only=read_only)


def __getattr__(name: str) -> Any:
    # SQLStorage is exported lazily so that importing the package does not load SQLAlchemy.
    if name == "SQLStorage":
        from archsearch.storage._sql import SQLStorage

        return SQLStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
