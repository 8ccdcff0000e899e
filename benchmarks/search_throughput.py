#!/usr/bin/env python3
"""Search throughput: in-process vs Ray executors, and the driver's own cost per evaluation.

Three measurements, printed as tables:

1. **Evaluations per minute** of one fixed search workload (the quick preset's tasks and
   procedure, with trainings shortened to a second or two so the run takes minutes on a
   2-core machine; ``--scale quick`` uses the real quick preset) with the in-process
   executor and with Ray at 1 and 2 workers. Ray's start-up is reported separately.
2. **Driver overhead per evaluation**, measured directly: the driver runs against an
   executor whose jobs finish instantly with canned results (real result dicts from part 1,
   metrics jittered so filters and gates still make decisions), so all wall time is driver
   time: DB writes, scheduling, mutation, settings, stage logic. The time inside ``_fill``,
   ``_record``, ``_advance``, ``_step`` and ``progress`` is also broken down, and the cost is
   shown for the first and last quarter of the run (the database grows).
   The same is done through a real ``RayExecutor`` (instant jobs on Ray workers) to include
   Ray's submit/wait/get and the tracker round trip.
3. **How many workers one driver keeps busy**: with driver cost ``o`` per evaluation and
   worker time ``T`` per evaluation, N workers occupy the driver ``N·o/T`` of the time and
   each evaluation waits about ``o`` for the driver, i.e. ``o/T`` of worker time. The table
   gives ``o/T`` at 64 workers for several evaluation lengths and the shortest evaluation for
   which the target (driver overhead < 2% of worker time at 64 workers) holds.

Run: ``python benchmarks/search_throughput.py`` (about 10 minutes on a loaded 2-core box);
``--help`` for options. Numbers go to README.md ("Distributed search (Ray)") and
cluster/README.md ("Throughput and cost").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from archsearch.executors import EvalJob, EvalOutcome, Executor, InProcessExecutor
from archsearch.search import SearchDriver, preset
from archsearch.storage import open_storage

# ----------------------------------------------------------------------------- config
P = 20 * 35  # one batch of 20 sequences x 35 steps
SHORT = dict(epoch_positions=10 * P, corpus_positions=10 * P, valid_positions=2 * P, test_positions=2 * P,
             eval_corpus_positions=2 * P, max_epochs=3, patience=1, decay_epochs=1, param_scale=0.01,
             music_max_epochs=3)  # ~1-3 s per training on one core: many evaluations in a few minutes


def workload(scale: str, name: str):
    base = preset("quick")
    if scale == "quick":
        return base.with_overrides(name=name)
    # the quick procedure (tasks, filter, gates, 3 settings per task) with short trainings
    return base.with_overrides(name=name, train_overrides=SHORT, filter_overrides=SHORT, filter_threshold=0.0)


# ----------------------------------------------------------------------------- instant executors
class _Canned:
    """Real result dicts per task; each instant job gets one with a jittered metric."""

    def __init__(self, results: dict[str, list[dict]], seed: int = 0):
        self.results = results
        self.all = [r for rs in results.values() for r in rs]
        self.seed = seed

    def outcome(self, job: EvalJob, worker: str) -> EvalOutcome:
        rng = np.random.default_rng([self.seed, job.evaluation_id])
        pool = self.results.get(job.task) or self.all
        result = dict(pool[int(rng.integers(len(pool)))])
        result["metric"] = float(result["metric"]) * float(rng.uniform(0.7, 1.3))
        return EvalOutcome(job.evaluation_id, result=result, worker=worker)


class InstantExecutor(Executor):
    """Finishes every job at once with a canned result: what is left is the driver's time."""

    def __init__(self, canned: _Canned, slots: int = 64):
        self.canned, self._slots, self._done = canned, slots, []

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, job: EvalJob) -> None:
        self._done.append(self.canned.outcome(job, "instant"))

    def poll(self, timeout: float) -> list[EvalOutcome]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)


def _timed(driver: SearchDriver, names: tuple[str, ...]) -> dict[str, list[float]]:
    """Wrap driver methods to collect their inclusive wall times (nested calls counted in each)."""
    times: dict[str, list[float]] = defaultdict(list)
    for name in names:
        method = getattr(driver, name)

        def wrapper(*args, _m=method, _n=name, **kwargs):
            t = time.perf_counter()
            try:
                return _m(*args, **kwargs)
            finally:
                times[_n].append(time.perf_counter() - t)

        setattr(driver, name, wrapper)
    return times


# ----------------------------------------------------------------------------- measurements
def run_search(executor_factory, config, db: Path, n: int) -> dict:
    t0 = time.perf_counter()
    executor = executor_factory()
    startup = time.perf_counter() - t0
    storage = open_storage(f"sqlite:///{db}")
    with executor:
        t = time.perf_counter()
        final = SearchDriver(storage, config, executor, max_evaluations=n).run()
        wall = time.perf_counter() - t
    evals = [e for e in storage.evaluations(search_id=storage.get_search(config.name).id) if e.status == "done"]
    seconds = [e.seconds for e in evals if e.seconds is not None]
    return {"done": final.done, "failed": final.failed, "wall": wall, "startup": startup,
            "per_minute": 60 * (final.done + final.failed) / wall, "worker_mean": statistics.mean(seconds),
            "results": [(e.task, e.result) for e in evals]}


def driver_overhead(executor, config, db: Path, n: int) -> dict:
    storage = open_storage(f"sqlite:///{db}")
    driver = SearchDriver(storage, config, executor, max_evaluations=n)
    parts = _timed(driver, ("_fill", "_record", "_advance", "_step", "progress"))
    record_end: list[float] = []
    record = driver._record

    def stamped(outcome):
        record(outcome)
        record_end.append(time.perf_counter())

    driver._record = stamped
    with executor:
        t, cpu = time.perf_counter(), time.process_time()
        final = driver.run()
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        driver.progress()  # one progress snapshot, as the live view takes every 2 s
    done = final.done + final.failed
    q = max(1, len(record_end) // 4)
    starts = [t] + record_end
    first = (starts[q] - starts[0]) / q
    last = (starts[-1] - starts[-1 - q]) / q
    return {"evaluations": done, "wall": wall, "per_eval": wall / done, "cpu_per_eval": cpu / done,
            "first_quarter": first,
            "last_quarter": last, "parts": {k: sum(v) / done for k, v in parts.items()},
            "architectures": len(storage.list_architectures(driver.search.id))}


def ray_factory(workers: int, **kwargs):
    def make():
        from archsearch.executors import RayExecutor

        return RayExecutor(slots=workers, num_cpus=1, init_kwargs={"num_cpus": workers}, **kwargs)

    return make


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluations", type=int, default=24, help="evaluations per throughput run (default 24)")
    ap.add_argument("--overhead-evaluations", type=int, default=1000,
                    help="evaluations of the instant-job driver run (default 1000)")
    ap.add_argument("--ray-overhead-evaluations", type=int, default=200,
                    help="instant jobs through a real RayExecutor (default 200; 0 skips)")
    ap.add_argument("--scale", choices=["short", "quick"], default="short",
                    help="short: the quick procedure with ~2 s trainings (default); quick: the real quick preset")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    ap.add_argument("--json", metavar="FILE", help="also write all numbers as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="archsearch-throughput-"))
    n = args.evaluations
    print(f"# search throughput: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"workload {args.scale!r}, {n} evaluations per run", flush=True)

    # ---- 1. evaluations per minute
    runs: dict[str, dict] = {}
    plans = [("in-process, 1 worker", lambda: InProcessExecutor(1, torch_threads=1)),
             ("in-process, 2 workers", lambda: InProcessExecutor(2, torch_threads=1))]
    if not args.no_ray:
        plans += [("Ray, 1 worker", ray_factory(1)), ("Ray, 2 workers", ray_factory(2))]
    for i, (label, factory) in enumerate(plans):
        runs[label] = run_search(factory, workload(args.scale, "bench"), workdir / f"run{i}.db", n)
        r = runs[label]
        print(f"  {label:<22} {r['per_minute']:6.1f} evals/min  ({r['done']} done, {r['failed']} failed, "
              f"{r['wall']:.0f} s, start-up {r['startup']:.1f} s, mean training {r['worker_mean']:.2f} s)", flush=True)

    # ---- 2. driver overhead with instant jobs
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in runs.values():
        for task, result in r["results"]:
            by_task[task].append(result)
    canned = _Canned(dict(by_task))
    config = workload(args.scale, "overhead")
    over = driver_overhead(InstantExecutor(canned, slots=64), config, workdir / "overhead.db", args.overhead_evaluations)
    over_ray = None
    if not args.no_ray and args.ray_overhead_evaluations:
        over_ray = driver_overhead(ray_factory(2, job_fn=canned.outcome)(), config, workdir / "overhead-ray.db",
                                   args.ray_overhead_evaluations)

    # ---- tables
    print("\n| Executor | Workers | Evaluations/min | Wall (s) | Mean training (s) | Ray start-up (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r in runs.items():
        kind, workers = label.split(", ")
        startup = f"{r['startup']:.1f}" if kind == "Ray" else "-"
        print(f"| {kind} | {workers.split()[0]} | {r['per_minute']:.1f} | {r['wall']:.0f} | {r['worker_mean']:.2f} | {startup} |")

    print("\n| Driver cost per evaluation (ms) | Instant executor | Ray executor, instant jobs |")
    print("| --- | --- | --- |")
    rows = [("driver process CPU time / evaluations", "cpu_per_eval"), ("wall time / evaluations", "per_eval"),
            ("wall, first quarter of the run", "first_quarter"), ("wall, last quarter of the run", "last_quarter")]
    for text, key in rows:
        ray_cell = f"{1000 * over_ray[key]:.1f}" if over_ray else "-"
        print(f"| {text} | {1000 * over[key]:.1f} | {ray_cell} |")
    for part in ("_fill", "_step", "_record", "_advance", "progress"):
        ray_cell = f"{1000 * over_ray['parts'].get(part, 0):.2f}" if over_ray else "-"
        print(f"| inside `{part}` (inclusive) | {1000 * over['parts'].get(part, 0):.2f} | {ray_cell} |")
    print(f"\n({over['evaluations']} instant evaluations, {over['architectures']} architectures in the database"
          + (f"; Ray: {over_ray['evaluations']} evaluations" if over_ray else "") + ")")

    print("(Ray wall times with instant jobs are task round trips on 2 slots, latency rather than driver work;"
          " with many workers they overlap. Driver work is the CPU time of the driver process.)")
    o = max(over["per_eval"], over["last_quarter"], over_ray["cpu_per_eval"] if over_ray else 0.0)
    print(f"\nWorkers one driver keeps busy (driver cost o = {1000 * o:.1f} ms per evaluation: the largest of the"
          " instant run's wall per evaluation, its last quarter, and the Ray run's driver CPU per evaluation):")
    print("\n| Training time per evaluation | o / T (wait per evaluation) | Driver busy at 64 workers | Max workers (driver 100% busy) | Target met at 64 |")
    print("| --- | --- | --- | --- | --- |")
    measured_t = statistics.mean(r["worker_mean"] for r in runs.values())
    for label, t in [(f"{measured_t:.1f} s (this benchmark)", measured_t), ("10 s", 10.0), ("1 min", 60.0),
                     ("10 min", 600.0), ("1 h", 3600.0)]:
        busy = 64 * o / t
        ok = o / t < 0.02 and busy < 1.0
        print(f"| {label} | {100 * o / t:.2f}% | {100 * busy:.0f}% | {t / o:,.0f} | {'yes' if ok else 'no'} |")
    t_min = max(50 * o, 64 * o)
    print(f"\nShortest evaluation for the target at 64 workers: {t_min:.1f} s "
          f"(o/T < 2% needs T > {50 * o:.1f} s; driver not saturated needs T > {64 * o:.1f} s)")

    if args.json:
        out = {"runs": {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in runs.items()},
               "overhead": over, "overhead_ray": over_ray, "o": o}
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
