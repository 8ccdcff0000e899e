"""Paired timing shared by the benchmarks: every case timed in interleaved rounds, so a change in the machine's
load moves all of them alike and their ratios stay fair."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn


def train_step(model: nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    """Forward and backward of one window: the loss is ``sum(y * g)`` of the outputs ``y``."""
    out = model(x)
    y = out[0] if isinstance(out, tuple) else out
    model.zero_grad(set_to_none=True)
    (y * g).sum().backward()


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int = 2,
                sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median over ``rounds`` of the seconds per call of each case; each round runs every case ``calls`` times,
    one case after another. ``sync`` waits for queued device work (CUDA) before each clock reading."""
    for run in cases.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                run()
            sync()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}
