"""The cell graph IR: ops, graphs, the equation DSL and the printer (no torch here)."""

from archsearch.ir._dsl import parse_cell
from archsearch.ir._graph import JSON_FORMAT, Cell, Node, StateSpec
from archsearch.ir._recurrence import input_reaches_states, output_reads_input
from archsearch.ir._ops import (
    ACTIVATIONS,
    BINARY,
    COMMUTATIVE,
    ELEMENTWISE,
    INPUTS,
    OPS,
    SCALAR,
    SOURCES,
    UNARY,
    VECTOR,
    Op,
)

__all__ = [
    "ACTIVATIONS",
    "BINARY",
    "COMMUTATIVE",
    "ELEMENTWISE",
    "INPUTS",
    "JSON_FORMAT",
    "OPS",
    "SCALAR",
    "SOURCES",
    "UNARY",
    "VECTOR",
    "Cell",
    "Node",
    "Op",
    "StateSpec",
    "input_reaches_states",
    "output_reads_input",
    "parse_cell",
]
