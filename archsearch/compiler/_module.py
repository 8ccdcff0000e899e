"""``nn.Module``s built from cell graphs: one layer (:class:`CompiledCell`) and a stack (:class:`CellStack`).

Both are the runtime's classes (:mod:`archsearch.compiler._runtime`, what ``export`` copies) built
from a :class:`Cell`: the plan gives the layout, the generated step runs in the runtime's namespace.
"""

from __future__ import annotations

import itertools
import linecache
from typing import Callable

import torch

from archsearch.compiler import _runtime
from archsearch.compiler._cache import cached_plan_entry, cached_step
from archsearch.compiler._codegen import Plan, plan_cell
from archsearch.compiler._native import NativeSteps
from archsearch.compiler._runtime import RecurrentLayer, RecurrentStack, Window
from archsearch.errors import CompileError
from archsearch.ir import Cell

State = tuple[torch.Tensor, ...]
_counter = itertools.count()
_helpers: dict[str, object] = dict(vars(_runtime))  # the step runs among the runtime's names, as in an export


def _exec_code(plan: Plan, label: str, helpers: dict[str, object] = _helpers) -> tuple[Callable, Window]:
    """The plan's generated functions: the step, and the window (``step_record`` and ``window_backward``).

    They are compiled as one source under a unique file name, so tracebacks show the generated
    line, and cached per process by (source, label) in a bounded LRU (:mod:`archsearch.compiler._cache`):
    a cell compiles once however many models use it (the search builds one model per setting),
    and equal cells share one code object.
    """
    assert plan.window is not None and plan.layout is not None
    source = "\n\n".join([plan.source, plan.record_source, plan.window.source, plan.native.source if plan.native else ""])

    def build() -> tuple[str, tuple[Callable, Window]]:
        filename = f"<archsearch-cell-{label}-{next(_counter)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = dict(helpers)
        try:
            exec(compile(source, filename, "exec"), namespace)
        except BaseException:
            linecache.cache.pop(filename, None)
            raise
        native = plan.native and NativeSteps(namespace["window_native"], namespace["window_record_native"],
                                             namespace["window_backward_native"], plan.native.c_source,
                                             plan.native.stages, plan.layout.raw_x)
        window = Window(namespace["step_record"], namespace["window_backward"], plan.window.params, plan.layout.raw_x,
                        native)
        return filename, (namespace["step"], window)

    return cached_step((source, label), build)


def cached_plan(cell: Cell, hidden_size: int, batched: bool = False) -> Plan:
    """``plan_cell`` once per (cell's canonical JSON, size, batched) and process (a bounded LRU)."""
    return cached_plan_entry((cell.to_json(), hidden_size, batched), lambda: plan_cell(cell, hidden_size, batched))


class CompiledCell(RecurrentLayer):
    """One layer of a cell: ``forward(x[T,B,D], state) -> (y[T,B,H], state)`` (see :class:`RecurrentLayer`).

    ``self.code`` holds the generated step function; ``self.plan`` the parameter layout.
    """

    def __init__(self, cell: Cell, input_size: int, hidden_size: int, init_scale: float = 1.0, bias: bool = True):
        cell.validate()
        plan = cached_plan(cell, hidden_size)
        step, window = _exec_code(plan, cell.name)
        try:
            super().__init__(plan.layout, step, input_size, hidden_size, bias, init_scale, window)
        except ValueError as e:
            raise CompileError(f"cell {cell.name!r}: {e}") from e
        self.cell_name = cell.name
        self.plan: Plan = plan
        self.code = plan.source


class CellStack(RecurrentStack):
    """``num_layers`` compiled layers with nn.LSTM's interface (see :class:`RecurrentStack`).

    ``forward(x[T,B,D], state=None) -> (y[T,B,H], state)`` where ``state`` is a tuple with
    one tensor ``[num_layers, B, width_k]`` per state of the cell.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        init_scale: float = 1.0,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
    ):
        self.cell = cell
        plan = cached_plan(cell.validate(), hidden_size)
        try:
            super().__init__(plan.layout, None, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                             init_scale=init_scale)  # fmt: skip
        except ValueError as e:
            raise CompileError(f"cell {cell.name!r}: {e}") from e

    def _new_layer(self, step, input_size: int, bias: bool, init_scale: float) -> CompiledCell:
        return CompiledCell(self.cell, input_size, self.hidden_size, init_scale, bias)

    @property
    def code(self) -> str:
        return self.layers[0].code


def compile_cell(
    cell: Cell,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    init_scale: float = 1.0,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    torch_compile: bool = False,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
) -> CellStack:
    """Compile a validated cell into a :class:`CellStack`.

    Args:
        cell: the cell graph (validated here).
        input_size: features of x; cells that use x without a linear need input_size == hidden_size.
        hidden_size: units n of every vector node.
        num_layers: layers to stack (only for cells of depth 1).
        init_scale: weights ~ U[-x, x], x = init_scale / sqrt(hidden_size) (paper §3.7).
        seed: if given, initialise from ``torch.Generator`` state seeded with it (reproducible).
        dtype: parameter dtype (default: torch's default).
        torch_compile: run each layer's window through ``torch.compile`` (slow to compile; off by default).
        bias, batch_first, dropout: as nn.LSTM's (``bias=False`` is refused for cells with bias inits).

    Raises:
        InvalidGraphError: the graph is invalid.
        CompileError: sizes do not fit the cell.
    """
    options = {"bias": bias, "batch_first": batch_first, "dropout": dropout}
    if seed is None:
        stack = CellStack(cell, input_size, hidden_size, num_layers, init_scale, **options)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stack = CellStack(cell, input_size, hidden_size, num_layers, init_scale, **options)
    stack = stack if dtype is None else stack.to(dtype)
    if torch_compile:
        stack.enable_torch_compile()
    return stack
