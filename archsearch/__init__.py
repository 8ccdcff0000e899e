"""archsearch: evolutionary search for recurrent cells.

Importing this package does not import torch; ``compile`` loads it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archsearch.errors import ArchsearchError
from archsearch.ir import Cell
from archsearch.search_spaces import seed, seeds

if TYPE_CHECKING:
    import numpy as np

    from archsearch.compiler import CellStack
    from archsearch.mutation import MutationRecord

__version__ = "0.1.0"
__all__ = ["ArchsearchError", "Cell", "compile", "mutate", "seed", "seeds", "__version__"]


def compile(cell: Cell, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs) -> "CellStack":
    """Compile ``cell`` into a ``torch.nn.Module``; see :func:`archsearch.compiler.compile_cell`."""
    from archsearch.compiler import compile_cell

    return compile_cell(cell, input_size, hidden_size, num_layers, **kwargs)


def mutate(cell: Cell, rng: "np.random.Generator | int | None" = None, **kwargs) -> "tuple[Cell, MutationRecord]":
    """A child of ``cell`` by the paper's six transforms; see :func:`archsearch.mutation.mutate`."""
    from archsearch.mutation import mutate as _mutate

    return _mutate(cell, rng, **kwargs)
