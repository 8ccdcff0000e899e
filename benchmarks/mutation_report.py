"""Mutation engine report: transforms per child, rejection rate, graph size after 10 generations, duplicates, speed.

Usage:
    python benchmarks/mutation_report.py                       # 10,000 mutations per seed (slow)
    python benchmarks/mutation_report.py --count 300 --chains 30 --fingerprints 150
    python benchmarks/mutation_report.py --seeds lstm gru

Per seed: ``count`` independent children of the seed (how many carry 1, 2, 3 or more
transforms, rejection rate, structural duplicates, mutations per second), the first ``fingerprints`` of them also
fingerprinted (functional duplicates of the parent or of an earlier child), and
``chains`` chains of ``generations`` successive mutations (node count at the end).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

import archsearch
from archsearch.errors import ArchsearchError
from archsearch.mutation import fingerprint, mutate

# ---------------------------------------------------------------- config
DEFAULT_COUNT = 10_000
DEFAULT_CHAINS = 200
DEFAULT_GENERATIONS = 10
DEFAULT_FINGERPRINTS = 1_000


@dataclass
class Row:
    seed: str
    nodes: int
    count: int
    rejection_rate: float
    per_second: float
    structural_dup: float
    fingerprinted: int
    functional_dup: float
    uncompilable: int
    sizes: np.ndarray
    transforms: Counter[int]  # children by number of transforms

    def markdown(self) -> str:
        p10, p50, p90 = np.percentile(self.sizes, [10, 50, 90])
        share = [100 * self.transforms[k] / self.count for k in (1, 2)]
        share.append(100 * sum(v for k, v in self.transforms.items() if k >= 3) / self.count)
        return (
            f"| {self.seed} | {self.nodes} | {self.count} | {share[0]:.0f}% / {share[1]:.0f}% / {share[2]:.0f}% "
            f"(max {max(self.transforms)}) | {100 * self.rejection_rate:.1f}% | {self.per_second:.0f} "
            f"| {100 * self.structural_dup:.1f}% | {100 * self.functional_dup:.1f}% (of {self.fingerprinted}) "
            f"| {self.uncompilable} "
            f"| {p10:.0f} / {p50:.0f} / {p90:.0f} (max {self.sizes.max()}) |"
        )


HEADER = (
    "| seed | nodes | mutations | transforms 1 / 2 / 3+ | rejected | mutations/s | structural dups | functional dups "
    "| not compiled | nodes after 10 gens p10 / p50 / p90 |\n|---|---|---|---|---|---|---|---|---|---|"
)


def _children(parent: archsearch.Cell, count: int, rng: np.random.Generator) -> tuple[list, float]:
    start = time.perf_counter()
    out = [mutate(parent, rng) for _ in range(count)]
    return out, time.perf_counter() - start


def _dup_fraction(keys: list[str], parent_key: str) -> float:
    seen = {parent_key}
    dups = 0
    for key in keys:
        dups += key in seen
        seen.add(key)
    return dups / max(1, len(keys))


def _fingerprint(cell: archsearch.Cell) -> str | None:
    """The fingerprint, or None where the compiler fails (a known bug with a linear of a linear)."""
    try:
        return fingerprint(cell)
    except (ArchsearchError, AssertionError, NameError):
        return None


def _chain_sizes(parent: archsearch.Cell, chains: int, generations: int, rng: np.random.Generator) -> np.ndarray:
    sizes = []
    for _ in range(chains):
        cell = parent
        for _ in range(generations):
            cell, _ = mutate(cell, rng)
        sizes.append(len(cell))
    return np.array(sizes)


def report_seed(name: str, args: argparse.Namespace) -> Row:
    parent = archsearch.seed(name)
    rng = np.random.default_rng(args.rng_seed)
    children, seconds = _children(parent, args.count, rng)
    attempts = sum(r.attempts for _, r in children)
    rejections = sum(r.rejections for _, r in children)
    structural = _dup_fraction([r.child_hash for _, r in children], parent.structural_hash())
    fps = [_fingerprint(c) for c, _ in children[: args.fingerprints]]
    compiled = [fp for fp in fps if fp is not None]
    functional = _dup_fraction(compiled, fingerprint(parent))
    sizes = _chain_sizes(parent, args.chains, args.generations, rng)
    transforms = Counter(len(r.transforms) for _, r in children)
    return Row(name, len(parent), args.count, rejections / attempts, args.count / seconds,
               structural, len(compiled), functional, len(fps) - len(compiled), sizes, transforms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", default=None, help="seed cells (default: all)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="children per seed")
    parser.add_argument("--chains", type=int, default=DEFAULT_CHAINS, help="chains per seed")
    parser.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS, help="mutations per chain")
    parser.add_argument("--fingerprints", type=int, default=DEFAULT_FINGERPRINTS, help="children fingerprinted")
    parser.add_argument("--rng-seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny float64 runs: threads only add overhead

    print(HEADER, flush=True)
    for name in args.seeds or archsearch.seeds():
        print(report_seed(name, args).markdown(), flush=True)


if __name__ == "__main__":
    main()
