"""``archsearch baselines``: the seed cells on N random settings per task, next to the paper's Table 1.

Every cell trains on the same settings of a task (drawn with ``sample_hparams``
from a fixed seed) with the same training seeds, so the table compares cells,
not luck in the draw. The table shows each cell's best validation metric per task.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from archsearch.cli._cells import load_cell
from archsearch.cli._train import add_run_options, finite, load_task, setup_torch
from archsearch.errors import CLIUsageError

PAPER_CELLS = ["tanh", "lstm", "lstm-f", "lstm-i", "lstm-o", "lstm-b", "gru", "mut1", "mut2", "mut3"]
# Jozefowicz et al. 2015, Table 1: best accuracy (PTB: exp(-NLL)) per architecture.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "tanh": {"arithmetic": 0.29493, "xml": 0.32050, "ptb": 0.08782},
    "lstm": {"arithmetic": 0.89228, "xml": 0.42470, "ptb": 0.08912},
    "lstm-f": {"arithmetic": 0.29292, "xml": 0.23356, "ptb": 0.08808},
    "lstm-i": {"arithmetic": 0.75109, "xml": 0.41371, "ptb": 0.08662},
    "lstm-o": {"arithmetic": 0.86747, "xml": 0.42117, "ptb": 0.08933},
    "lstm-b": {"arithmetic": 0.90163, "xml": 0.44434, "ptb": 0.08952},
    "gru": {"arithmetic": 0.89565, "xml": 0.45963, "ptb": 0.09069},
    "mut1": {"arithmetic": 0.92135, "xml": 0.47483, "ptb": 0.08968},
    "mut2": {"arithmetic": 0.89735, "xml": 0.47324, "ptb": 0.09036},
    "mut3": {"arithmetic": 0.90728, "xml": 0.46478, "ptb": 0.09161},
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baselines", help="the seed cells on random settings, beside the paper's Table 1")
    p.add_argument("--tasks", nargs="+", default=["arithmetic", "xml"], help="tasks (default arithmetic xml)")
    p.add_argument("--cells", nargs="+", default=PAPER_CELLS, help="seed names or cell JSON files (default: Table 1's)")
    p.add_argument("--settings", type=int, default=2, help="random settings per task (default 2)")
    add_run_options(p)
    p.add_argument("--jobs", type=int, default=1, help="training runs in parallel processes (default 1)")
    p.add_argument("--json", action="store_true", help="print runs and table as one JSON object")
    p.set_defaults(func=run_baselines)


def draw_settings(tasks: list, count: int, seed: int) -> dict[str, list]:
    """``count`` random settings per task, the same for every cell; independent per task name."""
    import numpy as np

    from archsearch.train import sample_hparams

    draws = {}
    for task in tasks:
        rng = np.random.default_rng([seed, zlib.crc32(task.name.encode())])
        draws[task.name] = [sample_hparams(rng, task.param_budgets) for _ in range(count)]
    return draws


def _train_one(job: dict[str, Any]) -> dict[str, Any]:
    """One run, in a worker process or inline: returns the JSON-ready record."""
    import torch

    from archsearch.train import HyperParams, task_config, train

    torch.set_num_threads(job["threads"])
    cell, task = load_cell(job["cell"]), load_task(job["task"], job["data_dir"])
    hp = HyperParams.from_dict(job["hparams"])
    result = train(cell, task, hp, task_config(job["scale"], task), seed=job["seed"], device=job["device"])
    record = result.to_dict()
    del record["history"]
    return {**record, "cell": job["cell"], "setting": job["setting"], "hparams": job["hparams"]}


def make_jobs(args: argparse.Namespace, tasks: list) -> list[dict[str, Any]]:
    draws = draw_settings(tasks, args.settings, args.seed)
    return [
        {"cell": cell, "task": task.name, "setting": i, "hparams": hp.to_dict(), "seed": args.seed * 1000 + i,
         "scale": args.scale, "data_dir": args.data_dir, "device": args.device, "threads": args.threads}
        for task in tasks
        for i, hp in enumerate(draws[task.name])
        for cell in args.cells
    ]


def best_table(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """cell -> task -> the run with the highest search metric (diverged runs count as 0)."""
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        current = best.setdefault(run["cell"], {}).get(run["task"])
        if current is None or run["metric"] > current["metric"]:
            best[run["cell"]][run["task"]] = run
    return best


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
        if task in PAPER_TABLE1["lstm"]:
            table.add_column(f"paper {task}", justify="right", style="dim")
    for cell in args.cells:
        row = [cell]
        for task in tasks:
            row.append(_value(best.get(cell, {}).get(task)))
            if task in PAPER_TABLE1["lstm"]:
                paper = PAPER_TABLE1.get(cell, {}).get(task)
                row.append("-" if paper is None else f"{paper:.5f}")
        table.add_row(*row)
    Console(width=200).print(table)


def run_baselines(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if args.settings < 1:
        raise CLIUsageError(f"--settings must be at least 1, got {args.settings}")
    if args.jobs < 1:
        raise CLIUsageError(f"--jobs must be at least 1, got {args.jobs}")
    setup_torch(args)
    for cell in args.cells:
        load_cell(cell).validate()  # fail on a bad name before hours of training
    tasks = [load_task(name, args.data_dir) for name in args.tasks]
    jobs = make_jobs(args, tasks)
    started, runs = time.perf_counter(), []
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("runs"),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=Console(stderr=True))
    with progress:
        bar = progress.add_task("baselines", total=len(jobs), last="")
        for run in _run_jobs(jobs, args.jobs):
            runs.append(run)
            last = f"{run['cell']} {run['task']} #{run['setting']}: {_value(run)}"
            progress.update(bar, advance=1, last=last)
    seconds = time.perf_counter() - started
    best = best_table(runs)
    if args.json:
        table = {cell: {task: run["valid"] for task, run in per.items()} for cell, per in best.items()}
        print(json.dumps(finite({"scale": args.scale, "settings": args.settings, "seed": args.seed,
                                 "tasks": args.tasks, "cells": args.cells, "seconds": seconds,
                                 "best": table, "paper": PAPER_TABLE1, "runs": runs}), sort_keys=True))
    else:
        print_table(args, args.tasks, best, seconds)
    return 0


def _run_jobs(jobs: list[dict[str, Any]], workers: int):
    """Yield each job's record, inline or from ``workers`` processes (in completion order)."""
    if workers == 1:
        for job in jobs:
            yield _train_one(job)
        return
    import multiprocessing
    from concurrent.futures import as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(_train_one, job) for job in jobs]):
            yield future.result()
