"""``archsearch baselines``: the seed cells on N random settings per task, next to the paper's Table 1.

Every cell trains on the same settings of a task (drawn with ``sample_hparams``
from a fixed seed) with the same training seeds, so the table compares cells,
not luck in the draw; settings of a cell and task that give the same model train
as one batched model (``--batch-settings``). The table shows each cell's best validation metric per task;
below it, per task, the separation ratio (``archsearch.baselines``) with its bootstrap
interval beside the paper's, and the wall and CPU time per run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from archsearch.baselines import PAPER_CELLS, PAPER_TABLE1, make_jobs, paper_separation, paper_task, run_jobs, score_matrix, separation
from archsearch.cli._cells import load_cell
from archsearch.cli._train import add_run_options, finite, load_task, setup_torch
from archsearch.errors import CLIUsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baselines", help="the seed cells on random settings, beside the paper's Table 1")
    p.add_argument("--tasks", nargs="+", default=["arithmetic", "xml"], help="tasks (default arithmetic xml)")
    p.add_argument("--cells", nargs="+", default=PAPER_CELLS, help="seed names or cell JSON files (default: Table 1's)")
    p.add_argument("--settings", type=int, default=2, help="random settings per task (default 2)")
    add_run_options(p)
    p.add_argument("--jobs", type=int, default=1,
                   help="training runs (or batched groups, see --batch-settings) in parallel processes (default 1)")
    p.add_argument("--batch-settings", type=int, default=20, metavar="K",
                   help="train up to K settings of a cell and task that give the same model shape as one batched "
                        "model (each setting as if alone: equal in float64, rounding differs in float32; less CPU; "
                        "default 20, 1: one by one)")
    p.add_argument("--json", action="store_true", help="print runs, table and separation as one JSON object")
    p.set_defaults(func=run_baselines)


def best_table(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """cell -> task -> the run with the highest search metric (diverged runs count as 0)."""
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        current = best.setdefault(run["cell"], {}).get(run["task"])
        if current is None or run["metric"] > current["metric"]:
            best[run["cell"]][run["task"]] = run
    return best


def separations(runs: list[dict[str, Any]], tasks: list[str], seed: int) -> dict[str, dict[str, Any]]:
    """task -> the separation estimate (None without the four cells) and the paper's ratio."""
    out = {}
    for task in tasks:
        estimate = separation(score_matrix(runs, task), seed=seed)
        out[task] = {"estimate": None if estimate is None else estimate.to_dict(), "paper": paper_separation(task)}
    return out


def timing(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean wall and CPU seconds per training run."""
    n = max(len(runs), 1)
    return {"runs": len(runs), "seconds_per_run": sum(r["seconds"] for r in runs) / n,
            "cpu_seconds_per_run": sum(r["cpu_seconds"] for r in runs) / n}


def _value(run: dict[str, Any] | None) -> str:
    if run is None:
        return "-"
    return "diverged" if run["diverged"] else f"{run['valid']:.5f}"


def print_table(args: argparse.Namespace, tasks: list[str], best: dict, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (f"Best validation metric over {args.settings} random setting(s) per task, scale {args.scale} "
             f"(paper: Table 1, best of ~220 settings at full size); {seconds / 60:.1f} min")
    table = Table(title=title)
    table.add_column("cell")
    for task in tasks:
        table.add_column(task, justify="right")
        if paper_task(task) in PAPER_TABLE1["lstm"]:
            table.add_column(f"paper {paper_task(task)}", justify="right", style="dim")
    for cell in args.cells:
        row = [cell]
        for task in tasks:
            row.append(_value(best.get(cell, {}).get(task)))
            if paper_task(task) in PAPER_TABLE1["lstm"]:
                paper = PAPER_TABLE1.get(cell, {}).get(paper_task(task))
                row.append("-" if paper is None else f"{paper:.5f}")
        table.add_row(*row)
    Console(width=200).print(table)


def print_separation(seps: dict[str, dict[str, Any]], times: dict[str, float]) -> None:
    """One line per task: the ratio, its interval and the paper's; then the time per run."""
    print("separation = min(best lstm, best gru) / max(best tanh, best lstm-f), 95% bootstrap CI over the settings")
    for task, sep in seps.items():
        est, paper = sep["estimate"], sep["paper"]
        ours = ("- (needs tanh, lstm-f, lstm and gru)" if est is None
                else f"{est['value']:.3f} [{est['low']:.3f}-{est['high']:.3f}]")
        print(f"  {task}: {ours}  paper {'-' if paper is None else f'{paper:.2f}'}")
    print(f"{times['runs']} runs: {times['seconds_per_run']:.1f} s wall, {times['cpu_seconds_per_run']:.1f} s CPU per run")


def run_baselines(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if args.settings < 1:
        raise CLIUsageError(f"--settings must be at least 1, got {args.settings}")
    if args.jobs < 1:
        raise CLIUsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.batch_settings < 1:
        raise CLIUsageError(f"--batch-settings must be at least 1, got {args.batch_settings}")
    setup_torch(args)
    for cell in args.cells:
        load_cell(cell).validate()  # fail on a bad name before hours of training
    tasks = [load_task(name, args.data_dir) for name in args.tasks]
    jobs = make_jobs(args.cells, tasks, args.settings, args.seed, args.scale, data_dir=args.data_dir,
                     device=args.device, threads=args.threads)
    started, runs = time.perf_counter(), []
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("runs"),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=Console(stderr=True))
    with progress:
        bar = progress.add_task("baselines", total=len(jobs), last="")
        for run in run_jobs(jobs, args.jobs, args.batch_settings):
            runs.append(run)
            last = f"{run['cell']} {run['task']} #{run['setting']}: {_value(run)}"
            progress.update(bar, advance=1, last=last)
    seconds = time.perf_counter() - started
    best = best_table(runs)
    seps, times = separations(runs, args.tasks, args.seed), timing(runs)
    if args.json:
        table = {cell: {task: run["valid"] for task, run in per.items()} for cell, per in best.items()}
        print(json.dumps(finite({"scale": args.scale, "settings": args.settings, "seed": args.seed,
                                 "batch_settings": args.batch_settings,
                                 "tasks": args.tasks, "cells": args.cells, "seconds": seconds, **times,
                                 "best": table, "paper": PAPER_TABLE1, "separation": seps, "runs": runs}),
                         sort_keys=True))
    else:
        print_table(args, args.tasks, best, seconds)
        print_separation(seps, times)
    return 0
