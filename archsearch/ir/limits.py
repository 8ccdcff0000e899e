"""Limits on the size and values of a cell, in one place.

Every cell that enters archsearch (a JSON file, a database row, the DSL, a
mutation) is checked against these by :meth:`archsearch.ir.Cell.validate` and
:meth:`archsearch.ir.Cell.from_json`. They are far above the seed cells (the
HM-LSTM has 184 nodes and a longest path of 44 ops) and keep every command's
time, memory and recursion bounded: the equation printer recurses along paths.
"""

from __future__ import annotations

MAX_NODES = 1000  # nodes, inputs and states included
MAX_PATH = 200  # ops on the longest path from an input to an output
MAX_STATES = 32
MAX_DEPTH = 8  # layers one graph may contain (``depth``; GF-RNN and HM-LSTM have 3)
MAX_NAME_LENGTH = 64  # characters in a node or state name
MAX_CELL_NAME_LENGTH = 128  # characters in the cell's name (any text; escaped wherever it is written)
MAX_DOC_LENGTH = 10_000  # characters in the cell's doc string
MAX_JSON_CHARS = 1_000_000  # characters of a cell's JSON text
MAX_JSON_NESTING = 16  # nesting of arrays and objects in a cell's JSON (a valid cell needs 4)

# Closed ranges of the numeric node attributes (all must be finite).
DIAG_RANGE = (-10.0, 10.0)  # linear: added to the diagonal of W at init (the paper's Linear(a, x))
BIAS_INIT_RANGE = (-10.0, 10.0)  # linear: the bias's initial value
SLOPE_RANGE = (0.0, 100.0)  # hard_sigmoid: a fixed slope, > 0 (null: annealed)
