"""The sequence model around a compiled cell: embed -> cell stack -> softmax (or sigmoid) head.

Every vector node of a cell has n units and the input is embedded to n units too
(paper §3.2), so the parameter count is a quadratic in n and a binary search
finds the largest n that fits the budget.
"""

from __future__ import annotations

import torch
from torch import nn

from archsearch.compiler import CellStack
from archsearch.errors import HyperParameterError
from archsearch.ir import SCALAR, Cell
from archsearch.tasks import Kind


def cell_param_count(cell: Cell, units: int, layers: int = 1) -> int:
    """Parameters of ``layers`` stacked cells with ``units`` units and n-wide input."""
    widths = cell.widths()
    total = 0
    for node in cell.linears():
        out = 1 if widths[node.name] == SCALAR else units
        total += out * units + (out if node.attr("bias") else 0)
    return total * layers


def model_param_count(cell: Cell, units: int, layers: int, num_inputs: int, num_outputs: int, symbols: bool) -> int:
    embed = num_inputs * units if symbols else num_inputs * units + units
    head = units * num_outputs + num_outputs
    return embed + cell_param_count(cell, units, layers) + head


def units_for_budget(
    cell: Cell, budget: int, layers: int, num_inputs: int, num_outputs: int, symbols: bool, min_units: int = 4
) -> int:
    """The largest n whose model has at most ``budget`` parameters (at least ``min_units``)."""
    def count(n: int) -> int:
        return model_param_count(cell, n, layers, num_inputs, num_outputs, symbols)

    if count(min_units) > budget:
        return min_units
    lo, hi = min_units, min_units
    while count(hi) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: count(lo) <= budget < count(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
    return lo


class SequenceModel(nn.Module):
    """Next-step predictor: ``forward(inputs[T,B] or [T,B,K], state) -> (logits[T,B,V], state)``."""

    def __init__(self, cell: Cell, num_inputs: int, num_outputs: int, units: int, layers: int, symbols: bool, init_scale: float):
        super().__init__()
        if cell.depth > 1:
            layers = 1  # GF-RNN and HM-LSTM already contain their layers
        self.symbols = symbols
        self.embed = nn.Embedding(num_inputs, units) if symbols else nn.Linear(num_inputs, units)
        self.cells = CellStack(cell, units, units, layers, init_scale)
        self.head = nn.Linear(units, num_outputs)
        bound = init_scale / units**0.5  # paper §3.7: every weight ~ U[-x, x]
        with torch.no_grad():
            for p in self.head.parameters():
                p.uniform_(-bound, bound)
            # The embedding stands in for a one-hot input, whose entries have unit size; drawing it
            # from U[-x, x] too would shrink x_t by another 1/sqrt(n) and stall learning (measured:
            # the paper's LSTM stays at chance on memorization for 15 epochs that way).
            self.embed.weight.uniform_(-3**0.5, 3**0.5)  # unit variance
            if not symbols:
                self.embed.bias.zero_()

    def forward(self, inputs: torch.Tensor, state=None):
        emb = self.embed(inputs)  # (T, B, n)
        hidden, state = self.cells(emb, state)  # (T, B, n)
        return self.head(hidden), state  # (T, B, V)


def build_model(cell: Cell, task, budget: int, layers: int, init_scale: float, min_units: int = 4) -> SequenceModel:
    """Size the model to ``budget`` parameters (binary search on the units) and build it."""
    if budget < 1:
        raise HyperParameterError(f"parameter budget must be positive, got {budget}")
    symbols = task.kind == Kind.SYMBOLS
    eff_layers = 1 if cell.depth > 1 else layers
    units = units_for_budget(cell, budget, eff_layers, task.num_inputs, task.num_outputs, symbols, min_units)
    return SequenceModel(cell, task.num_inputs, task.num_outputs, units, eff_layers, symbols, init_scale)
