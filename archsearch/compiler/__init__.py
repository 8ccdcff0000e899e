"""Compile cell graphs into fast ``torch.nn.Module``s (generated step code, fused matmuls)."""

from archsearch.compiler._batched import BatchedCell, BatchedCellStack
from archsearch.compiler._cache import DEFAULT_CACHE_SIZE, cache_info, cache_size, clear_caches, set_cache_size
from archsearch.compiler._codegen import Plan, plan_cell
from archsearch.compiler._module import CellStack, CompiledCell, compile_cell
from archsearch.compiler._runtime import Layout, RecurrentLayer, RecurrentStack

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "BatchedCell",
    "BatchedCellStack",
    "CellStack",
    "CompiledCell",
    "Layout",
    "Plan",
    "RecurrentLayer",
    "RecurrentStack",
    "cache_info",
    "cache_size",
    "clear_caches",
    "compile_cell",
    "plan_cell",
    "set_cache_size",
]
