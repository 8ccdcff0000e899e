"""Throughput of batched training (K settings as one stacked model) against one setting at a time.

Usage:
    python benchmarks/batched.py                          # lstm and gru, K = 1 5 20, 1 and 2 threads
    python benchmarks/batched.py --cells lstm --ks 1 20 --threads 1 --epochs 2

Task: arithmetic at the search scale (``small``: budget 250,000 x 0.1, 1 layer,
batch 20, unroll 35, 60 windows per epoch, 10 validation windows). Each
measurement trains ``--epochs`` epochs (early stop off) and converts the time to
trained settings per minute for a full ``small`` run of 15 epochs:
``settings/min = K * 60 / (seconds * 15 / epochs)``. Sequential runs call
``train_model`` once per setting. Learning rates are drawn from {0.1, 0.2, 0.3,
0.5, 1.0} so that no setting diverges (a diverged slice would leave the batch
early and flatter or hurt one side). On a shared machine the numbers are noisy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import archsearch
from archsearch.tasks import get_task
from archsearch.train import HyperParams, scale_config, train_batched, train_model

# ---------------------------------------------------------------- config
BUDGET = 250_000
FULL_EPOCHS = 15  # the small scale's max_epochs


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


def per_minute(k: int, seconds: float, epochs: int) -> float:
    return k * 60.0 / (seconds * FULL_EPOCHS / epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--epochs", type=int, default=1, help="epochs actually trained per measurement")
    parser.add_argument("--sequential", type=int, default=3, help="settings timed one by one (their mean is used)")
    args = parser.parse_args()

    config = scale_config("small").with_overrides(max_epochs=args.epochs, patience=10**6)
    task = get_task("arithmetic")
    print(f"torch {torch.__version__}; arithmetic, scale small, budget {BUDGET:,} x {config.param_scale}, "
          f"{args.epochs} epoch(s) timed, extrapolated to {FULL_EPOCHS}")
    print("| cell | threads | units | sequential settings/min | K | batched settings/min | gain |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.cells:
            cell = archsearch.seed(name)
            hps = settings(max(args.ks + [args.sequential]))
            start = time.perf_counter()
            for i, hp in enumerate(hps[: args.sequential]):
                result, _ = train_model(cell, task, hp, config, seed=i)
            seq = per_minute(args.sequential, time.perf_counter() - start, args.epochs)
            for k in args.ks:
                start = time.perf_counter()
                results = train_batched(cell, task, hps[:k], config, list(range(k)))
                rate = per_minute(k, time.perf_counter() - start, args.epochs)
                assert not any(r.diverged for r in results), "a benchmark setting diverged"
                print(f"| {name} | {threads} | {result.units} | {seq:.1f} | {k} | {rate:.1f} | {rate / seq:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
