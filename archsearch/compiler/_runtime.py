"""The runtime of compiled cells: layers, stacks and the helpers the generated step calls.

This module needs only torch. ``archsearch.compile`` builds its modules from it, and
``archsearch export`` copies its source verbatim into the exported file, followed by
the cell's :class:`Layout` (plain data) and its generated ``step`` function; so the
exported module and the compiled one share their code, init, speed and features.

A layout gives every size as ``(a, b)``, meaning ``a * hidden_size + b``, so one layout
and one step serve any ``hidden_size`` and ``input_size``.
"""

import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# ARCHSEARCH_GENERATED_BACKWARD=0 turns the generated window backward off in this process (autograd through
# the step instead): for paired speed measurements, or to rule it out when a gradient looks wrong
GENERATED_BACKWARD = os.environ.get("ARCHSEARCH_GENERATED_BACKWARD", "1") != "0"

State = tuple[torch.Tensor, ...]
Size = tuple[int, int]  # (a, b): a * hidden_size + b rows or columns
DeferredGroup = tuple[str, int, int, int]  # (param, state index, first column in xp, width)


# ---------------------------------------------------------------- helpers the generated step calls
def hard_sigmoid(v, slope):
    """max(0, min(1, (slope * v + 1) / 2)) (Chung et al. 2016)."""
    return torch.clamp((v * slope + 1.0) * 0.5, 0.0, 1.0)


def step_st(v):
    """1 where v > 0.5 else 0; the backward pass treats it as the identity (straight-through)."""
    return v + ((v > 0.5).to(v.dtype) - v).detach()


def blinear(v, weight, bias=None):
    """Per-slice linear map: v (K, B, in), weight (K, out, in), bias (K, out) -> (K, B, out)."""
    if bias is None:
        return torch.bmm(v, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), v, weight.transpose(1, 2))


# ---------------------------------------------------------------- the layout of a cell's parameters
def units(size: Size, hidden_size: int) -> int:
    """The number that ``size`` stands for at ``hidden_size``."""
    return size[0] * hidden_size + size[1]


@dataclass(frozen=True)
class Group:
    """One fused weight ``weight_<param>`` (rows = every linear reading ``source``), maybe a bias."""

    param: str
    source: str  # "x" or the node whose value the linears read
    bias: bool
    rows: Size


@dataclass(frozen=True)
class Slot:
    """Where linear node ``name`` lives inside its group's weight, and how it is initialised."""

    name: str
    param: str
    start: Size
    width: Size
    diag: float  # Linear(a, x): a is added to the diagonal at init
    bias_init: float  # added to the bias at init (e.g. 1 for the LSTM-b forget gate)


@dataclass(frozen=True)
class Fold:
    """A recurrent group all of whose linears are summed with x's: its bias joins x's projection."""

    partner: str
    x_param: str
    start: Size  # first column inside the x group
    width: Size


@dataclass(frozen=True)
class Layout:
    """Everything the runtime needs to know about a cell besides its step function."""

    groups: tuple[Group, ...]
    slots: tuple[Slot, ...]
    folds: tuple[Fold, ...]
    states: tuple[tuple[str, bool], ...]  # (name, scalar): a scalar state has one column
    uses_slope: bool  # a hard sigmoid reads the annealed slope buffer
    raw_x: bool  # reads x_t without a linear map: input_size must equal hidden_size
    depth: int  # layers inside the cell (GF/HM cells): such a cell cannot be stacked
    torch_names: tuple[tuple[str, str], ...] = ()  # (param, "ih"/"hh"): state_dict keys as nn.LSTM/nn.GRU

    def to_dict(self) -> dict:
        """Plain data (tuples, strings, numbers) that :meth:`from_dict` reads back."""
        return {
            "groups": tuple((g.param, g.source, g.bias, g.rows) for g in self.groups),
            "slots": tuple((s.name, s.param, s.start, s.width, s.diag, s.bias_init) for s in self.slots),
            "folds": tuple((f.partner, f.x_param, f.start, f.width) for f in self.folds),
            "states": self.states,
            "uses_slope": self.uses_slope,
            "raw_x": self.raw_x,
            "depth": self.depth,
            "torch_names": self.torch_names,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Layout":
        return cls(
            groups=tuple(Group(*g) for g in data["groups"]),
            slots=tuple(Slot(*s) for s in data["slots"]),
            folds=tuple(Fold(*f) for f in data["folds"]),
            states=tuple(tuple(s) for s in data["states"]),
            uses_slope=data["uses_slope"],
            raw_x=data["raw_x"],
            depth=data["depth"],
            torch_names=tuple(tuple(t) for t in data["torch_names"]),
        )

    def bias_inits(self) -> list[str]:
        """Linear nodes whose bias starts away from zero (they cannot run with ``bias=False``)."""
        return [s.name for s in self.slots if s.bias_init]


def x_projection_bias(layout: Layout, param: str, get: Callable, hidden_size: int) -> torch.Tensor | None:
    """Bias of x group ``param``'s projection: its own bias plus the folded partners' biases.

    ``get(name)`` returns a parameter or None; shapes may carry a leading slice dimension
    (batched), so everything indexes the last dimension.
    """
    own = get(f"bias_{param}")
    folded = []
    for fold in layout.folds:
        partner_bias = get(f"bias_{fold.partner}")
        if fold.x_param == param and partner_bias is not None:
            folded.append((units(fold.start, hidden_size), units(fold.width, hidden_size), partner_bias))
    if not folded:
        return own
    folded.sort(key=lambda f: f[0])
    weight = get(f"weight_{param}")
    base = own if own is not None else weight.new_zeros(weight.shape[:-1])
    pieces, col = [], 0
    for start, width, partner_bias in folded:
        pieces += [base[..., col:start], base[..., start : start + width] + partner_bias[..., :width]]
        col = start + width
    pieces.append(base[..., col:])
    return torch.cat(pieces, dim=-1)


def deferred_groups(layout: Layout, hidden_size: int) -> list[DeferredGroup]:
    """Recurrent weight groups whose gradient can be taken once per window (see :class:`DeferredWeightGrads`).

    A folded group (step: ``addmm(xp_p, s, W_p.t())``) that reads a state ``s``: returns
    ``(param, state index, first column in xp, width)`` for each.
    """
    x_starts, col = {}, 0
    for g in layout.groups:
        if g.source == "x":
            x_starts[g.param] = col
            col += units(g.rows, hidden_size)
    sources = {g.param: g.source for g in layout.groups}
    state_names = [name for name, _ in layout.states]
    return [
        (f.partner, state_names.index(sources[f.partner]), x_starts[f.x_param] + units(f.start, hidden_size),
         units(f.width, hidden_size))
        for f in layout.folds
        if sources[f.partner] in state_names
    ]  # fmt: skip


# ---------------------------------------------------------------- the recurrent loop
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


@dataclass(frozen=True)
class Window:
    """A cell's generated window functions (see ``archsearch.compiler._backward``)."""

    record_step: Callable  # step(self, x, xp, *state) -> (new state, recorded values)
    backward: Callable  # window_backward(self, dys, douts, S, V, X) -> (dxp, dX, d_init, grads)
    params: tuple[str, ...]  # the module attributes ``backward`` returns gradients for, in order
    raw_x: bool  # the cell reads x_t itself (the backward needs X and returns dX)
    # the step and record step with native elementwise stages (archsearch.compiler._native; None in an export):
    # ``bind_native`` binds it to one window's tensors, or gives None where it cannot run them
    native: object = None


@dataclass(frozen=True)
class BoundNative:
    """A native window function bound to one window's tensors (time first) and the stage kernels."""

    function: Callable  # window_native / window_record_native
    kernels: tuple  # the stages compiled for the tensors' dtype
    xs: torch.Tensor
    xp: torch.Tensor
    state: State

    def __call__(self, module: nn.Module):
        """``(ys, final state, S, V, xs)``, all time first."""
        return (*self.function(module, self.xs, self.xp, self.state, K=self.kernels), self.xs)


def bind_native(native, record: bool, xs, xp, state: State, time_dim: int) -> BoundNative | None:
    """``native`` (a window's :class:`~archsearch.compiler._native.NativeSteps`, or None) for these tensors, or None
    where it cannot run them; batched windows (``time_dim`` 1) run on time-first copies of xs and xp."""
    if native is None or xp.device.type != "cpu":
        return None
    xs, xp = time_first(xs, time_dim), time_first(xp, time_dim)
    kernels = native.kernels_for(xs, xp, state)
    return None if kernels is None else BoundNative(native.record if record else native.step, kernels, xs, xp, state)


def time_first(tensor: torch.Tensor, time_dim: int) -> torch.Tensor:
    """``tensor`` with time first, rows (slices x batch) contiguous."""
    return tensor if time_dim == 0 else tensor.movedim(time_dim, 0).contiguous()


class GeneratedWindow(torch.autograd.Function):
    """A whole window as one autograd node, with the cell's generated backward.

    The forward runs ``record_step`` without autograd and keeps the states read at each step and
    the values the backward needs, stacked over time; the backward runs ``window_backward``.
    Tensors may carry a leading slice dimension K (batched): ``time_dim`` is then 1.
    """

    @staticmethod
    def forward(ctx, module, window: Window, time_dim: int, xs, xp, n_states: int, *tensors):
        state = tuple(tensors[:n_states])
        ctx.module, ctx.window, ctx.time_dim = module, window, time_dim
        ctx.native = native = bind_native(window.native, True, xs, xp, state, time_dim)
        if native is not None:  # the whole window at once, its values recorded in place (time first)
            ys, final, S, V, X = native(module)
            ctx.S, ctx.V = list(S), list(V)
            ctx.X = X if window.raw_x else None
            ctx.present = [t is not None for t in tensors[n_states:]]
            # copies: in-place ops on them must not touch ctx.S
            return (ys.movedim(0, time_dim).clone(memory_format=torch.contiguous_format), *(s.clone() for s in final))
        seen, recorded, outputs = [], [], []
        for x_t, xp_t in zip(xs.unbind(time_dim), xp.unbind(time_dim)):
            seen.append(state)
            state, values = window.record_step(module, x_t, xp_t, *state)
            recorded.append(values)
            outputs.append(state[0])
        ctx.S = [torch.stack(s) for s in zip(*seen)]  # time first: (T, [K,] B, width)
        ctx.V = [torch.stack(v) for v in zip(*recorded)]
        ctx.X = xs.movedim(time_dim, 0) if window.raw_x else None
        ctx.present = [t is not None for t in tensors[n_states:]]
        inputs = {id(t) for t in tensors}
        final = tuple(s.clone() if id(s) in inputs else s for s in state)  # never return an input itself
        return (torch.stack(outputs, dim=time_dim), *final)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dys, *douts):
        time_dim, S = ctx.time_dim, ctx.S
        dys = torch.zeros_like(S[0]) if dys is None else dys.movedim(time_dim, 0)
        douts = [torch.zeros_like(s[0]) if d is None else d for d, s in zip(douts, S)]
        if ctx.native is not None:  # the backward's loop native too, with the forward's kernels
            native = ctx.window.native
            dxp, dx, d_init, grads = native.backward(ctx.module, dys, douts, S, ctx.V, ctx.X, K=ctx.native.kernels)
        else:
            dxp, dx, d_init, grads = ctx.window.backward(ctx.module, dys, douts, S, ctx.V, ctx.X)
        dx = None if dx is None else dx.movedim(0, time_dim)
        grads = [g if present else None for g, present in zip(grads, ctx.present)]
        return (None, None, None, dx, dxp.movedim(0, time_dim), None, *d_init, *grads)


class _StepView:
    """What the step sees as ``self`` while weight gradients are deferred: the module, with the
    deferred weights detached (attributes it does not override come from the module)."""

    def __init__(self, module: nn.Module, detached: dict[str, torch.Tensor]):
        self._module = module
        self.hidden_size = module.hidden_size
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
    window: Window | None = None,
    native: object = None,
) -> tuple[torch.Tensor, State]:
    """The recurrent loop shared by the unbatched and the batched layer: returns (outputs, final state).

    With gradients enabled, a cell with a generated ``window`` runs as one :class:`GeneratedWindow`;
    otherwise the weights of ``groups`` (see :func:`deferred_groups`) get their gradient once per
    window through :class:`DeferredWeightGrads`. Neither while torch.compile/torch.export trace.
    Without gradients, ``native`` (a window's ``native``) runs the step if it can.
    """
    tracing = torch.compiler.is_compiling()
    whole = None if tracing or torch.is_grad_enabled() else bind_native(native, False, xs, xp, state, time_dim)
    if whole is not None:
        ys, final, _, _, _ = whole(module)
        return ys.movedim(0, time_dim), tuple(final)
    if window is not None and GENERATED_BACKWARD and not tracing and torch.is_grad_enabled():
        params = [getattr(module, name) for name in window.params]
        tensors = (*state, *params)
        if xp.requires_grad or (window.raw_x and xs.requires_grad) or any(t is not None and t.requires_grad for t in tensors):
            ys, *final = GeneratedWindow.apply(module, window, time_dim, xs, xp, len(state), *tensors)
            return ys, tuple(final)
    weights = [module.get_parameter(f"weight_{g[0]}") for g in groups]
    view = module
    if groups and not tracing and torch.is_grad_enabled() and any(w.requires_grad for w in weights):
        seen: list[list[torch.Tensor]] | None = [[] for _ in groups]
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


# ---------------------------------------------------------------- one layer
class RecurrentLayer(nn.Module):
    """One layer of a cell: ``forward(x[T,B,D], state) -> (y[T,B,H], state)``.

    Parameters are one weight matrix ``weight_<param>`` (and bias ``bias_<param>``) per
    source node, shared by every linear reading it (:meth:`linear_params` gives one
    linear's rows). ``step(self, x_t, xp_t, *state)`` is the cell's generated step.
    """

    def __init__(
        self,
        layout: Layout,
        step: Callable,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init_scale: float = 1.0,
        window: Window | None = None,
    ):
        super().__init__()
        check_sizes(layout, input_size, hidden_size, bias)
        self.layout, self._step = layout, step
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_widths = [1 if scalar else hidden_size for _, scalar in layout.states]
        for g in layout.groups:
            cols = input_size if g.source == "x" else hidden_size
            self.register_parameter(f"weight_{g.param}", nn.Parameter(torch.empty(units(g.rows, hidden_size), cols)))
            if g.bias:
                b = nn.Parameter(torch.empty(units(g.rows, hidden_size))) if bias else None
                self.register_parameter(f"bias_{g.param}", b)
        if layout.uses_slope:
            self.register_buffer("slope", torch.tensor(1.0))  # the hard-sigmoid slope a (annealed in training)
        self._deferred = deferred_groups(layout, hidden_size)
        self._generated_window = window  # the cell's generated window backward, if the compiler gave one
        self._window = window  # the one training uses (None: autograd through the step)
        self._native = window and window.native  # native stages for steps without gradients, if any
        self.reset_parameters(init_scale)

    def reset_parameters(self, init_scale: float = 1.0) -> None:
        """U[-x, x] with x = init_scale / sqrt(hidden_size); then each linear's diagonal offset and bias init."""
        bound = init_scale / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
            for slot in self.layout.slots:
                weight, bias = self.linear_params(slot.name)
                if slot.diag:
                    k = min(weight.shape)
                    weight[torch.arange(k), torch.arange(k)] += slot.diag
                if bias is not None and slot.bias_init:
                    bias += slot.bias_init

    def linear_params(self, node: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views ``(W [out, in], b [out] or None)`` of linear node ``node`` inside the fused parameters."""
        slot = next((s for s in self.layout.slots if s.name == node), None)
        if slot is None:
            raise KeyError(f"{node!r} is not a linear node of this cell")
        start, width = units(slot.start, self.hidden_size), units(slot.width, self.hidden_size)
        weight = self.get_parameter(f"weight_{slot.param}")[start : start + width]
        bias = getattr(self, f"bias_{slot.param}", None)
        return weight, (None if bias is None else bias[start : start + width])

    def linear_nodes(self) -> list[str]:
        return [s.name for s in self.layout.slots]

    def use_generated_backward(self, enabled: bool = True) -> None:
        """Train through the cell's generated window backward (the default) or, with False, autograd on the step."""
        self._window = self._generated_window if enabled else None

    def enable_torch_compile(self) -> None:
        """Run the whole unrolled window through ``torch.compile`` (inductor).

        Off by default: on a 2-core CPU it costs ~55 s of compilation per cell and size
        and saves ~20% of a train step, so it only pays after thousands of steps with one
        size in one process.
        """
        self._deferred = []  # the plain loop: dynamo traces it whole (no autograd.Function)
        self._generated_window = self._window = self._native = None
        self._run = torch.compile(RecurrentLayer._run.__get__(self), dynamic=False)

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        ref = next(self.parameters(), None)  # a cell may have no parameters at all (h' = tanh(x + h))
        device = device or (ref.device if ref is not None else None)
        dtype = dtype or (ref.dtype if ref is not None else None)
        return tuple(torch.zeros(batch, w, device=device, dtype=dtype) for w in self.state_widths)

    def input_projections(self, x: torch.Tensor) -> torch.Tensor:
        """All linears of x for every step at once: (T, B, P)."""
        get = lambda name: getattr(self, name, None)  # noqa: E731
        parts = [
            F.linear(x, self.get_parameter(f"weight_{g.param}"), x_projection_bias(self.layout, g.param, get, self.hidden_size))
            for g in self.layout.groups
            if g.source == "x"
        ]  # fmt: skip
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
        return run_window(self, self._step, x, xp, state, self._deferred, time_dim=0, window=self._window,
                          native=self._native)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


def check_sizes(layout: Layout, input_size: int, hidden_size: int, bias: bool = True) -> None:
    """Raise ValueError where the sizes (or ``bias=False``) do not fit the cell."""
    if input_size < 1 or hidden_size < 1:
        raise ValueError(f"sizes must be positive, got input_size={input_size}, hidden_size={hidden_size}")
    if layout.raw_x and input_size != hidden_size:
        raise ValueError(
            f"this cell uses x_t without a linear map, so it needs input_size == hidden_size "
            f"(got {input_size} and {hidden_size})"
        )
    if not bias and layout.bias_inits():
        raise ValueError(
            f"this cell cannot run with bias=False: the biases of {', '.join(layout.bias_inits())} start away "
            "from zero (part of the architecture)"
        )


# ---------------------------------------------------------------- layers stacked, with nn.LSTM's interface
class RecurrentStack(nn.Module):
    """``num_layers`` layers of one cell, with the interface of ``nn.LSTM``/``nn.GRU``.

    ``forward(input, hx=None) -> (output, hx)``: ``input`` is (T, B, input_size), or
    (B, T, input_size) with ``batch_first``, or unbatched (T, input_size); ``hx`` has one
    tensor (num_layers, B, width) per state of the cell (width 1 for a scalar state),
    (num_layers, width) for unbatched input. Layer l+1 reads layer l's state 0 (its h),
    through dropout with probability ``dropout`` while training, as nn.LSTM.
    ``hx_tensor``: a cell with one state passes that state as a tensor, not a tuple (nn.GRU).
    """

    def __init__(
        self,
        layout: Layout,
        step: Callable,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        *,
        init_scale: float = 1.0,
        hx_tensor: bool = False,
        window: Window | None = None,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if layout.depth > 1 and num_layers != 1:
            raise ValueError(f"this cell already contains {layout.depth} layers; it cannot be stacked (num_layers={num_layers})")
        if not 0.0 <= dropout <= 1.0 or isinstance(dropout, bool):
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between layers, and num_layers=1: it has no effect", stacklevel=2)
        check_sizes(layout, input_size, hidden_size, bias)
        self.layout = layout
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.hx_tensor = bias, batch_first, float(dropout), hx_tensor
        self._window = window
        self.layers = nn.ModuleList(
            self._new_layer(step, input_size if i == 0 else hidden_size, bias, init_scale) for i in range(num_layers)
        )
        if layout.torch_names:
            self.register_state_dict_post_hook(_to_torch_names)
            self.register_load_state_dict_pre_hook(_from_torch_names)

    def _new_layer(self, step: Callable, input_size: int, bias: bool, init_scale: float) -> RecurrentLayer:
        return RecurrentLayer(self.layout, step, input_size, self.hidden_size, bias, init_scale, self._window)

    def reset_parameters(self, init_scale: float = 1.0) -> None:
        for layer in self.layers:
            layer.reset_parameters(init_scale)

    def flatten_parameters(self) -> None:
        """A no-op (nn.LSTM packs cuDNN weights here; these weights need no packing)."""

    def use_generated_backward(self, enabled: bool = True) -> None:
        """See :meth:`RecurrentLayer.use_generated_backward`."""
        for layer in self.layers:
            layer.use_generated_backward(enabled)

    def enable_torch_compile(self) -> None:
        """See :meth:`RecurrentLayer.enable_torch_compile`."""
        for layer in self.layers:
            layer.enable_torch_compile()

    def set_slope(self, slope: float) -> None:
        """Set the hard-sigmoid slope ``a`` of every layer (HM-LSTM slope annealing)."""
        for layer in self.layers:
            if hasattr(layer, "slope"):
                layer.slope.fill_(slope)

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        """Zeros: one tensor (num_layers, batch, width) per state."""
        per_layer = [layer.initial_state(batch, device, dtype) for layer in self.layers]
        return tuple(torch.stack(s) for s in zip(*per_layer))

    def forward(self, input: torch.Tensor, hx=None):
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a tensor, got {type(input).__name__} (PackedSequence is not supported: pad)")
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(
                f"expected input of shape (T, B, {self.input_size}), (B, T, {self.input_size}) with batch_first, "
                f"or unbatched (T, {self.input_size}); got {tuple(input.shape)}"
            )
        batched = input.dim() == 3
        x = (input.transpose(0, 1) if self.batch_first else input) if batched else input.unsqueeze(1)
        state = self._check_hx(hx, x, batched)
        new_states = []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            x, layer_state = layer(x, None if state is None else tuple(s[i] for s in state))
            new_states.append(layer_state)
        out = tuple(torch.stack(s) for s in zip(*new_states))
        if not batched:
            x, out = x.squeeze(1), tuple(s.squeeze(1) for s in out)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (out[0] if self.hx_tensor and len(out) == 1 else out)

    def _check_hx(self, hx, x: torch.Tensor, batched: bool) -> State | None:
        if hx is None:
            return None
        state = (hx,) if isinstance(hx, torch.Tensor) else tuple(hx)
        widths = [1 if scalar else self.hidden_size for _, scalar in self.layout.states]
        lead = (self.num_layers, x.shape[1]) if batched else (self.num_layers,)
        expected = [(*lead, w) for w in widths]
        if [tuple(s.shape) for s in state] != expected:
            raise ValueError(f"expected hx of shapes {expected} (one per state), got {[tuple(s.shape) for s in state]}")
        return state if batched else tuple(s.unsqueeze(1) for s in state)

    def extra_repr(self) -> str:
        extra = "" if self.num_layers == 1 else f", num_layers={self.num_layers}"
        extra += "" if self.bias else ", bias=False"
        extra += ", batch_first=True" if self.batch_first else ""
        extra += f", dropout={self.dropout}" if self.dropout else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"


def _torch_key(layout: Layout, inner: str) -> str | None:
    """``layers.<l>.weight_<param>`` -> ``weight_<ih|hh>_l<l>`` for layouts in nn.LSTM's order."""
    parts = inner.split(".")
    if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit():
        return None
    kind, _, param = parts[2].partition("_")
    stem = dict(layout.torch_names).get(param)
    return None if stem is None or kind not in ("weight", "bias") else f"{kind}_{stem}_l{parts[1]}"


def _to_torch_names(module: "RecurrentStack", state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = _torch_key(module.layout, key[len(prefix) :])
        if new is not None:
            state_dict[prefix + new] = state_dict.pop(key)


def _from_torch_names(module: "RecurrentStack", state_dict: dict, prefix: str, *args) -> None:
    names = {}
    for i, layer in enumerate(module.layers):
        for name, _ in layer.named_parameters(recurse=False):
            inner = f"layers.{i}.{name}"
            names[prefix + _torch_key(module.layout, inner)] = prefix + inner
    for key in [k for k in state_dict if k in names]:
        state_dict[names[key]] = state_dict.pop(key)
