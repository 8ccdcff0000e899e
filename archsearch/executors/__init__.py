"""Where evaluations run: in this process (default) or on Ray workers (``RayExecutor``)."""

from archsearch.executors._base import EvalJob, EvalOutcome, Executor
from archsearch.executors._inprocess import InProcessExecutor
from archsearch.executors._work import run_job, run_job_safely

__all__ = ["EvalJob", "EvalOutcome", "Executor", "InProcessExecutor", "run_job", "run_job_safely"]
