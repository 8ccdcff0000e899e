"""``nn.Module``s built from cell graphs: one layer (:class:`CompiledCell`) and a stack (:class:`CellStack`)."""

from __future__ import annotations

import itertools
import linecache
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.compiler._cache import cached_plan_entry, cached_step
from archsearch.compiler._codegen import HELPERS_SOURCE, Plan, plan_cell
from archsearch.errors import CompileError
from archsearch.ir import SCALAR, Cell

State = tuple[torch.Tensor, ...]
DeferredGroup = tuple[str, int, int, int]  # (param, state index, first column in xp, width)
_counter = itertools.count()
_helpers: dict[str, object] = {"torch": torch, "F": F}
exec(compile(HELPERS_SOURCE, "<archsearch-helpers>", "exec"), _helpers)


def _exec_step(source: str, label: str, helpers: dict[str, object] = _helpers) -> Callable:
    """Compile generated source under a unique file name so tracebacks show the generated line.

    Cached per process by (source, label) in a bounded LRU (:mod:`archsearch.compiler._cache`):
    a cell compiles once however many models use it (the search builds one model per
    setting), and equal cells share one code object.
    """

    def build() -> tuple[str, Callable]:
        filename = f"<archsearch-cell-{label}-{next(_counter)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = dict(helpers)
        try:
            exec(compile(source, filename, "exec"), namespace)
        except BaseException:
            linecache.cache.pop(filename, None)
            raise
        return filename, namespace["step"]

    return cached_step((source, label), build)


def cached_plan(cell: Cell, hidden_size: int, batched: bool = False) -> Plan:
    """``plan_cell`` once per (cell's canonical JSON, size, batched) and process (a bounded LRU)."""
    return cached_plan_entry((cell.to_json(), hidden_size, batched), lambda: plan_cell(cell, hidden_size, batched))


def x_projection_bias(plan: Plan, param: str, get: Callable[[str], torch.Tensor | None]) -> torch.Tensor | None:
    """Bias of x group ``param``'s projection: its own bias plus the folded partners' biases.

    ``get(name)`` returns a parameter or None; shapes may carry a leading slice dimension
    (batched), so everything indexes the last dimension.
    """
    own = get(f"bias_{param}")
    folded = [(start, width, get(f"bias_{p}")) for p, (xg, start, width) in plan.folded.items() if xg == param]
    folded = sorted((start, width, b) for start, width, b in folded if b is not None)
    if not folded:
        return own
    base = own if own is not None else get(f"weight_{param}").new_zeros(get(f"weight_{param}").shape[:-1])
    pieces, col = [], 0
    for start, width, partner_bias in folded:
        pieces += [base[..., col:start], base[..., start : start + width] + partner_bias[..., :width]]
        col = start + width
    pieces.append(base[..., col:])
    return torch.cat(pieces, dim=-1)


def deferred_groups(plan: Plan) -> list[DeferredGroup]:
    """Recurrent weight groups whose gradient can be taken once per window (see :class:`DeferredWeightGrads`).

    A folded group (step: ``addmm(xp_p, s, W_p.t())``) that reads a state ``s``: returns
    ``(param, state index, first column in xp, width)`` for each.
    """
    x_starts, col = {}, 0
    for g in plan.groups:
        if g.source == "x":
            x_starts[g.param] = col
            col += sum(plan.offsets[m][2] for m in g.members)
    sources = {g.param: g.source for g in plan.groups}
    return [
        (param, plan.state_names.index(sources[param]), x_starts[xg] + start, width)
        for param, (xg, start, width) in plan.folded.items()
        if sources[param] in plan.state_names
    ]


class DeferredWeightGrads(torch.autograd.Function):
    """Hand ``xp`` to the loop unchanged; in backward, give each recurrent weight its gradient in one matmul.

    During the window the step multiplies by a detached copy of ``W_p``, so each step's backward
    computes only the gradient of the state (one small matmul) instead of also ``dW_p`` (another
    small matmul and an accumulation). The step's product ``addmm(xp_p[t], s_t, W_p.t())`` has the
    gradient of ``xp_p[t]``, so ``dW_p = sum_t dxp_p[t]^T s_t``: one ``(width, T*B) @ (T*B, H)``
    matmul per window, from the states the loop records in ``seen``. Tensors may carry a leading
    slice dimension K (batched settings): then the matmul is a ``bmm``.
    """

    @staticmethod
    def forward(ctx, xp, columns, seen, *weights):
        ctx.columns, ctx.seen = columns, seen  # seen[i]: the state read by group i at every step (filled by the loop)
        return xp.view_as(xp)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grads = []
        for (start, width), states in zip(ctx.columns, ctx.seen):
            lead = grad.shape[:-3]  # () or (K,)
            g = grad[..., start : start + width].reshape(*lead, -1, width)  # ([K,] T*B, width)
            s = torch.stack(states, dim=len(lead)).reshape(*lead, g.shape[-2], -1)  # ([K,] T*B, H)
            grads.append(g.transpose(-1, -2) @ s)
        return (grad, None, None, *grads)


class _StepView:
    """What the step sees as ``self`` while weight gradients are deferred: the module, with the
    deferred weights detached (attributes it does not override come from the module)."""

    def __init__(self, module: nn.Module, detached: dict[str, torch.Tensor]):
        self._module = module
        self.__dict__.update(detached)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def run_window(
    module: nn.Module,
    step: Callable,
    xs: torch.Tensor,
    xp: torch.Tensor,
    state: State,
    groups: list[DeferredGroup],
    time_dim: int,
) -> tuple[torch.Tensor, State]:
    """The recurrent loop shared by the unbatched and the batched layer: returns (outputs, final state).

    With gradients enabled, the weights of ``groups`` (see :func:`deferred_groups`) get their gradient
    once per window through :class:`DeferredWeightGrads`.
    """
    weights = [module.get_parameter(f"weight_{g[0]}") for g in groups]
    view = module
    if groups and torch.is_grad_enabled() and any(w.requires_grad for w in weights):
        seen: list[list[torch.Tensor]] = [[] for _ in groups]
        xp = DeferredWeightGrads.apply(xp, [(g[2], g[3]) for g in groups], seen, *weights)
        view = _StepView(module, {f"weight_{g[0]}": w.detach() for g, w in zip(groups, weights)})
    else:
        seen = None
    outputs = []
    # unbind, not x[t]: T selects would each back-propagate a zero-filled gradient of the whole window (O(T^2))
    for x_t, xp_t in zip(xs.unbind(time_dim), xp.unbind(time_dim)):
        if seen is not None:
            for states, g in zip(seen, groups):
                states.append(state[g[1]].detach())  # detached: ctx must not hold the graph that holds ctx
        state = step(view, x_t, xp_t, *state)
        outputs.append(state[0])
    return torch.stack(outputs, dim=time_dim), state


class CompiledCell(nn.Module):
    """One layer of a cell: ``forward(x[T,B,D], state) -> (y[T,B,H], state)``.

    ``self.code`` holds the generated step function; parameters are one weight
    matrix (and bias) per source node, shared by every linear reading it.
    """

    def __init__(self, cell: Cell, input_size: int, hidden_size: int, init_scale: float = 1.0):
        super().__init__()
        cell.validate()
        if cell.uses_raw_x() and input_size != hidden_size:
            raise CompileError(
                f"cell {cell.name!r} uses x_t without a linear map, so it needs input_size == hidden_size "
                f"(got {input_size} and {hidden_size})"
            )
        if input_size < 1 or hidden_size < 1:
            raise CompileError(f"sizes must be positive, got input_size={input_size}, hidden_size={hidden_size}")
        self.cell_name = cell.name
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.plan: Plan = cached_plan(cell, hidden_size)
        self.state_widths = [1 if s.width == SCALAR else hidden_size for s in cell.states]
        self._linear_init = {n.name: (float(n.attr("diag")), float(n.attr("bias_init"))) for n in cell.linears()}
        for g in self.plan.groups:
            rows = sum(self.plan.offsets[m][2] for m in g.members)
            cols = input_size if g.source == "x" else hidden_size
            self.register_parameter(f"weight_{g.param}", nn.Parameter(torch.empty(rows, cols)))
            if g.bias:
                self.register_parameter(f"bias_{g.param}", nn.Parameter(torch.empty(rows)))
        if self.plan.uses_slope:
            self.register_buffer("slope", torch.tensor(1.0))
        self.code = self.plan.source
        self._step = _exec_step(self.code, cell.name)
        self._deferred = deferred_groups(self.plan)
        self.reset_parameters(init_scale)

    # ---------------------------------------------------------------- weights
    def reset_parameters(self, init_scale: float = 1.0) -> None:
        """U[-x, x] with x = init_scale / sqrt(hidden_size); then each linear's diagonal offset and bias init."""
        bound = init_scale / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
            for name, (diag, bias_init) in self._linear_init.items():
                weight, bias = self.linear_params(name)
                if diag:
                    k = min(weight.shape)
                    weight[torch.arange(k), torch.arange(k)] += diag
                if bias is not None and bias_init:
                    bias += bias_init

    def linear_params(self, node: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views ``(W [out, in], b [out] or None)`` of linear node ``node`` inside the fused parameters."""
        if node not in self.plan.offsets:
            raise KeyError(f"{node!r} is not a linear node of cell {self.cell_name!r}")
        param, start, width = self.plan.offsets[node]
        weight = getattr(self, f"weight_{param}")[start : start + width]
        bias = getattr(self, f"bias_{param}", None)
        return weight, (None if bias is None else bias[start : start + width])

    def enable_torch_compile(self) -> None:
        """Run the whole unrolled window through ``torch.compile`` (inductor).

        Off by default: on a 2-core CPU it costs ~55 s of compilation per cell and size
        and saves ~20% of a train step (see the README's Speed section), so it only pays
        after thousands of steps with one size in one process.
        """
        self._deferred = []  # the plain loop: dynamo traces it whole (no autograd.Function with side effects)
        self._run = torch.compile(CompiledCell._run.__get__(self), dynamic=False)

    def linear_nodes(self) -> list[str]:
        return list(self.plan.offsets)

    # ---------------------------------------------------------------- running
    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        ref = next(self.parameters(), None)  # a cell may have no parameters at all (h' = tanh(x + h))
        device = device or (ref.device if ref is not None else None)
        dtype = dtype or (ref.dtype if ref is not None else None)
        return tuple(torch.zeros(batch, w, device=device, dtype=dtype) for w in self.state_widths)

    def input_projections(self, x: torch.Tensor) -> torch.Tensor:
        """All linears of x for every step at once: (T, B, P)."""
        get = lambda name: getattr(self, name, None)  # noqa: E731
        parts = [
            F.linear(x, self.get_parameter(f"weight_{g.param}"), x_projection_bias(self.plan, g.param, get))
            for g in self.plan.groups
            if g.source == "x"
        ]
        if not parts:
            return x.new_zeros(x.shape[0], x.shape[1], 0)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input of shape (T, B, {self.input_size}), got {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[1], x.device, x.dtype)
        return self._run(x, state)

    def _run(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The loop; :meth:`enable_torch_compile` replaces it with a copy compiled by ``torch.compile``."""
        xp = self.input_projections(x)  # (T, B, P)
        return run_window(self, self._step, x, xp, state, self._deferred, time_dim=0)


class CellStack(nn.Module):
    """``num_layers`` compiled layers; layer l+1 reads layer l's state 0 (its ``h``).

    ``forward(x[T,B,D], state=None) -> (y[T,B,H], state)`` where ``state`` is a
    tuple with one tensor ``[num_layers, B, width_k]`` per state of the cell.
    """

    def __init__(self, cell: Cell, input_size: int, hidden_size: int, num_layers: int = 1, init_scale: float = 1.0):
        super().__init__()
        if num_layers < 1:
            raise CompileError(f"num_layers must be at least 1, got {num_layers}")
        if cell.depth > 1 and num_layers != 1:
            raise CompileError(
                f"cell {cell.name!r} already contains {cell.depth} layers; it cannot be stacked (num_layers={num_layers})"
            )
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            CompiledCell(cell, input_size if i == 0 else hidden_size, hidden_size, init_scale) for i in range(num_layers)
        )

    @property
    def code(self) -> str:
        return self.layers[0].code

    def reset_parameters(self, init_scale: float = 1.0) -> None:
        for layer in self.layers:
            layer.reset_parameters(init_scale)

    def enable_torch_compile(self) -> None:
        """See :meth:`CompiledCell.enable_torch_compile`."""
        for layer in self.layers:
            layer.enable_torch_compile()

    def set_slope(self, slope: float) -> None:
        """Set the hard-sigmoid slope ``a`` of every layer (HM-LSTM slope annealing)."""
        for layer in self.layers:
            if hasattr(layer, "slope"):
                layer.slope.fill_(slope)

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        per_layer = [layer.initial_state(batch, device, dtype) for layer in self.layers]
        return tuple(torch.stack(s) for s in zip(*per_layer))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        new_states = []
        for i, layer in enumerate(self.layers):
            layer_state = None if state is None else tuple(s[i] for s in state)
            x, layer_state = layer(x, layer_state)
            new_states.append(layer_state)
        return x, tuple(torch.stack(s) for s in zip(*new_states))


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

    Raises:
        InvalidGraphError: the graph is invalid.
        CompileError: sizes do not fit the cell.
    """
    if seed is None:
        stack = CellStack(cell, input_size, hidden_size, num_layers, init_scale)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stack = CellStack(cell, input_size, hidden_size, num_layers, init_scale)
    stack = stack if dtype is None else stack.to(dtype)
    if torch_compile:
        stack.enable_torch_compile()
    return stack
