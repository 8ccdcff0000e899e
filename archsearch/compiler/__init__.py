"""Compile cell graphs into fast ``torch.nn.Module``s (generated step code, fused matmuls)."""

from archsearch.compiler._codegen import HELPERS_SOURCE, Plan, plan_cell
from archsearch.compiler._module import CellStack, CompiledCell, compile_cell

__all__ = ["HELPERS_SOURCE", "CellStack", "CompiledCell", "Plan", "compile_cell", "plan_cell"]
