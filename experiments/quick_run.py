"""The README's main job, measured: ``archsearch search --preset quick`` and what its database holds afterwards.

    python experiments/quick_run.py                                   # runs the quick search in a temporary folder
    python experiments/quick_run.py --db sqlite:///archsearch.db --time-log time.txt   # an existing run

The second form summarizes a quick search that was run as ``/usr/bin/time -v archsearch search --preset quick
> time.txt 2>&1`` (the README's first command): wall time, CPU time and peak memory are read from GNU time's
report. Writes ``experiments/results/quick_run.json``: timing, evaluations, the driver's counters, architectures by
stage, the frozen normalizers, the leaderboard, and each cell's best scores (the cells stopped by the filter
and the gates included), which ``experiments/render.py`` turns into the README's quick-run section.
"""

from __future__ import annotations

import argparse
import collections
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, conditions, save

_TIME_FIELDS = {"wall_seconds": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)",
                "user_seconds": r"User time \(seconds\): (\S+)", "system_seconds": r"System time \(seconds\): (\S+)",
                "max_rss_kb": r"Maximum resident set size \(kbytes\): (\S+)"}


def _clock(text: str) -> float:
    parts = [float(p) for p in text.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def parse_time_log(text: str) -> dict[str, float]:
    """Wall, user and system seconds and peak RSS from GNU time's ``-v`` report."""
    out = {}
    for name, pattern in _TIME_FIELDS.items():
        match = re.search(pattern, text)
        if match is None:
            raise SystemExit(f"not a GNU time -v report: no {name}")
        out[name] = _clock(match[1]) if name == "wall_seconds" else float(match[1])
    return out


def run_quick(folder: Path) -> tuple[str, dict[str, float]]:
    url = f"sqlite:///{folder / 'quick.db'}"
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "archsearch", "search", "--preset", "quick", "--db", url,
                           "--no-live"], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the quick search failed:\n{done.stderr[-3000:]}")
    return url, {"wall_seconds": time.perf_counter() - started, "user_seconds": after.ru_utime - before.ru_utime,
                 "system_seconds": after.ru_stime - before.ru_stime, "max_rss_kb": float(after.ru_maxrss)}


def _created(url: str) -> str:
    """When the quick search in ``url`` was created (UTC), as ``conditions()`` writes times."""
    from archsearch.storage import open_storage

    storage = open_storage(url, read_only=True)
    try:
        return storage.get_search("quick").created.strftime("%Y-%m-%d %H:%M:%S UTC")
    finally:
        storage.close()


def summarize(url: str) -> dict:
    from archsearch.search import SearchConfig
    from archsearch.storage import open_storage

    storage = open_storage(url, read_only=True)
    record = storage.get_search("quick")
    config = SearchConfig.from_dict(record.config)
    archs = storage.list_architectures(record.id)
    done = [e for e in storage.evaluations(search_id=record.id) if e.status == "done"]
    top = storage.top_k(record.id, 10, list(config.tasks), config.reference)
    return {
        "evaluations": len(done), "counters": record.counters, "normalizers": record.normalizers,
        "stages": dict(collections.Counter(a.stage.split("#")[0] for a in archs)),
        "leaderboard": [{"name": a.name, "fitness": f, "scores": s} for a, f, s in top],
        "cells": [{"name": a.name, "origin": a.origin, "stage": a.stage, "best": storage.best_scores(a.id)}
                  for a in archs],
        "config": {"seeds": list(config.seeds), "tasks": list(config.tasks), "scale": config.scale,
                   "train_overrides": config.train_overrides},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", help="summarize this finished quick search instead of running one")
    p.add_argument("--time-log", type=Path, help="GNU time -v report of that run (with --db)")
    args = p.parse_args(argv)
    if (args.db is None) != (args.time_log is None):
        p.error("--db and --time-log go together")
    start = conditions()
    with tempfile.TemporaryDirectory() as tmp:
        if args.db:  # measured earlier: when the search was created; the load then is unknown
            url, timing = args.db, parse_time_log(args.time_log.read_text())
            start = {**{k: v for k, v in start.items() if k != "load_average"}, "time": _created(url)}
        else:
            url, timing = run_quick(Path(tmp))
        data = {"experiment": "quick_run", "command": "archsearch search --preset quick", "timing": timing,
                "conditions": start, **summarize(url)}
    save(RESULTS / "quick_run.json", data)
    top = ", ".join(f"{row['name']} {row['fitness']:.3f}" for row in data["leaderboard"][:3])
    print(f"{data['evaluations']} evaluations in {timing['wall_seconds'] / 60:.1f} min; top: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
