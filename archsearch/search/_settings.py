"""Hyper-parameter settings for candidates (paper §3.3), never repeating one an architecture already ran."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable

import numpy as np

from archsearch.train import PAPER_SPACE, HyperParams, SettingSpace

_MAX_DRAWS = 200
SOURCES = ("random", "parent_best", "reference_best", "parent_tried")


def _fresh(pool: list[HyperParams], rng: np.random.Generator, taken: set[str]) -> HyperParams | None:
    """A setting from ``pool`` whose key is not in ``taken`` (uniformly among those left)."""
    left = [hp for hp in pool if hp.key() not in taken]
    return left[int(rng.integers(len(left)))] if left else None


def _random(rng: np.random.Generator, budgets: tuple[int, ...], taken: set[str], layers: int | None,
            space: SettingSpace) -> HyperParams:
    hp = space.sample(rng, budgets, layers)
    for _ in range(_MAX_DRAWS):
        if hp.key() not in taken:
            break
        hp = space.sample(rng, budgets, layers)
    return hp


def _nearest(params: int, budgets: tuple[int, ...]) -> int:
    return min(budgets, key=lambda b: abs(math.log(b / params)))


def choose_settings(
    rng: np.random.Generator,
    count: int,
    budgets: tuple[int, ...],
    taken: Iterable[str],
    *,
    parent_ranked: list[HyperParams] | None = None,
    parent_total: int = 0,
    reference_best: list[HyperParams] | None = None,
    threshold: int = 420,
    fixed_layers: int | None = None,
    space: SettingSpace = PAPER_SPACE,
) -> list[tuple[HyperParams, str]]:
    """``count`` new settings and where each came from (one of :data:`SOURCES`).

    With no parent (the seeds, the filter's one setting): all random. A child whose parent ran
    more than ``threshold`` settings: 80% from the parent's best 100, 20% random.
    Otherwise: a third random, a third from the best 100 of the reference cells
    (LSTM and GRU), a third from the settings tried on the parent. Random settings come from ``space``
    (the search scale's, :func:`archsearch.train.setting_space`).
    """
    taken = set(taken)
    parent_ranked = parent_ranked or []
    if not parent_ranked and not reference_best:
        sources, probs = ["random"], [1.0]
    elif parent_total > threshold:
        sources, probs = ["parent_best", "random"], [0.8, 0.2]
    else:
        sources, probs = ["random", "reference_best", "parent_tried"], [1 / 3, 1 / 3, 1 / 3]
    def fit(hps: list[HyperParams]) -> list[HyperParams]:
        """Cells with their own depth have no `layers` choice; a budget not allowed on this task becomes the
        task's nearest one (on a log scale): lr, init scale and clipping carry over between tasks."""
        out = [hp if fixed_layers is None else replace(hp, layers=fixed_layers) for hp in hps]
        return [hp if hp.params in budgets else replace(hp, params=_nearest(hp.params, budgets)) for hp in out]

    pools = {
        "parent_best": fit(parent_ranked[:100]),
        "reference_best": fit((reference_best or [])[:100]),
        "parent_tried": fit(parent_ranked),
    }
    chosen: list[tuple[HyperParams, str]] = []
    for _ in range(count):
        source = str(rng.choice(sources, p=probs))
        hp = _fresh(pools[source], rng, taken) if source != "random" else None
        if hp is None:
            hp, source = _random(rng, budgets, taken, fixed_layers, space), "random"
        if hp.key() in taken:
            continue  # the space near this point is exhausted; fewer settings rather than a repeat
        taken.add(hp.key())
        chosen.append((hp, source))
    return chosen
