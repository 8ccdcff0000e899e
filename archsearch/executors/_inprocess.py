"""Run evaluations inside the driver process, on a small thread pool (no Ray needed)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading

from archsearch.executors._base import EvalJob, EvalOutcome, Executor
from archsearch.executors._work import run_job_safely, worker_name


class InProcessExecutor(Executor):
    """``workers`` threads in this process; torch's intra-op threads are divided among them."""

    def __init__(self, workers: int = 1, torch_threads: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._workers = workers
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="archsearch-eval")
        self._futures: dict[cf.Future, int] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()
        threads = torch_threads or max(1, (os.cpu_count() or 1) // workers)
        import torch

        torch.set_num_threads(threads)

    @property
    def slots(self) -> int:
        return self._workers

    def _run(self, job: EvalJob) -> EvalOutcome:
        name = f"{worker_name()}/{threading.current_thread().name}"
        with self._lock:
            self._running[name] = job.evaluation_id
        try:
            return run_job_safely(job, name)
        finally:
            with self._lock:
                self._running.pop(name, None)

    def submit(self, job: EvalJob) -> None:
        self._futures[self._pool.submit(self._run, job)] = job.evaluation_id

    def poll(self, timeout: float) -> list[EvalOutcome]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        outcomes = []
        for fut in done:
            eval_id = self._futures.pop(fut)
            exc = fut.exception()
            outcomes.append(fut.result() if exc is None else EvalOutcome(eval_id, error=repr(exc)))
        return outcomes

    def in_flight(self) -> int:
        return len(self._futures)

    def activity(self) -> dict[str, object]:
        with self._lock:
            return {"workers": self._workers, "running": dict(self._running)}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
