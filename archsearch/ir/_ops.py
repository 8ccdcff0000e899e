"""The closed set of node operations, with arity and torch lowering in one table.

Mutations ask property sets (``ACTIVATIONS``, ``BINARY``, ``COMMUTATIVE``) rather
than listing op names, so adding an op here is the only change most passes need.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

VECTOR = "n"  # width of every vector node: the cell's number of units
SCALAR = "1"  # width of a scalar gate (GF-RNN global reset, HM-LSTM boundary)
WIDTHS = (VECTOR, SCALAR)


class Op(str, enum.Enum):
    """Node operations of a cell graph."""

    INPUT = "input"  # x_t
    STATE = "state"  # a state at t-1
    ONE = "one"  # the constant 1 (for 1 - z)
    LINEAR = "linear"  # W v + b
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    IDENTITY = "identity"
    HARD_SIGMOID = "hard_sigmoid"
    STEP = "step"  # 1[v > 0.5] with straight-through gradient
    ADD = "add"
    MUL = "mul"
    SUB = "sub"


@dataclass(frozen=True)
class OpInfo:
    arity: int
    lowering: str  # a Python expression template over {0}, {1}; "" for sources and linears
    symbol: str  # how the equation printer writes it


OPS: dict[Op, OpInfo] = {
    Op.INPUT: OpInfo(0, "", "x"),
    Op.STATE: OpInfo(0, "", "state"),
    Op.ONE: OpInfo(0, "", "1"),
    Op.LINEAR: OpInfo(1, "", "W"),
    Op.TANH: OpInfo(1, "torch.tanh({0})", "tanh"),
    Op.SIGMOID: OpInfo(1, "torch.sigmoid({0})", "σ"),
    Op.RELU: OpInfo(1, "torch.relu({0})", "ReLU"),
    Op.IDENTITY: OpInfo(1, "{0}", "id"),
    Op.HARD_SIGMOID: OpInfo(1, "hard_sigmoid({0}, {slope})", "hard_σ"),
    Op.STEP: OpInfo(1, "step_st({0})", "step"),
    Op.ADD: OpInfo(2, "{0} + {1}", "+"),
    Op.MUL: OpInfo(2, "{0} * {1}", "⊙"),
    Op.SUB: OpInfo(2, "{0} - {1}", "-"),
}

SOURCES = frozenset({Op.INPUT, Op.STATE, Op.ONE})
INPUTS = frozenset({Op.INPUT, Op.STATE})
ACTIVATIONS = frozenset({Op.TANH, Op.SIGMOID, Op.RELU, Op.IDENTITY, Op.HARD_SIGMOID, Op.STEP})
UNARY = ACTIVATIONS | {Op.LINEAR}
BINARY = frozenset({Op.ADD, Op.MUL, Op.SUB})
ELEMENTWISE = BINARY
COMMUTATIVE = frozenset({Op.ADD, Op.MUL})

# Allowed attributes per op and their defaults; validation rejects anything else.
ATTR_DEFAULTS: dict[Op, dict[str, object]] = {
    Op.STATE: {"index": 0, "width": VECTOR},
    Op.LINEAR: {"width": VECTOR, "diag": 0.0, "bias": True, "bias_init": 0.0},
    Op.HARD_SIGMOID: {"slope": None},  # None: the module's annealed `slope` buffer
}


def default_attrs(op: Op) -> dict[str, object]:
    """A fresh copy of the default attributes of ``op``."""
    return dict(ATTR_DEFAULTS.get(op, {}))
