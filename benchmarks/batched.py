"""Throughput of batched training (K settings as one stacked model) against one setting at a time.

Usage:
    python benchmarks/batched.py                          # lstm and gru, K = 1 5 20, 1 and 2 threads, CPU
    python benchmarks/batched.py --cells lstm --ks 1 20 --threads 1 --epochs 2
    python benchmarks/batched.py --device cuda --scale paper --windows 100 --threads 1

Task: arithmetic, budget 250,000 x the scale's ``param_scale``, 1 layer, batch 20,
unroll 35. ``--scale small`` (the default: 0.1 of the budget, 50 windows per
epoch, 10 validation windows, at most 160 epochs) is the search scale of the ``small``
preset; ``--scale paper`` is the paper's (full budget; 1000 windows per epoch,
100 validation windows); ``--windows N`` shortens the timed epochs to N windows
(and the validation pass in proportion).
Each measurement trains ``--epochs`` epochs (early stop off) and converts the
time to trained settings per minute for a run of ``--full-epochs`` epochs (default: the
scale's ``max_epochs``) of the scale's length: ``settings/min = K * 60 / (seconds * full_epochs * epoch_windows
/ (epochs * windows))``. Sequential runs call ``train_model`` once per setting.
Learning rates are drawn from {0.1, 0.2, 0.3, 0.5, 1.0} so that no setting
diverges (a diverged slice would leave the batch early and flatter or hurt one
side). On a shared machine the numbers are noisy. On CUDA, time is taken after
``torch.cuda.synchronize()``. Each run appends a measurement (rows, conditions, whether native elementwise
stages ran) to ``--json`` (default ``benchmarks/results/batched.json``), which ``experiments/render.py``
shows in the README.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import archsearch
from archsearch.compiler import _native
from archsearch.tasks import get_task
from archsearch.train import HyperParams, scale_config, train_batched, train_model

# ---------------------------------------------------------------- config
BUDGET = 250_000
RESULTS = Path(__file__).resolve().parent / "results" / "batched.json"


def settings(k: int, seed: int = 0) -> list[HyperParams]:
    rng = np.random.default_rng(seed)
    return [
        HyperParams(
            lr=float(rng.choice([0.1, 0.2, 0.3, 0.5, 1.0])),
            init_scale=float(rng.choice([0.3, 0.7, 1.0, 1.4])),
            max_grad_norm=float(rng.choice([1.0, 2.5, 5.0, 10.0])),
            layers=1,
            params=BUDGET,
        )
        for _ in range(k)
    ]


def per_minute(k: int, seconds: float, timed_windows: int, full_windows: int) -> float:
    """Settings per minute for full runs of ``full_windows`` windows, from ``timed_windows`` taking ``seconds``."""
    return k * 60.0 / (seconds * full_windows / timed_windows)


def timed(fn, device: str):
    """(result, seconds) of ``fn()``, synchronizing CUDA before and after."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--scale", choices=["small", "paper"], default="small")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--epochs", type=int, default=1, help="epochs actually trained per measurement")
    parser.add_argument("--windows", type=int, help="windows per timed epoch (default: the scale's)")
    parser.add_argument("--full-epochs", type=int, help="epochs of the run settings/min refers to (default: the scale's)")
    parser.add_argument("--sequential", type=int, default=3, help="settings timed one by one (their mean is used)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"append the measurement here (default {RESULTS})")
    parser.add_argument("--note", default="", help="what the measurement is of, shown beside it")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")

    base = scale_config(args.scale)
    args.full_epochs = args.full_epochs or base.max_epochs
    full_windows = base.epoch_positions // (base.batch_size * base.unroll) * args.full_epochs
    windows = args.windows or base.epoch_positions // (base.batch_size * base.unroll)
    window = base.batch_size * base.unroll
    shrink = windows / (base.epoch_positions // window)  # validation shrinks with the epoch: same proportions
    config = base.with_overrides(max_epochs=args.epochs, patience=10**6, epoch_positions=windows * window,
                                 valid_positions=max(1, round(base.valid_positions // window * shrink)) * window)
    task = get_task("arithmetic")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__} on {where}; arithmetic, scale {args.scale}, budget {BUDGET:,} x "
          f"{config.param_scale}, {args.epochs} epoch(s) of {windows} windows timed, per minute of runs of "
          f"{args.full_epochs} epochs x {full_windows // args.full_epochs} windows")
    print("| cell | threads | units | sequential settings/min | K | batched settings/min | gain |")
    print("|---|---|---|---|---|---|---|")
    timed_windows = windows * args.epochs
    rows = []
    measurement = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "torch": torch.__version__, "device": where, "scale": args.scale, "budget": BUDGET,
                   "param_scale": config.param_scale, "timed_windows": timed_windows, "full_windows": full_windows,
                   "full_epochs": args.full_epochs, "native": _native.describe() if where == "CPU" else "off (CUDA)",
                   "load_average_before": os.getloadavg()[0], "note": args.note, "rows": rows}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.cells:
            cell = archsearch.seed(name)
            hps = settings(max(args.ks + [args.sequential]))
            train_model(cell, task, hps[0], config.with_overrides(max_epochs=1), device=args.device)  # warm-up
            seconds = 0.0
            for i, hp in enumerate(hps[: args.sequential]):
                (result, _), took = timed(lambda: train_model(cell, task, hp, config, seed=i, device=args.device),
                                          args.device)
                seconds += took
            seq = per_minute(args.sequential, seconds, timed_windows, full_windows)
            for k in args.ks:
                results, took = timed(lambda: train_batched(cell, task, hps[:k], config, list(range(k)),
                                                            device=args.device), args.device)
                rate = per_minute(k, took, timed_windows, full_windows)
                assert not any(r.diverged for r in results), "a benchmark setting diverged"
                print(f"| {name} | {threads} | {result.units} | {seq:.1f} | {k} | {rate:.1f} | {rate / seq:.2f}x |",
                      flush=True)
                rows.append({"cell": name, "threads": threads, "units": result.units, "sequential_per_minute": seq,
                             "k": k, "batched_per_minute": rate})
    measurement["load_average_after"] = os.getloadavg()[0]
    document = json.loads(args.json.read_text()) if args.json.exists() else {"benchmark": "batched", "measurements": []}
    document["measurements"].append(measurement)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1) + "\n")
    print(f"appended to {args.json}")


if __name__ == "__main__":
    main()
