#!/usr/bin/env python3
"""Soak: the driver's memory (RSS) against evaluations over a long in-process search.

Runs the quick preset (tiny scale; with ``--short``, the quick procedure with the ~2 s trainings of
``search_throughput.py``, so that many architectures pass in a short soak) in this process with the
in-process executor, samples the
process's resident set size after every finished evaluation, and writes JSON (samples and a
summary). After the warm-up (the first ``--warmup`` fraction of the evaluations) the remaining
samples are split into thirds; RSS is called *flat* when the median of the last third is within
``--tolerance`` (10%) of the median of the first third.

Run: ``python benchmarks/soak.py --short --seeds lstm gru --time-limit 900 --cache-size 16`` (a small
compiler cache makes eviction happen within a short run). Linux only (reads /proc/self/statm).
Not a test: it takes as long as you let it. Results go to ``benchmarks/results/`` and README.md.
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
from pathlib import Path

import torch

from archsearch.compiler import DEFAULT_CACHE_SIZE, cache_info
from archsearch.executors import InProcessExecutor
from archsearch.search import SearchDriver, preset
from archsearch.storage import open_storage
from search_throughput import workload  # benchmarks/ is on sys.path when this file runs as a script

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


class _Sampler:
    """Wraps the driver's ``_record``: one RSS sample after every finished evaluation."""

    def __init__(self, driver: SearchDriver) -> None:
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self._record = driver._record
        driver._record = self  # type: ignore[method-assign]

    def __call__(self, outcome) -> None:
        self._record(outcome)
        self.samples.append({"evaluation": len(self.samples) + 1, "seconds": round(time.monotonic() - self.t0, 2),
                             "rss_mb": round(rss_mb(), 1), **{f"cache_{k}": v for k, v in cache_info().items()}})


def summarize(samples: list[dict], warmup: float, tolerance: float) -> dict:
    """Medians of RSS over the first and last third after warm-up, and whether they are within ``tolerance``."""
    after = samples[int(len(samples) * warmup):]
    third = len(after) // 3
    if third < 3:
        return {"flat": None, "reason": f"too few samples after warm-up ({len(after)})"}
    first = statistics.median(s["rss_mb"] for s in after[:third])
    last = statistics.median(s["rss_mb"] for s in after[-third:])
    return {"warmup_evaluations": len(samples) - len(after), "first_third_median_mb": round(first, 1),
            "last_third_median_mb": round(last, 1), "change": round(last / first - 1, 4),
            "peak_mb": max(s["rss_mb"] for s in samples), "flat": abs(last / first - 1) <= tolerance}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--evaluations", type=int, default=2000, help="stop after this many evaluations (default 2000)")
    ap.add_argument("--time-limit", type=float, help="stop starting evaluations after this many seconds")
    ap.add_argument("--workers", type=int, default=1, help="in-process worker threads (default 1)")
    ap.add_argument("--cache-size", type=int, default=DEFAULT_CACHE_SIZE,
                    help=f"compiler LRU entries (default {DEFAULT_CACHE_SIZE})")
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of evaluations ignored (default 0.25)")
    ap.add_argument("--tolerance", type=float, default=0.10, help="allowed change of the median RSS (default 0.10)")
    ap.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    ap.add_argument("--short", action="store_true", help="~2 s trainings instead of the tiny scale's")
    ap.add_argument("--seeds", nargs="+", help="seed cells (default: the preset's)")
    ap.add_argument("--json", default="benchmarks/results/soak.json", help="output file (default %(default)s)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    base = workload("short", "soak") if args.short else preset("quick").with_overrides(name="soak")
    config = base.with_overrides(seed=args.seed, compile_cache_size=args.cache_size,
                                 seeds=tuple(args.seeds) if args.seeds else None)
    db = Path(tempfile.mkdtemp(prefix="archsearch-soak-")) / "soak.db"
    load_before = os.getloadavg()
    with InProcessExecutor(args.workers, torch_threads=1) as executor:
        driver = SearchDriver(open_storage(f"sqlite:///{db}"), config, executor,
                              max_evaluations=args.evaluations, time_limit=args.time_limit)
        sampler = _Sampler(driver)
        start = time.monotonic()
        final = driver.run()
        wall = time.monotonic() - start
    summary = summarize(sampler.samples, args.warmup, args.tolerance)
    storage = open_storage(f"sqlite:///{db}", read_only=True)
    report = {
        "conditions": {
            "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()], "workers": args.workers,
            "cache_size": args.cache_size, "preset": "quick", "short_trainings": args.short,
            "seeds": list(config.seeds), "seed": args.seed, "wall_s": round(wall, 1),
            "evaluations": final.done + final.failed, "failed": final.failed,
            "architectures": len(storage.list_architectures(storage.get_search("soak").id)),
        },
        "summary": summary,
        "samples": sampler.samples,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    c = report["conditions"]
    print(f"{c['evaluations']} evaluations ({c['architectures']} architectures) in {wall:.0f} s, "
          f"cache size {args.cache_size}, {args.workers} worker(s); load {load_before[0]:.1f}")
    if summary.get("flat") is None:
        print(f"RSS: {summary['reason']}")
        return 1
    verdict = "flat" if summary["flat"] else "NOT flat"
    print(f"RSS after {summary['warmup_evaluations']} warm-up evaluations: median {summary['first_third_median_mb']} MB "
          f"(first third) -> {summary['last_third_median_mb']} MB (last third), {100 * summary['change']:+.1f}%; "
          f"peak {summary['peak_mb']} MB: {verdict} within {100 * args.tolerance:.0f}%")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
