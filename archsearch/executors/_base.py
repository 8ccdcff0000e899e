"""The executor interface: the driver submits plain evaluation jobs and polls for outcomes.

Jobs and outcomes are JSON-able records (no torch objects), so they cross
process and machine boundaries unchanged; only the driver touches the database.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalJob:
    """Everything a worker needs to train one (architecture, task, setting)."""

    evaluation_id: int
    graph_json: str
    task: str
    hparams: dict[str, Any]
    train_config: dict[str, Any]  # TrainConfig fields (scale preset + overrides)
    seed: int
    device: str = "cpu"
    data_dir: str | None = None
    compile_cache_size: int | None = None  # the worker's compiler LRU bound (None: leave it as it is)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroupJob:
    """Settings of one (architecture, task) that share layers and units, trained as one batched model.

    Each result equals what its :class:`EvalJob` gives alone (``archsearch.train.train_batched``).
    """

    jobs: tuple[EvalJob, ...]

    @property
    def evaluation_ids(self) -> list[int]:
        return [j.evaluation_id for j in self.jobs]


@dataclass(frozen=True)
class EvalOutcome:
    """What came back: a result dict (the trainer's record) or an error message."""

    evaluation_id: int
    result: dict[str, Any] | None = None
    error: str | None = None
    worker: str = "local"
    attempts: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None


class Executor(abc.ABC):
    """Runs evaluation jobs somewhere and hands back their outcomes."""

    @property
    @abc.abstractmethod
    def slots(self) -> int:
        """How many jobs it can run at once (the driver keeps this many in flight)."""

    supports_groups: bool = False  # True: submit() also takes a GroupJob and trains it as one batched model

    @abc.abstractmethod
    def submit(self, job: EvalJob | GroupJob) -> None:
        """Start ``job`` (a :class:`GroupJob` only where ``supports_groups``); returns at once."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[EvalOutcome]:
        """Outcomes finished since the last call, waiting up to ``timeout`` seconds for the first."""

    @abc.abstractmethod
    def in_flight(self) -> int:
        """Submissions (jobs or groups: each takes a slot) whose outcomes :meth:`poll` has not returned."""

    def activity(self) -> dict[str, Any]:
        """Per-worker activity for progress displays (optional)."""
        return {}

    def shutdown(self) -> None:
        """Release workers; jobs still running are abandoned (the driver re-queues them on resume)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
