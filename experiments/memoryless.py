"""How much of arithmetic needs no memory of the operands: the bound a cell without memory can reach.

    python experiments/memoryless.py        # writes experiments/results/memoryless.json

For operands of at most 1, 2, 3, 4 and 8 digits: the accuracy on the scored characters (the answer and its final
``.``) of the best predictor that sees only the answer so far (the most frequent next character after that prefix in
100,000 generated instances, scored on 100,000 others; with 8 digits most prefixes are unseen, so that bound is a
low estimate). A tanh RNN that learns the answers' shape but cannot keep
the operands lands near this bound, so the separation of a scale is at most about 1 / bound.
"""

from __future__ import annotations

import collections

import numpy as np
from _common import RESULTS, conditions, save

from archsearch.tasks import Difficulty, get_task


def bound(digits: int, instances: int = 100_000, seed: int = 0) -> float:
    task = get_task("arithmetic").with_difficulty(Difficulty(arithmetic_max_digits=digits))
    rng = np.random.default_rng(seed)
    answers = [task.instance(rng)[0].split("=")[1] for _ in range(2 * instances)]
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for answer in answers[:instances]:
        for i, ch in enumerate(answer):
            counts[answer[:i]][ch] += 1
    hits = total = 0
    for answer in answers[instances:]:
        for i, ch in enumerate(answer):
            seen = counts.get(answer[:i])
            hits += bool(seen) and seen.most_common(1)[0][0] == ch
            total += 1
    return hits / total


if __name__ == "__main__":
    bounds = {}
    for digits in (1, 2, 3, 4, 8):
        bounds[str(digits)] = bound(digits)
        print(f"operands of <= {digits} digits: memoryless accuracy {bounds[str(digits)]:.3f}")
    save(RESULTS / "memoryless.json", {"experiment": "memoryless", "instances": 100_000, "bounds": bounds,
                                       "conditions": conditions()})
