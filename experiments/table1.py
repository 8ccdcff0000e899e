"""Table 1 at one scale: every Table 1 cell on arithmetic, XML and ptb-mini, N settings each.

    python experiments/table1.py --scale tiny --settings 6 --jobs 2

Writes ``experiments/results/table1_<scale>.json`` (``--out``): the configuration, one record per run
(best validation metric, wall and CPU seconds) appended as runs finish, and the conditions of each session.
Re-running the same command continues: runs already in the file are not trained again. The settings are
``archsearch.baselines.draw_settings`` (the same for every cell), so the file is what ``archsearch baselines
--batch-settings 1`` would print (one run at a time; the command batches by default). ``experiments/render.py`` turns it into the README's table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import RESULTS, conditions, load, save

from archsearch.baselines import PAPER_CELLS, make_jobs, run_jobs
from archsearch.cli._train import finite, load_task
from archsearch.train import task_config

TASKS = ["arithmetic", "xml", "ptb-mini"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tiny")
    p.add_argument("--settings", type=int, default=6, help="settings per task (default 6)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--cells", nargs="+", default=PAPER_CELLS)
    p.add_argument("--seed", type=int, default=0, help="seed of the settings and training seeds (default 0)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--max-runs", type=int, help="stop after this many new runs (a chunk)")
    p.add_argument("--only", nargs="+", choices=TASKS, metavar="TASK",
                   help="this session runs only these tasks' jobs (the file keeps the whole configuration)")
    p.add_argument("--out", type=Path, help="results file (default experiments/results/table1_<scale>.json)")
    p.add_argument("--fresh", action="store_true", help="discard stored results of another configuration")
    args = p.parse_args(argv)
    out = args.out or RESULTS / f"table1_{args.scale}.json"
    tasks = [load_task(name, None) for name in args.tasks]
    header = {"experiment": "table1", "scale": args.scale, "settings": args.settings, "seed": args.seed,
              "tasks": args.tasks, "cells": args.cells,
              "train_config": {t.name: task_config(args.scale, t).read_by(t) for t in tasks}}
    data = load(out, header, args.fresh)
    done = {(r["cell"], r["task"], r["setting"]) for r in data["runs"]}
    jobs = [j for j in make_jobs(args.cells, tasks, args.settings, args.seed, args.scale)
            if (j["cell"], j["task"], j["setting"]) not in done and (not args.only or j["task"] in args.only)]
    jobs = jobs[: args.max_runs] if args.max_runs is not None else jobs
    print(f"{out}: {len(done)} runs stored, {len(jobs)} to run", file=sys.stderr)
    session = {"start": conditions(), "runs": 0, "jobs": args.jobs}
    if jobs:
        data["sessions"].append(session)
    started = time.perf_counter()
    for run in run_jobs(jobs, args.jobs):
        data["runs"].append(finite(run))
        session.update(runs=session["runs"] + 1, wall_seconds=time.perf_counter() - started, end=conditions())
        save(out, data)
        print(f"{run['cell']} {run['task']} #{run['setting']}: {run['metric']:.4f} ({run['cpu_seconds']:.1f} s CPU)",
              file=sys.stderr)
    save(out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
