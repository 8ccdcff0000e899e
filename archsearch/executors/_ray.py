"""Run evaluations as Ray tasks, on a local Ray or on a cluster (``archsearch search --ray``).

One submission is one Ray task (``num_cpus``/``num_gpus`` per task; a fractional
``num_gpus`` lets several small models share a GPU): an :class:`EvalJob`, or a
:class:`GroupJob` whose settings train as one batched model in that task (a group
of K takes one slot and one task's resources, not K). The driver keeps ``slots``
tasks in flight and collects them with ``ray.wait``; only the driver writes the
database, workers just return lists of :class:`EvalOutcome` records.

Fault tolerance: a task whose worker process or node dies is re-run by Ray up to
``max_retries`` times (a group re-runs whole); when the retries are used up,
:meth:`RayExecutor.poll` returns a failed outcome carrying Ray's error for every
evaluation of the task, so no evaluation is ever lost. Errors inside training
never reach Ray: :func:`run_job_safely` and :func:`run_group_safely` turn them into
failed outcomes on the worker (they are not retried; the same job would fail again).

Data: workers load tasks by name and ``data_dir``, a path that should exist on
every node (``/data/ptb`` in ``cluster/``). In addition, the driver ships the
files of ``data_dir`` once per run with ``ray.put`` (when they are small, see
``ship_limit``); a worker whose node lacks the path materialises that copy in its
temp folder (once per node) and reads it from there. The tasks read their files
lazily and cache the parsed corpus per process, so keeping "a path" as the
interface leaves the tasks package untouched and still reads each file once per
worker process (Ray reuses worker processes across evaluations).

Activity: a small tracker actor on the driver's node hears from every task as it
starts (node, worker process, attempt number), which gives the progress view
per-node activity and retry counts while evaluations are still running.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import ray

from archsearch.executors._base import EvalJob, EvalOutcome, Executor, GroupJob
from archsearch.executors._work import limit_threads, run_group_safely, run_job_safely

log = logging.getLogger(__name__)

DEFAULT_SHIP_LIMIT = 256 * 2**20  # bytes: larger data folders are not shipped (every node needs the path)
_TRACKER_TIMEOUT = 5.0  # seconds to wait for the tracker actor before carrying on without it
_SLOTS_REFRESH = 10.0  # seconds between re-reads of the cluster size when slots follow the cluster
_ERROR_CHARS = 2000

JobFn = Callable[[EvalJob, str], EvalOutcome]
Work = EvalJob | GroupJob


def _jobs(work: Work) -> tuple[EvalJob, ...]:
    return work.jobs if isinstance(work, GroupJob) else (work,)


# ====================================================================== worker side
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class _Tracker:
    """Started/finished bookkeeping of one executor's tasks (lives on the driver's node)."""

    def __init__(self) -> None:
        self.running: dict[int, dict[str, Any]] = {}  # evaluation id -> where it runs now
        self.starts: Counter[int] = Counter()

    def started(self, eval_ids: list[int], node_ip: str, node_id: str, worker: str) -> int:
        """Note that one task (a job or a group) started ``eval_ids``; returns its attempt number."""
        for i in eval_ids:
            self.starts[i] += 1
            self.running[i] = {"node": node_ip, "node_id": node_id, "worker": worker, "since": time.time(),
                               "attempt": self.starts[i]}
        return max(self.starts[i] for i in eval_ids)

    def finished(self, eval_ids: list[int]) -> dict[int, int]:
        """Forget ``eval_ids``; returns how many times each was started."""
        out = {}
        for i in eval_ids:
            self.running.pop(i, None)
            out[i] = self.starts.pop(i, 0)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"running": dict(self.running), "starts": dict(self.starts)}


def _node_data_dir(data_dir: str, shipped: tuple[str, tuple[str, ...], Any]) -> str:
    """``data_dir`` if this node has its files, else a node-local copy of the driver's files."""
    digest, names, ref_box = shipped
    if all((Path(data_dir) / n).is_file() for n in names):
        return data_dir
    target = Path(tempfile.gettempdir()) / "archsearch-data" / digest
    if not target.is_dir():
        files: dict[str, bytes] = ray.get(ref_box[0])
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
        for name, data in files.items():
            (staging / name).write_bytes(data)
        try:
            os.rename(staging, target)  # atomic: concurrent workers on a node never see half a folder
        except OSError:  # another worker on this node won the race
            for p in staging.iterdir():
                p.unlink()
            staging.rmdir()
    return str(target)


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where a task runs, and which attempt of it this is."""

    node_ip: str
    node_id: str
    worker: str  # "ip:pid"
    attempt: int


def _preamble(jobs: tuple[EvalJob, ...], tracker: Any, shipped: tuple | None, torch_threads: int | None
              ) -> tuple[_Where, tuple[EvalJob, ...]]:
    """Start of every task: announce its evaluations to the tracker; unless ``torch_threads`` is
    ``None`` (an injected ``job_fn``), also set torch's threads and point the jobs at node-local data."""
    node_ip = ray.util.get_node_ip_address()
    node_id = ray.get_runtime_context().get_node_id()
    worker = f"{node_ip}:{os.getpid()}"
    attempt = 1
    if tracker is not None:
        try:
            attempt = ray.get(tracker.started.remote([j.evaluation_id for j in jobs], node_ip, node_id, worker),
                              timeout=_TRACKER_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - the tracker only feeds the progress view
            log.debug("tracker unavailable: %s", e)
    if torch_threads is not None:
        limit_threads(torch_threads)
        jobs = tuple(_with_node_data(j, shipped) for j in jobs)
    return _Where(node_ip, node_id, worker, attempt), jobs


def _with_node_data(job: EvalJob, shipped: tuple | None) -> EvalJob:
    """``job`` reading the node-local copy of its shipped data when this node lacks ``data_dir``."""
    if shipped is None or job.data_dir is None:
        return job
    try:
        return dataclasses.replace(job, data_dir=_node_data_dir(job.data_dir, shipped))
    except Exception as e:  # noqa: BLE001 - fall back to the path; the task reports what is missing
        log.warning("could not materialise shipped data for %s: %s", job.data_dir, e)
        return job


def _evaluate(work: Work, tracker: Any, shipped: tuple | None, torch_threads: int,
              job_fn: JobFn | None) -> list[EvalOutcome]:
    """The Ray task: announce the start, train (errors become failed outcomes), return one outcome
    per evaluation. A group trains batched with :func:`run_group_safely`; with ``job_fn``, each of
    its jobs goes through ``job_fn`` in turn instead (no batching, no threads or data set up)."""
    where, jobs = _preamble(_jobs(work), tracker, shipped, None if job_fn is not None else torch_threads)
    if job_fn is not None:
        outcomes = [job_fn(j, where.worker) for j in jobs]
    elif isinstance(work, GroupJob):
        outcomes = run_group_safely(GroupJob(jobs), where.worker)
    else:
        outcomes = [run_job_safely(jobs[0], where.worker)]
    return [dataclasses.replace(o, worker=where.worker, attempts=where.attempt,
                                meta={**o.meta, "node": where.node_ip, "node_id": where.node_id})
            for o in outcomes]


# ====================================================================== driver side
class RayExecutor(Executor):
    """Evaluations as Ray tasks; ``slots`` of them in flight. A :class:`GroupJob` is one task
    (one slot, one task's ``num_cpus``/``num_gpus``) that trains its settings as one batched model.

    Args:
        address: ``None`` starts a local Ray (stopped again by :meth:`shutdown`); ``"auto"`` or
            ``"ray://host:10001"`` joins a running cluster (left running). If Ray is already
            initialised in this process, that connection is used and left alone.
        slots: tasks (jobs or groups) in flight; ``None`` follows the cluster: the CPUs (and GPUs)
            it has divided by the per-task resources, re-read every few seconds as nodes come and go.
        num_cpus: CPUs per task (also torch's thread count in the worker, at least 1).
        num_gpus: GPUs per task; fractions such as 0.25 put several tasks on one GPU.
        max_retries: times Ray re-runs a task whose worker process or node died.
        init_kwargs: extra ``ray.init`` arguments (e.g. ``num_cpus`` for a local Ray).
        ship_data: ship ``data_dir``'s files once with ``ray.put`` for nodes that lack the path.
        ship_limit: largest data folder (bytes) that is shipped.
        job_fn: run this ``(job, worker) -> EvalOutcome`` instead of training (tests, benchmarks);
            a group calls it for each of its jobs in turn, in one task.

    Raises:
        ValueError: invalid resources or slots.
    """

    supports_groups = True

    def __init__(
        self,
        address: str | None = None,
        slots: int | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 3,
        *,
        init_kwargs: dict[str, Any] | None = None,
        ship_data: bool = True,
        ship_limit: int = DEFAULT_SHIP_LIMIT,
        job_fn: JobFn | None = None,
    ):
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if num_cpus < 0 or num_gpus < 0 or (num_cpus == 0 and num_gpus == 0):
            raise ValueError(f"an evaluation needs CPUs or GPUs, got num_cpus={num_cpus}, num_gpus={num_gpus}")
        if num_gpus > 1 and num_gpus != int(num_gpus):
            raise ValueError(f"num_gpus above 1 must be a whole number, got {num_gpus}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            kwargs = {"include_dashboard": False, **(init_kwargs or {})}
            if address is not None:
                kwargs = {k: v for k, v in kwargs.items() if k not in ("num_cpus", "num_gpus", "include_dashboard")}
            ray.init(address=address, **kwargs)
        self.address = address
        self.num_cpus, self.num_gpus, self.max_retries = num_cpus, num_gpus, max_retries
        self._fixed_slots = slots
        self._slots_cache: tuple[float, int] = (-math.inf, 1)
        self._ship_data, self._ship_limit = ship_data, ship_limit
        self._shipped: dict[str, tuple | None] = {}
        self._job_fn = job_fn
        self._remote = ray.remote(_evaluate).options(
            name="archsearch-eval", num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
            retry_exceptions=False,  # only worker/node death is retried; training errors are outcomes
        )
        self._refs: dict[Any, list[int]] = {}  # ObjectRef -> evaluation ids of its job or group
        self._retries = 0  # extra attempts of finished evaluations (worker or node deaths)
        self._lost = 0  # evaluations whose retries ran out
        self._tracker = self._start_tracker()
        log.info("Ray executor: %s, %s CPU / %s GPU per task, %d slots, max_retries %d",
                 "local Ray" if address is None else address, num_cpus, num_gpus, self.slots, max_retries)

    def _start_tracker(self):
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # Pinned (not soft) to the driver's node: a soft hint may land it on a worker that dies, losing the counts.
            here = ray.get_runtime_context().get_node_id()
            return _Tracker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        except Exception as e:  # noqa: BLE001 - progress detail only
            log.warning("no activity tracker (%s); progress shows in-flight evaluations only", e)
            return None

    # ------------------------------------------------------------------ sizing
    @property
    def slots(self) -> int:
        if self._fixed_slots is not None:
            return self._fixed_slots
        checked, cached = self._slots_cache
        if time.monotonic() - checked >= _SLOTS_REFRESH:
            cached = self.cluster_slots(ray.cluster_resources(), self.num_cpus, self.num_gpus)
            self._slots_cache = (time.monotonic(), cached)
        return cached

    @staticmethod
    def cluster_slots(resources: dict[str, float], num_cpus: float, num_gpus: float) -> int:
        """Tasks that fit at once in ``resources`` (at least 1, so a scaling-up cluster gets demand)."""
        fits = []
        if num_cpus > 0:
            fits.append(int(resources.get("CPU", 0) / num_cpus + 1e-9))
        if num_gpus > 0:
            fits.append(int(resources.get("GPU", 0) / num_gpus + 1e-9))
        return max(1, min(fits))

    # ------------------------------------------------------------------ data
    def _shipment(self, data_dir: str | None) -> tuple | None:
        """(digest, file names, [ref]) of ``data_dir``'s files, put in the object store once."""
        if data_dir is None or not self._ship_data:
            return None
        if data_dir not in self._shipped:
            self._shipped[data_dir] = None
            folder = Path(data_dir)
            files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            size = sum(p.stat().st_size for p in files)
            if files and size <= self._ship_limit:
                blobs = {p.name: p.read_bytes() for p in files}
                digest = hashlib.sha256()
                for name, data in blobs.items():
                    digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
                # The ref sits in a list so that Ray does not fetch it for workers that have the path.
                self._shipped[data_dir] = (digest.hexdigest()[:16], tuple(blobs), [ray.put(blobs)])
                log.info("shipped %d files (%.1f MB) of %s to the object store", len(blobs), size / 2**20, data_dir)
            elif files:
                log.info("%s holds %.0f MB (> ship_limit): workers read it from the path", data_dir, size / 2**20)
        return self._shipped[data_dir]

    # ------------------------------------------------------------------ executor interface
    def submit(self, job: EvalJob | GroupJob) -> None:
        """Start ``job`` (one evaluation, or a group trained batched) as one Ray task."""
        jobs = _jobs(job)
        threads = max(1, int(round(self.num_cpus)))
        ref = self._remote.remote(job, self._tracker, self._shipment(jobs[0].data_dir), threads, self._job_fn)
        self._refs[ref] = [j.evaluation_id for j in jobs]

    def poll(self, timeout: float) -> list[EvalOutcome]:
        if not self._refs:
            return []
        refs = list(self._refs)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ids = {ref: self._refs.pop(ref) for ref in ready}
        starts = self._finished([i for ref in ready for i in ids[ref]])
        outcomes = []
        for ref in ready:
            try:
                got = ray.get(ref)
            except ray.exceptions.RayError as e:  # worker/node died more than max_retries times, or cancelled
                outcomes += self._lost_outcomes(ids[ref], starts, e)
                continue
            outcomes += self._completed(ids[ref], got, starts)
        return outcomes

    def _lost_outcomes(self, eval_ids: list[int], starts: dict[int, int], error: Exception) -> list[EvalOutcome]:
        """One failed outcome per evaluation of a task whose retries ran out."""
        attempts = max([starts.get(i, 0) for i in eval_ids] + [1])
        self._lost += len(eval_ids)
        self._retries += (attempts - 1) * len(eval_ids)
        text = f"{type(error).__name__} after {attempts} attempt(s) (max_retries={self.max_retries}): {error}"
        log.warning("evaluation(s) %s lost on Ray: %s", eval_ids, text.splitlines()[0])
        return [EvalOutcome(i, error=text[:_ERROR_CHARS], worker="ray", attempts=attempts, meta={"lost": True})
                for i in eval_ids]

    def _completed(self, eval_ids: list[int], outcomes: list[EvalOutcome], starts: dict[int, int]) -> list[EvalOutcome]:
        """A task's outcomes: one per id of ``eval_ids`` (the first one the task returned for it; an id it left
        out becomes a failed outcome), counting retries.

        The attempt count is the larger of the worker's and the tracker's: a worker that could not
        reach the tracker in time (a loaded node) reports attempt 1, yet its start was recorded.
        """
        given: dict[int, EvalOutcome] = {}
        for o in outcomes:
            if o.evaluation_id in eval_ids and o.evaluation_id not in given:
                given[o.evaluation_id] = o
        result = []
        for i in eval_ids:
            o = given.get(i) or EvalOutcome(i, error="the Ray task returned no outcome for it", worker="ray")
            o = dataclasses.replace(o, attempts=max(o.attempts, starts.get(i, 0)))
            if o.attempts > 1:
                self._retries += o.attempts - 1
                log.info("evaluation %d finished on attempt %d (%s)", i, o.attempts, o.worker)
            result.append(o)
        return result

    def _finished(self, eval_ids: list[int]) -> dict[int, int]:
        if self._tracker is None:
            return {}
        try:
            return ray.get(self._tracker.finished.remote(eval_ids), timeout=_TRACKER_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            log.debug("tracker unavailable: %s", e)
            return {}

    def in_flight(self) -> int:
        return len(self._refs)

    def activity(self) -> dict[str, Any]:
        """Per-node and per-worker activity for the progress view.

        Keys: ``workers`` (slots), ``running`` (worker ``ip:pid`` -> evaluation id, or the list
        of ids of the group it trains; ``"pending"`` -> ids not started yet), ``nodes`` (node ->
        alive, resources, evaluation ids running there), ``retries`` (extra attempts after
        worker/node deaths, finished and running, counted per evaluation: a group re-run once adds
        its size), ``retrying`` (evaluation id -> attempt, for those on a second or later attempt),
        ``lost`` (evaluations whose retries ran out).
        """
        snap: dict[str, Any] = {"running": {}, "starts": {}}
        if self._tracker is not None:
            try:
                snap = ray.get(self._tracker.snapshot.remote(), timeout=_TRACKER_TIMEOUT)
            except Exception as e:  # noqa: BLE001
                log.debug("tracker unavailable: %s", e)
        mine = {i for ids in self._refs.values() for i in ids}
        running = {i: r for i, r in snap["running"].items() if i in mine}
        nodes: dict[str, dict[str, Any]] = {}
        try:
            for n in ray.nodes():
                key = f"{n['NodeManagerAddress']}/{n['NodeID'][:8]}"
                res = n.get("Resources", {})
                nodes[key] = {"alive": n["Alive"], "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0), "running": []}
        except Exception as e:  # noqa: BLE001
            log.debug("ray.nodes() failed: %s", e)
        by_worker: dict[str, Any] = {}
        retrying = {}
        for eval_id, r in sorted(running.items()):
            by_worker.setdefault(r["worker"], []).append(eval_id)
            key = f"{r['node']}/{r['node_id'][:8]}"
            nodes.setdefault(key, {"alive": None, "cpus": 0, "gpus": 0, "running": []})["running"].append(eval_id)
            if r["attempt"] > 1:
                retrying[eval_id] = r["attempt"]
        by_worker = {w: ids[0] if len(ids) == 1 else ids for w, ids in by_worker.items()}
        pending = sorted(mine - set(running))
        if pending:
            by_worker["pending"] = pending
        return {
            "workers": self.slots, "running": by_worker, "nodes": nodes,
            "retries": self._retries + sum(a - 1 for a in retrying.values()), "retrying": retrying,
            "lost": self._lost, "resources": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }

    def shutdown(self) -> None:
        """Cancel what is still running, and stop Ray only if this executor started it."""
        if not ray.is_initialized():
            return
        for ref in list(self._refs):
            try:
                ray.cancel(ref, force=True)
            except Exception as e:  # noqa: BLE001 - best effort; the driver re-queues on resume
                log.debug("cancel failed: %s", e)
        self._refs.clear()
        if self._tracker is not None:
            try:
                ray.kill(self._tracker)
            except Exception:  # noqa: BLE001
                pass
            self._tracker = None
        if self._owns_connection:
            # For address=None this stops the local Ray; for a cluster address it only disconnects.
            ray.shutdown()
