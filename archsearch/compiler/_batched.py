"""K settings of one cell as one stacked module: weights ``(K, out, in)``, batched matmuls.

The search trains ~20 hyper-parameter settings of every cell; at the search's
sizes one setting leaves most of the hardware idle. :class:`BatchedCellStack`
holds K independent copies of a :class:`CellStack` (same cell, layers and
units; any weights) and runs them together: tensors carry a leading slice
dimension K, every linear map is a ``torch.bmm``/``torch.baddbmm`` and the step
is the same generated code as the unbatched one, written with ``batched=True``.
Nothing mixes slices, so a slice that diverges (inf/NaN) cannot touch the others.
"""

from __future__ import annotations

import torch
from torch import nn

from archsearch.compiler import _native
from archsearch.compiler._codegen import Plan
from archsearch.compiler._module import CellStack, _exec_code, cached_plan
from archsearch.compiler._runtime import blinear, deferred_groups, run_window, units, x_projection_bias
from archsearch.errors import CompileError
from archsearch.ir import SCALAR, Cell

State = tuple[torch.Tensor, ...]


class BatchedCell(nn.Module):
    """One layer for K slices: ``forward(x[K,T,B,D], state) -> (y[K,T,B,H], state)``.

    Parameters have the unbatched layer's names and shapes with a leading K
    (``weight_h``: ``(K, rows, cols)``); the hard-sigmoid slope is one per slice.
    """

    def __init__(self, cell: Cell, k: int, input_size: int, hidden_size: int):
        super().__init__()
        self.k, self.input_size, self.hidden_size = k, input_size, hidden_size
        self.plan: Plan = cached_plan(cell, hidden_size, batched=True)
        self.state_widths = [1 if s.width == SCALAR else hidden_size for s in cell.states]
        for g in self.plan.layout.groups:
            rows = units(g.rows, hidden_size)
            cols = input_size if g.source == "x" else hidden_size
            self.register_parameter(f"weight_{g.param}", nn.Parameter(torch.zeros(k, rows, cols)))
            if g.bias:
                self.register_parameter(f"bias_{g.param}", nn.Parameter(torch.zeros(k, rows)))
        if self.plan.uses_slope:
            self.register_buffer("slope", torch.ones(k, 1, 1))  # broadcasts against (K, B, 1)
        self.code = self.plan.source
        self._step, self._generated_window = _exec_code(self.plan, f"{cell.name}-batched")
        # By default the generated window backward trains only where its native stages run (archsearch.compiler.
        # _native), else autograd through the step: with torch ops, whose dispatch K slices already share, its
        # passes over whole windows cost more than they save (measured: tiny's separation command, K=3, 315 s
        # against 268 s). use_generated_backward(True / False) always / never uses it.
        self._auto_window = True  # None, the default of use_generated_backward
        self._window = None
        self._deferred = deferred_groups(self.plan.layout, hidden_size)

    def use_generated_backward(self, enabled: bool | None = True) -> None:
        """Train through the cell's generated window backward (True), autograd on the step (False), or (None, the
        default) the generated backward where its native stages run."""
        self._auto_window = enabled is None
        self._window = self._generated_window if enabled else None

    def _training_window(self, xp: torch.Tensor):
        """The generated window training uses for ``xp``, or None (autograd through the step)."""
        if not self._auto_window:
            return self._window
        native = self._generated_window.native is not None and xp.device.type == "cpu" and _native.available()
        return self._generated_window if native else None

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        return tuple(torch.zeros(self.k, batch, w, device=device, dtype=dtype) for w in self.state_widths)

    def input_projections(self, x: torch.Tensor) -> torch.Tensor:
        """All linears of x for every step at once: (K, T, B, P)."""
        k, steps, batch, _ = x.shape
        flat = x.reshape(k, steps * batch, x.shape[-1])  # (K, T*B, D)
        get = lambda name: getattr(self, name, None)  # noqa: E731
        parts = [
            blinear(flat, self.get_parameter(f"weight_{g.param}"), x_projection_bias(self.plan.layout, g.param, get, self.hidden_size))
            for g in self.plan.layout.groups
            if g.source == "x"
        ]
        if not parts:
            return x.new_zeros(k, steps, batch, 0)
        xp = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return xp.view(k, steps, batch, -1)  # (K, T, B, P)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        assert x.dim() == 4 and x.shape[0] == self.k and x.shape[-1] == self.input_size, (
            f"expected input (K={self.k}, T, B, {self.input_size}), got {tuple(x.shape)}"
        )
        if state is None:
            state = self.initial_state(x.shape[2], x.device, x.dtype)
        xp = self.input_projections(x)  # (K, T, B, P)
        return run_window(self, self._step, x, xp, state, self._deferred, time_dim=1, window=self._training_window(xp),
                          native=self._generated_window.native)  # (K, T, B, H)


class BatchedCellStack(nn.Module):
    """K stacked copies of a :class:`CellStack`; ``state`` is a list with one state tuple per layer."""

    def __init__(self, cell: Cell, k: int, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        if k < 1:
            raise CompileError(f"need at least one slice, got K={k}")
        self.k, self.hidden_size, self.num_layers = k, hidden_size, num_layers
        self.layers = nn.ModuleList(
            BatchedCell(cell, k, input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )

    @classmethod
    def from_stacks(cls, stacks: list[CellStack]) -> "BatchedCellStack":
        """Stack the weights of K compatible unbatched stacks (slice k = ``stacks[k]``)."""
        first = stacks[0]
        shape = (first.input_size, first.hidden_size, first.num_layers)
        for s in stacks:
            if (s.input_size, s.hidden_size, s.num_layers) != shape or s.cell.to_json() != first.cell.to_json():
                raise CompileError("batched stacks need the same cell, sizes and layers in every slice")
        batched = cls(first.cell, len(stacks), *shape)
        ref = next(first.parameters(), None)
        if ref is not None:
            batched.to(ref.dtype)
        with torch.no_grad():
            for name, tensor in [*batched.named_parameters(), *batched.named_buffers()]:
                parts = [_tensor(s, name).reshape(tensor.shape[1:]) for s in stacks]
                tensor.copy_(torch.stack(parts))
        return batched

    def use_generated_backward(self, enabled: bool | None = True) -> None:
        """See :meth:`BatchedCell.use_generated_backward` (by default on where native stages run)."""
        for layer in self.layers:
            layer.use_generated_backward(enabled)

    def set_slope(self, slope: torch.Tensor) -> None:
        """Per-slice hard-sigmoid slope, ``slope`` of shape (K,)."""
        for layer in self.layers:
            if hasattr(layer, "slope"):
                layer.slope.copy_(slope.view(-1, 1, 1))

    def forward(self, x: torch.Tensor, state: list[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        new_states = []
        for i, layer in enumerate(self.layers):
            x, layer_state = layer(x, None if state is None else state[i])
            new_states.append(layer_state)
        return x, new_states


def _tensor(module: torch.nn.Module, name: str) -> torch.Tensor:
    """Parameter or buffer ``name`` (a stack's state_dict may use nn.LSTM's names; these are the modules')."""
    try:
        return module.get_parameter(name)
    except AttributeError:
        return module.get_buffer(name)
