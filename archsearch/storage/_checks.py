"""What the storage accepts: the checks every write passes before a back-end sees it.

:class:`~archsearch.storage.LeaderboardStorage` runs these in its public methods and hands
the back-end's hooks the checked, typed values defined here, so no back-end repeats (or can
skip) them. Checks that need the data (a row exists, a name is free) belong to the back-end.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Mapping

from archsearch.errors import StorageError
from archsearch.storage._lease import MAX_HOST_LENGTH, TOKEN_LENGTH, DriverId
from archsearch.storage._records import RESULT_KEYS, to_json


def check_length(value: str | None, limit: int, what: str) -> None:
    """Raise StorageError unless ``value`` is None or text of at most ``limit`` characters."""
    if value is None:
        return
    if not isinstance(value, str):
        raise StorageError(f"{what} must be text; got {type(value).__name__} {value!r:.60}")
    if len(value) > limit:
        raise StorageError(f"{what} is {len(value)} characters long; the limit is {limit}: {value[:60]!r}...")


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``; StorageError otherwise."""
    if value not in choices:
        raise StorageError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def as_integer(value: Any, what: str) -> int:
    """``value`` as an int (Python or numpy integers; not floats, text or bools)."""
    if isinstance(value, bool):
        raise StorageError(f"{what} must be an integer; got {value!r}")
    try:
        return operator.index(value)
    except TypeError as e:
        raise StorageError(f"{what} must be an integer; got {type(value).__name__} {value!r:.60}") from e


def as_counts(count: Mapping[str, int] | None) -> dict[str, int]:
    """Event counter increments as ``{name: integer}`` (empty for None)."""
    if count is None:
        return {}
    if not isinstance(count, Mapping):
        raise StorageError(f"counts must be a mapping of names to integers; got {type(count).__name__}")
    return {str(key): as_integer(value, f"count {key!r}") for key, value in count.items()}


def as_normalizers(normalizers: Mapping[str, float]) -> dict[str, float]:
    """Normalizers as ``{task: float}``: at least one, each positive and finite."""
    try:
        values = {str(k): float(v) for k, v in normalizers.items()}
    except (AttributeError, TypeError, ValueError):
        values = {}
    if not values or not all(math.isfinite(v) and v > 0 for v in values.values()):
        raise StorageError(f"normalizers must be positive finite numbers, got {normalizers!r}")
    return values


def check_driver(driver: DriverId) -> None:
    """A driver identity that fits the lease columns."""
    if not isinstance(driver, DriverId):
        raise StorageError(f"a lease holder must be a DriverId; got {type(driver).__name__}")
    check_length(driver.host, MAX_HOST_LENGTH, "driver host")
    check_length(driver.machine, MAX_HOST_LENGTH, "driver machine")
    check_length(driver.token, TOKEN_LENGTH, "driver token")
    if not driver.token:
        raise StorageError("a driver's token must not be empty")
    as_integer(driver.pid, "driver pid")


@dataclasses.dataclass(frozen=True)
class NewArchitecture:
    """A checked architecture to insert (:meth:`LeaderboardStorage.add_architecture`)."""

    search_id: int
    name: str
    graph_json: str
    structural_hash: str
    fingerprint: str | None
    parent_id: int | None
    mutation_json: str | None
    origin: str
    stage: str


@dataclasses.dataclass(frozen=True)
class TrainerResult:
    """A trainer's result as stored: the column numbers (non-finite ones as None) and the whole record."""

    metric: float | None
    valid: float | None
    test: float | None
    epochs: int | None
    seconds: float | None
    params: int | None
    diverged: bool
    result_json: str

    @classmethod
    def check(cls, evaluation_id: int, result: Mapping[str, Any]) -> "TrainerResult":
        """The stored form of ``result``; StorageError if a key of ``RESULT_KEYS`` is missing or not a number."""
        if not isinstance(result, Mapping):
            raise StorageError(f"result for evaluation {evaluation_id} must be a mapping; got {type(result).__name__}")
        missing = [k for k in RESULT_KEYS if k not in result]
        if missing:
            raise StorageError(f"result for evaluation {evaluation_id} lacks {', '.join(missing)}")
        result_json = to_json(result, "result")
        return cls(
            metric=_number(result["metric"], float, "metric"), valid=_number(result["valid"], float, "valid"),
            test=_number(result["test"], float, "test"), epochs=_number(result["epochs"], int, "epochs"),
            seconds=_number(result["seconds"], float, "seconds"), params=_number(result["params"], int, "params"),
            diverged=bool(result["diverged"]), result_json=result_json,
        )  # fmt: skip


def _number(value: Any, kind: type, what: str) -> Any:
    """``value`` as ``kind`` (float or int); None and non-finite floats become None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise StorageError(f"result field {what!r} must be a number or None; got {value!r}") from e
    return kind(number) if math.isfinite(number) else None
