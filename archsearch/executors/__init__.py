"""Where evaluations run: in this process (default) or on Ray workers (``RayExecutor``)."""

from typing import TYPE_CHECKING, Any

from archsearch.executors._base import EvalJob, EvalOutcome, Executor, GroupJob
from archsearch.executors._inprocess import InProcessExecutor
from archsearch.executors._work import run_group_safely, run_job, run_job_safely

if TYPE_CHECKING:
    from archsearch.executors._ray import RayExecutor

__all__ = [
    "EvalJob",
    "EvalOutcome",
    "Executor",
    "GroupJob",
    "InProcessExecutor",
    "RayExecutor",
    "run_group_safely",
    "run_job",
    "run_job_safely",
]


def __getattr__(name: str) -> Any:
    # Ray is heavy and optional: import it only when RayExecutor is asked for (importing starts no Ray).
    if name == "RayExecutor":
        from archsearch.executors._ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
