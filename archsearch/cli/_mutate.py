"""``archsearch mutate``: draw mutants of a cell and print their equations and mutation records."""

from __future__ import annotations

import argparse
import json

from archsearch.cli._cells import load_cell
from archsearch.cli._options import int_range, seed_int

MAX_COUNT = 10_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mutate", help="draw mutants of a cell (the paper's six transforms)")
    p.add_argument("cell", help="a seed name or a cell JSON file")
    p.add_argument("--seed", type=seed_int, default=0, help="rng seed (same seed, same children; default 0)")
    p.add_argument("--count", type=int_range(1, MAX_COUNT), default=1, help="number of children to draw (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per child: {index, cell, record}")
    p.set_defaults(func=run_mutate)


def run_mutate(args: argparse.Namespace) -> int:
    from archsearch.mutation import as_generator, mutate

    parent = load_cell(args.cell)
    rng = as_generator(args.seed)
    for i in range(args.count):
        child, record = mutate(parent, rng)
        record.seed = args.seed
        if args.json:
            print(json.dumps({"index": i, "cell": child.to_dict(), "record": record.to_dict()}, sort_keys=True))
            continue
        if i:
            print()
        print(f"# child {i}: {child.name}  ({len(child)} nodes; p = {record.p:.3f}; "
              f"{record.attempts} attempt{'s' if record.attempts != 1 else ''})")
        print(record.describe())
        print()
        print(child.equations())
    return 0
