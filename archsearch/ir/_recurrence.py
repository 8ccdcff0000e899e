"""What a cell can compute over time: the dependencies of its states through the unrolled recurrence."""

from __future__ import annotations

import networkx as nx

from archsearch.ir._graph import Cell
from archsearch.ir._ops import Op


def input_reaches_states(cell: Cell) -> list[bool]:
    """For each state k: can its value at some step t depend on the inputs x_1..x_t through any path?

    State k at step t is output k of the step, a function of x_t and the states at t-1. It depends on the
    inputs if output k reads x_t directly, or reads a state at t-1 that depends on them: a fixed point over
    the states (at most one pass per state). A cell whose state 0 (the hidden output h that feeds the next
    layer and the softmax) never depends on the inputs predicts the same thing whatever it reads.
    """
    g = cell.nx_graph()
    reads: list[tuple[bool, set[int]]] = []  # per output: (reads x_t, indices of the states at t-1 it reads)
    for out in cell.outputs:
        sources = {out} | nx.ancestors(g, out)
        nodes = [cell[n] for n in sources]
        states = {int(n.attr("index")) for n in nodes if n.op is Op.STATE}
        reads.append((any(n.op is Op.INPUT for n in nodes), states))
    reached = [direct for direct, _ in reads]
    changed = True
    while changed:
        changed = False
        for k, (_, states) in enumerate(reads):
            if not reached[k] and any(reached[j] for j in states):
                reached[k] = changed = True
    return reached


def output_reads_input(cell: Cell) -> bool:
    """True if the cell's hidden output (state 0) can depend on the inputs over time (see
    :func:`input_reaches_states`); a cell for which it is False can learn nothing."""
    return input_reaches_states(cell)[0]
