"""Frozen records returned by the storage, their allowed values, and canonical JSON.

Records are plain data: every dict inside is JSON-able and is stored as JSON text,
never as a pickle. Treat them as read-only snapshots of a row; change the database
through :class:`~archsearch.storage.LeaderboardStorage` methods instead.
Timestamps are naive ``datetime`` objects in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import math
from typing import Any

from archsearch.errors import StorageError
from archsearch.storage._lease import Lease

# ---- String length limits (enforced in Python too: SQLite ignores VARCHAR sizes) ----
MAX_NAME_LENGTH = 128  # search and architecture names
MAX_HASH_LENGTH = 128  # structural hashes, fingerprints, hparams hashes
MAX_TASK_LENGTH = 64  # task names, e.g. 'arithmetic'
MAX_PURPOSE_LENGTH = 32  # evaluation purpose, e.g. 'filter'
MAX_STAGE_LENGTH = 64  # architecture stage, e.g. 'gated_out:xml'
MAX_STATUS_LENGTH = 16  # status and origin enums
MAX_WORKER_LENGTH = 256  # worker identity, e.g. 'ray:node-3:pid-1234'
MAX_ERROR_LENGTH = 20_000  # failure messages and tracebacks are truncated to this

# ---- Allowed values ----
class SearchStatus(str, enum.Enum):
    """A search: ``running`` (a driver works on it), ``finished`` (its budget is spent) or ``stopped``."""

    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"


class EvalStatus(str, enum.Enum):
    """An evaluation: ``queued``, ``running`` (on a worker), ``done`` (a result) or ``failed`` (an error)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


SEARCH_STATUSES = tuple(s.value for s in SearchStatus)
ORIGINS = ("seed", "mutant")
EVALUATION_STATUSES = tuple(s.value for s in EvalStatus)
COMPLETE_STAGE = "complete"  # architectures that may sit on the top-100 list
RESULT_KEYS = ("metric", "valid", "test", "epochs", "seconds", "params", "diverged")


@dataclasses.dataclass(frozen=True)
class SearchRecord:
    """One search run: its configuration and the driver's resumable state."""

    id: int
    name: str
    config: dict[str, Any]
    seed: int
    status: str
    state: dict[str, Any]
    created: datetime.datetime
    finished: datetime.datetime | None
    normalizers: dict[str, float] | None = None  # the reference's scores, fixed when initialization ended
    counters: dict[str, int] = dataclasses.field(default_factory=dict)  # the driver's event counts
    lease: Lease | None = None  # the driver that holds the search now, if any


@dataclasses.dataclass(frozen=True)
class ArchitectureRecord:
    """One cell of a search (a seed or a mutant) and where it stands in the pipeline."""

    id: int
    search_id: int
    name: str
    graph_json: str
    structural_hash: str
    fingerprint: str | None
    parent_id: int | None
    mutation: dict[str, Any] | None
    origin: str
    stage: str
    created: datetime.datetime


@dataclasses.dataclass(frozen=True)
class EvaluationRecord:
    """One (architecture, task, hyper-parameter setting) training run and its outcome."""

    id: int
    architecture_id: int
    task: str
    hparams: dict[str, Any]
    hparams_hash: str
    purpose: str
    status: str
    metric: float | None
    valid: float | None
    test: float | None
    result: dict[str, Any] | None
    epochs: int | None
    seconds: float | None
    params: int | None
    diverged: bool
    worker: str | None
    error: str | None
    attempts: int
    created: datetime.datetime
    finished: datetime.datetime | None


def utcnow() -> datetime.datetime:
    """The current time as a naive UTC datetime (what every backend stores)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays (e.g. a trainer's np.float32 loss) without importing numpy.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by None (strict JSON has no NaN)."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, what: str) -> str:
    """Serialize ``obj`` as canonical strict JSON (sorted keys, no NaN).

    Non-finite floats (a diverged loss) become ``null``, so PostgreSQL and other
    JSON readers accept the text.

    Args:
        obj: A JSON-able value (dicts, lists, str, numbers, bool, None; numpy scalars).
        what: What is being stored, for the error message.

    Raises:
        StorageError: ``obj`` contains something that is not JSON-able.
    """
    try:
        try:
            return _canonical(obj)
        except ValueError:  # NaN or inf somewhere (or a circular reference)
            return _canonical(_finite(obj))
    except (TypeError, ValueError, RecursionError) as e:
        raise StorageError(f"cannot store {what} as JSON: {e}") from e


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=False)


def from_json(text: str | None) -> Any:
    """Parse JSON text written by :func:`to_json` (None stays None)."""
    return None if text is None else json.loads(text)


def hparams_hash(hparams: dict[str, Any]) -> str:
    """The sha256 hex digest of the canonical JSON of a hyper-parameter setting.

    Keys are sorted and floats are written as-is, so ``{"lr": 1}`` and ``{"lr": 1.0}``
    are different settings; the driver should build settings from the same typed ranges.

    Args:
        hparams: The setting, a flat or nested JSON-able dict.

    Raises:
        StorageError: The setting is not JSON-able or contains NaN/inf.
    """
    try:
        text = _canonical(hparams)
    except (TypeError, ValueError) as e:
        raise StorageError(f"cannot hash hyper-parameters {hparams!r}: {e}") from e
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
