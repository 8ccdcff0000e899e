"""The worker side: turn an :class:`EvalJob` into a trainer result (runs in any process)."""

from __future__ import annotations

import logging
import os
import socket
import traceback

from archsearch.executors._base import EvalJob, EvalOutcome, GroupJob

log = logging.getLogger(__name__)


def limit_threads(threads: int) -> None:
    """Run torch in this worker on exactly ``threads`` CPU threads (intra-op; inter-op too while torch allows it).

    Every worker sets this at the start of each job: torch's count is per process, so a worker that
    trusted its default (one thread per core) would share the cores with every other worker and job.
    """
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # only possible before the process's first inter-op work (nothing here uses it)
            pass


def _observed(results: list[dict]) -> list[dict]:
    """Results with the torch threads the worker trained on (stored with each evaluation)."""
    import torch

    return [{**r, "torch_threads": torch.get_num_threads()} for r in results]


def run_job(job: EvalJob) -> dict:
    """Train the job's cell and return the result dict (raises on errors)."""
    from archsearch.compiler import set_cache_size
    from archsearch.ir import Cell
    from archsearch.tasks import get_task
    from archsearch.train import HyperParams, TrainConfig, train

    if job.compile_cache_size is not None:
        set_cache_size(job.compile_cache_size)
    cell = Cell.from_json(job.graph_json)
    task = get_task(job.task, job.data_dir)
    config = TrainConfig(**job.train_config)
    result = train(cell, task, HyperParams.from_dict(job.hparams), config, seed=job.seed, device=job.device)
    return _observed([result.to_dict()])[0]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _error_text(e: BaseException) -> str:
    tail = "".join(traceback.format_exception_only(type(e), e)).strip()
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    return tail + (f" (at {where[0].filename}:{where[0].lineno})" if where else "")


def run_job_safely(job: EvalJob, worker: str | None = None) -> EvalOutcome:
    """Like :func:`run_job`, but a failure becomes an outcome carrying its error text."""
    worker = worker or worker_name()
    try:
        return EvalOutcome(job.evaluation_id, result=run_job(job), worker=worker)
    except Exception as e:  # noqa: BLE001 - any failure of one evaluation is recorded, never fatal
        return EvalOutcome(job.evaluation_id, error=_error_text(e), worker=worker)


def run_group(group: GroupJob) -> list[dict]:
    """Train a group's settings as one batched model; one result dict per job, in order."""
    from archsearch.compiler import set_cache_size
    from archsearch.ir import Cell
    from archsearch.tasks import get_task
    from archsearch.train import HyperParams, TrainConfig, train_batched

    first = group.jobs[0]
    if first.compile_cache_size is not None:
        set_cache_size(first.compile_cache_size)
    results = train_batched(
        Cell.from_json(first.graph_json), get_task(first.task, first.data_dir),
        [HyperParams.from_dict(j.hparams) for j in group.jobs], TrainConfig(**first.train_config),
        seeds=[j.seed for j in group.jobs], device=first.device,
    )
    return _observed([{**r.to_dict(), "batched": len(group.jobs)} for r in results])


def run_group_safely(group: GroupJob, worker: str | None = None) -> list[EvalOutcome]:
    """Outcomes of a group; if batched training itself fails, each job is trained alone instead."""
    worker = worker or worker_name()
    try:
        results = run_group(group)
    except Exception as e:  # noqa: BLE001 - fall back to one run per setting, each recorded on its own
        log.warning("batched training of %d settings failed (%s); training them one by one", len(group.jobs), e)
        return [run_job_safely(j, worker) for j in group.jobs]
    return [EvalOutcome(j.evaluation_id, result=r, worker=worker) for j, r in zip(group.jobs, results)]
