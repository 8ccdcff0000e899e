"""The worker side: turn an :class:`EvalJob` into a trainer result (runs in any process)."""

from __future__ import annotations

import os
import socket
import traceback

from archsearch.executors._base import EvalJob, EvalOutcome


def run_job(job: EvalJob) -> dict:
    """Train the job's cell and return the result dict (raises on errors)."""
    from archsearch.ir import Cell
    from archsearch.tasks import get_task
    from archsearch.train import HyperParams, TrainConfig, train

    cell = Cell.from_json(job.graph_json)
    task = get_task(job.task, job.data_dir)
    config = TrainConfig(**job.train_config)
    result = train(cell, task, HyperParams.from_dict(job.hparams), config, seed=job.seed, device=job.device)
    return result.to_dict()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job_safely(job: EvalJob, worker: str | None = None) -> EvalOutcome:
    """Like :func:`run_job`, but a failure becomes an outcome carrying its error text."""
    worker = worker or worker_name()
    try:
        return EvalOutcome(job.evaluation_id, result=run_job(job), worker=worker)
    except Exception as e:  # noqa: BLE001 - any failure of one evaluation is recorded, never fatal
        tail = "".join(traceback.format_exception_only(type(e), e)).strip()
        where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        loc = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
        return EvalOutcome(job.evaluation_id, error=f"{tail}{loc}", worker=worker)
