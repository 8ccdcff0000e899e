"""Run evaluations inside the driver process, on a small thread pool (no Ray needed)."""

from __future__ import annotations

import concurrent.futures as cf
import threading

from archsearch.executors._base import EvalJob, EvalOutcome, Executor, GroupJob
from archsearch.executors._work import limit_threads, run_group_safely, run_job_safely, worker_name


class InProcessExecutor(Executor):
    """``workers`` threads in this process, each running torch on ``torch_threads`` threads (default 1).

    The default never oversubscribes the machine with ``workers`` up to its cores; torch's own
    default (a thread per core in every worker) made a memorization run take 300 s instead of 21 s
    on a shared 2-core machine.
    """

    supports_groups = True

    def __init__(self, workers: int = 1, torch_threads: int = 1):
        if workers < 1 or torch_threads < 1:
            raise ValueError(f"workers and torch_threads must be at least 1, got {workers} and {torch_threads}")
        self._workers = workers
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="archsearch-eval")
        self._futures: dict[cf.Future, list[int]] = {}
        self._running: dict[str, object] = {}
        self._lock = threading.Lock()
        self._threads = torch_threads

    @property
    def slots(self) -> int:
        return self._workers

    def _run(self, job: EvalJob | GroupJob) -> list[EvalOutcome]:
        name = f"{worker_name()}/{threading.current_thread().name}"
        ids = job.evaluation_ids if isinstance(job, GroupJob) else [job.evaluation_id]
        with self._lock:
            self._running[name] = ids[0] if len(ids) == 1 else ids
        try:
            limit_threads(self._threads)
            return run_group_safely(job, name) if isinstance(job, GroupJob) else [run_job_safely(job, name)]
        finally:
            with self._lock:
                self._running.pop(name, None)

    def submit(self, job: EvalJob | GroupJob) -> None:
        ids = job.evaluation_ids if isinstance(job, GroupJob) else [job.evaluation_id]
        self._futures[self._pool.submit(self._run, job)] = ids

    def poll(self, timeout: float) -> list[EvalOutcome]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        outcomes = []
        for fut in done:
            ids = self._futures.pop(fut)
            exc = fut.exception()
            outcomes += fut.result() if exc is None else [EvalOutcome(i, error=repr(exc)) for i in ids]
        return outcomes

    def in_flight(self) -> int:
        return len(self._futures)

    def activity(self) -> dict[str, object]:
        with self._lock:
            return {"workers": self._workers, "running": dict(self._running)}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
