"""Mutation of a cell (Jozefowicz et al. 2015, §3.2): p ~ U[0, 1] sets how many transforms; invalid children redrawn.

The paper: "pick p ~ U[0, 1]; for each node, with probability p apply a random transform ... the value of p
determines the magnitude of the mutation - this way, most of the mutations are small while some are large".
Taken literally (probability p per node), a cell of 20-184 nodes would get p x nodes transforms: nearly every
child large, and more so the larger the parent. We keep the per-node draw but with probability p / nodes, so
the number of transforms in a pass is Binomial(nodes, p / nodes), about Poisson(p), whatever the graph size;
a pass that applies nothing is redrawn (a new p). Over p ~ U[0, 1] that gives one transform in about 72% of
the children, two in 22% and three or more in 6% (before invalid children are redrawn), and the larger p,
the larger the mutation. No cap: a child may carry any number of transforms.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from archsearch.errors import ArchsearchError, InvalidGraphError
from archsearch.ir import INPUTS, SOURCES, Cell, Op, output_reads_input
from archsearch.mutation._record import AppliedTransform, MutationRecord
from archsearch.mutation._transforms import Rejected, TransformContext, applicable_kinds, apply_transform

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 200  # children drawn before giving up on a parent
MAX_PASSES = 1000  # redraws of p when a pass over the nodes applied nothing

# InvalidGraphError message fragments -> rejection reason (for the statistics only)
_REASONS = (
    ("cycle", "cycle"),
    ("do not depend on the input x", "input_disconnected"),
    ("is a constant", "constant_output"),
    ("width", "width"),
    ("dangling", "dangling"),
    ("outputs for", "state_count"),
)


class MutationError(ArchsearchError):
    """No valid child could be drawn from a parent within the attempt cap."""


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator (used as is), an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _reason(err: InvalidGraphError) -> str:
    first = str(err).splitlines()[0]
    return next((reason for frag, reason in _REASONS if frag in first), "invalid")


def _one_pass(child: Cell, order: list[str], p: float, rng: np.random.Generator,
              applied: list[AppliedTransform], limit: int | None) -> None:
    """Visit ``order``; at each surviving node, with probability p / len(order) apply one applicable transform."""
    ctx: TransformContext | None = None
    per_node = p / len(order)
    for name in order:
        if limit is not None and len(applied) >= limit:
            return
        if name not in child or rng.random() >= per_node:
            continue
        ctx = ctx or TransformContext(child)
        kinds = applicable_kinds(ctx, name)
        if not kinds:
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        detail = apply_transform(ctx, kind, name, rng)
        applied.append(AppliedTransform(kind, name, detail))
        ctx = None  # the graph changed


def _draw_child(parent: Cell, rng: np.random.Generator, limit: int | None) -> tuple[Cell, float, list[AppliedTransform]]:
    """One candidate child (not yet validated) with at least one transform applied.

    Nodes are visited in a random (seeded) order, so a cap (``limit``) would not
    favour the first nodes of a topological order (layer 1 of HM-LSTM).
    """
    child = parent.copy()
    nodes = [n.name for n in child if n.op not in SOURCES]
    if not nodes:
        raise MutationError(f"cell {parent.name!r} has no operation to mutate")
    order = [nodes[i] for i in rng.permutation(len(nodes))]
    applied: list[AppliedTransform] = []
    for _ in range(MAX_PASSES):
        p = float(rng.random())
        _one_pass(child, order, p, rng, applied, limit)
        if applied:
            return child, p, applied
    raise MutationError(f"no transform applies anywhere in cell {parent.name!r}")


def _check_child(child: Cell) -> None:
    """Reject a child without operations (``h' = x``), with a constant node other than ``1``, or whose
    hidden output cannot depend on the inputs over time.

    Constant nodes (``sigmoid(1)``, ``1 + 1``, ...) only add a fixed number (the
    search space has one constant, 1), and the compiler lowers ``1`` to a Python
    float that torch ops reject. A cell without operations cannot evolve further.
    A cell whose state 0 reads x_t through no path over time (``h' = h * tanh(h)``
    beside ``c' = tanh(W x + W c)``) can learn nothing: it is rejected before any
    training (:func:`archsearch.ir.output_reads_input`).
    """
    if all(node.op in SOURCES for node in child):
        raise Rejected("no_operations")  # e.g. h' = x: nothing left to mutate
    varies: dict[str, bool] = {}
    for name in child.topological_order():
        node = child[name]
        varies[name] = node.op in INPUTS or any(varies[i] for i in node.inputs)
        if not varies[name] and node.op is not Op.ONE:
            raise Rejected("constant_node")
    if not output_reads_input(child):
        raise Rejected("no_input_path")


def _child_name(parent: Cell, child_hash: str) -> str:
    return f"{parent.name.split('~')[0]}~{child_hash[:8]}"


def mutate(
    cell: Cell,
    rng: np.random.Generator | int | None = None,
    *,
    max_transforms: int | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> tuple[Cell, MutationRecord]:
    """Mutate ``cell`` as in §3.2 of the paper; the parent is not changed.

    Draws p ~ U[0, 1], visits the non-source nodes (in an order drawn from
    ``rng``) and at each, with probability p / (number of nodes), applies one
    randomly chosen applicable transform anchored there (so about p transforms
    per pass whatever the cell's size; see the module docstring); if none
    applied, p is drawn again. Dead nodes are pruned; a child failing
    :meth:`Cell.validate`, or with a constant node other than ``1``, is
    rejected and a new one is drawn.

    Args:
        cell: the parent (must be valid).
        rng: a ``numpy.random.Generator`` (advanced in place) or an int seed;
            the same seed gives the same child.
        max_transforms: at most this many transforms per child (None: no cap).
        max_attempts: children drawn before giving up.

    Returns:
        ``(child, record)``; the child is validated and named ``<parent>~<hash8>``.

    Raises:
        InvalidGraphError: the parent is invalid.
        MutationError: no valid child within ``max_attempts`` draws.
    """
    cell.validate()
    seed = rng if isinstance(rng, int) else None
    gen = as_generator(rng)
    reasons: Counter[str] = Counter()
    for attempt in range(1, max_attempts + 1):
        try:
            child, p, applied = _draw_child(cell, gen, max_transforms)
            child.validate()
            _check_child(child)
        except Rejected as e:
            reasons[e.reason] += 1
            continue
        except InvalidGraphError as e:
            reasons[_reason(e)] += 1
            continue
        child_hash = child.structural_hash()
        child.name = _child_name(cell, child_hash)
        record = MutationRecord(p, applied, attempt, dict(reasons), cell.structural_hash(), child_hash, seed)
        child.doc = f"mutant of {cell.name}: " + "; ".join(t.describe() for t in applied)
        return child, record
    raise MutationError(
        f"no valid child of cell {cell.name!r} in {max_attempts} attempts (rejections: {dict(reasons)})"
    )
