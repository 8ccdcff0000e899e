"""Time to pass the memorization filter (paper §3.1: 5 symbols of 26, >= 0.95 with teacher forcing).

Trains each cell with one hyper-parameter setting on several seeds, exactly as
``archsearch train --task memorize`` does (the scale's ``FILTER_OVERRIDES``: the
paper's 25K parameters, SGD, minibatch 20, unroll 35, early stop at 0.95), on one
CPU thread, and prints one line per run and a summary per cell (stdout), e.g.::

    python benchmarks/memorize_filter.py --cells lstm gru lstm-b --seeds 0 1 2
    python benchmarks/memorize_filter.py --cells lstm --seeds 0 1 2 3 4 --out benchmarks/results/memorize_filter.json

The paper: the LSTM "can solve it with 25K parameters under four minutes with all
but the most extreme settings of its hyperparameters". Targets: 20 s on 2 cores (issue 5); the median over 5
seeds at most 10 s on one thread (issue 15). ``--out`` writes every run and each cell's summary as JSON, with the
load average before and after (the seconds depend on it; the minibatch counts do not).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from archsearch.cli._train import DEFAULT_SETTINGS
from archsearch.search_spaces import seed as seed_cell
from archsearch.tasks import get_task
from archsearch.train import FILTER_THRESHOLD, HyperParams, task_config, train


def parse_args() -> argparse.Namespace:
    memo = DEFAULT_SETTINGS["memorize"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "lstm-b"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--scale", default="small")
    p.add_argument("--lr", type=float, default=memo["lr"])
    p.add_argument("--init-scale", type=float, default=memo["init_scale"])
    p.add_argument("--max-grad-norm", type=float, default=memo["max_grad_norm"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of text")
    p.add_argument("--out", type=Path, help="also write all runs and summaries to this JSON file")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("memorize")
    config = task_config(args.scale, task)
    hp = HyperParams(args.lr, args.init_scale, args.max_grad_norm, 1, 25_000).check(task.param_budgets)
    print(f"# memorization filter: {hp.to_dict()}, scale {args.scale} ({config.epoch_positions // 700} minibatches "
          f"per epoch, at most {config.max_epochs} epochs), {args.threads} thread(s), {os.cpu_count()} cores",
          file=sys.stderr)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "threads": args.threads, "scale": args.scale, "hparams": hp.to_dict(),
              "load_average_before": os.getloadavg()[0], "runs": [], "summary": {}}
    for name in args.cells:
        runs = []
        for s in args.seeds:
            r = train(seed_cell(name), task, hp, config, seed=s)
            passed = not r.diverged and r.valid >= FILTER_THRESHOLD
            runs.append((passed, r.seconds, r.epochs))
            row = {"cell": name, "seed": s, "passed": passed, "valid": r.valid, "epochs": r.epochs,
                   "minibatches": r.epochs * config.epoch_positions // (config.batch_size * config.unroll),
                   "seconds": round(r.seconds, 2), "params": r.params, "units": r.units}
            record["runs"].append(row)
            print(json.dumps(row) if args.json else
                  f"{name:7s} seed {s}: {'pass' if passed else 'FAIL'}  valid {r.valid:.4f}  {r.epochs:3d} epochs "
                  f"({row['minibatches']} minibatches)  {r.seconds:6.1f} s  {r.params} params, {r.units} units",
                  flush=True)
        ok = [t for p, t, _ in runs if p]
        record["summary"][name] = {"passed": len(ok), "runs": len(runs), "median_seconds_to_pass":
                                   statistics.median(ok) if ok else None, "max_seconds_to_pass": max(ok, default=None),
                                   "median_seconds": statistics.median(t for _, t, _ in runs)}
        if not args.json:
            med = f"median {statistics.median(ok):.1f} s, max {max(ok):.1f} s" if ok else "no run passed"
            print(f"{name:7s} passed {len(ok)}/{len(runs)}; time to pass: {med}", flush=True)
    record["load_average_after"] = os.getloadavg()[0]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
