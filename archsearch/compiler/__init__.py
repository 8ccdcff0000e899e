"""Compile cell graphs into fast ``torch.nn.Module``s (generated step code, fused matmuls)."""

from archsearch.compiler._batched import BatchedCell, BatchedCellStack
from archsearch.compiler._cache import DEFAULT_CACHE_SIZE, cache_info, cache_size, clear_caches, set_cache_size
from archsearch.compiler._codegen import BATCHED_HELPERS_SOURCE, HELPERS_SOURCE, Plan, plan_cell
from archsearch.compiler._module import CellStack, CompiledCell, compile_cell

__all__ = [
    "BATCHED_HELPERS_SOURCE",
    "DEFAULT_CACHE_SIZE",
    "HELPERS_SOURCE",
    "BatchedCell",
    "BatchedCellStack",
    "CellStack",
    "CompiledCell",
    "Plan",
    "cache_info",
    "cache_size",
    "clear_caches",
    "compile_cell",
    "plan_cell",
    "set_cache_size",
]
