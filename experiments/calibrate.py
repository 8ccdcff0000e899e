"""Calibration sweeps for issue 12: learning curves of the separation cells under candidate scale fields.

    python experiments/calibrate.py --name arith1-distract3-wide --base tiny --task arithmetic \\
        --set max_epochs=40 patience=40 --lr 0.2 0.5 --layers 1 --jobs 2

Trains every cell on every listed setting (the grid of ``--lr`` x ``--init`` x ``--norm`` x ``--layers`` x
``--budget``) with the scale ``--base`` changed by ``--set FIELD=VALUE`` (any ``TrainConfig`` field), and
appends each run, with its per-epoch validation history, to ``experiments/results/calibrate_<name>.json``
(whose header records the resolved training config, so a sweep stays readable after its base scale changes).
A run already in the file is skipped, so an interrupted sweep resumes. The histories show how many SGD steps
each cell needs on each task, which is what the scales' step budgets are chosen from (README "Signal").
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, fields, replace

from _common import RESULTS, conditions, load, save


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    from archsearch.train import TrainConfig

    types = {f.name: f.type for f in fields(TrainConfig)}
    out: dict[str, object] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types:
            raise SystemExit(f"--set {pair}: {name!r} is not a TrainConfig field ({', '.join(types)})")
        out[name] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    return out


def run_job(job: dict) -> dict:
    """Train one (cell, setting) under the job's config; the record with its history and CPU time."""
    import time

    import torch

    from archsearch.cli._cells import load_cell
    from archsearch.cli._train import load_task
    from archsearch.train import HyperParams, task_config, train

    torch.set_num_threads(1)
    cell, task = load_cell(job["cell"]), load_task(job["task"], None)
    config = replace(task_config(job["base"], task), **job["overrides"])
    cpu = time.process_time()
    result = train(cell, task, HyperParams.from_dict(job["hparams"]), config, seed=job["seed"])
    return {**result.to_dict(), "cpu_seconds": time.process_time() - cpu, "cell": job["cell"],
            "hparams": job["hparams"], "seed": job["seed"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--base", default="tiny", help="the scale the overrides change")
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--cells", nargs="+", default=["tanh", "lstm-f", "lstm", "gru"])
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    p.add_argument("--lr", nargs="+", type=float, default=[1.0])
    p.add_argument("--init", nargs="+", type=float, default=[1.0])
    p.add_argument("--norm", nargs="+", type=float, default=[5.0])
    p.add_argument("--layers", nargs="+", type=int, default=[1])
    p.add_argument("--budget", nargs="+", type=int, default=[1_000_000])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    overrides = _parse_overrides(args.set)
    out = RESULTS / f"calibrate_{args.name}.json"
    from archsearch.cli._train import load_task
    from archsearch.train import task_config

    resolved = replace(task_config(args.base, load_task(args.task, None)), **overrides)
    header = {"experiment": "calibrate", "name": args.name, "base": args.base, "task": args.task,
              "overrides": overrides, "config": json.loads(json.dumps(asdict(resolved)))}
    data = load(out, header, fresh=False)
    done = {(r["cell"], json.dumps(r["hparams"], sort_keys=True), r["seed"]) for r in data["runs"]}
    jobs = []
    for lr, init, norm, layers, budget, seed in itertools.product(args.lr, args.init, args.norm, args.layers,
                                                                  args.budget, args.seeds):
        hp = {"lr": lr, "init_scale": init, "max_grad_norm": norm, "layers": layers, "params": budget}
        for cell in args.cells:
            if (cell, json.dumps(hp, sort_keys=True), seed) not in done:
                jobs.append({"cell": cell, "task": args.task, "hparams": hp, "seed": seed, "base": args.base,
                             "overrides": overrides})
    data["sessions"].append({"start": conditions(), "jobs": len(jobs)})
    save(out, data)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for future in as_completed(futures):
            record = future.result()
            data["runs"].append(record)
            save(out, data)
            best = max((h["valid"] for h in record["history"]), default=0.0)
            print(f"{record['cell']:7} {json.dumps(record['hparams'])} units {record['units']} epochs "
                  f"{record['epochs']} best {best:.3f} cpu {record['cpu_seconds']:.0f}s", flush=True)
    data["sessions"][-1]["end"] = conditions()
    save(out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
