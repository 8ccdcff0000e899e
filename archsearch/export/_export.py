"""Write a discovered cell as a standalone PyTorch module (a ``.py`` file that needs only torch).

The file holds the compiler's own generated step function for the validated
graph, its helpers, and an ``nn.LSTM``-like wrapper:
``Cell(input_size, hidden_size, num_layers=1, batch_first=False)`` with
``forward(input, hx=None) -> (output, hx)``. Parameter names equal the
in-framework module's, so ``state_dict``s move between the two unchanged.
"""

from __future__ import annotations

import ast
import keyword
import re
import textwrap

from archsearch.compiler import HELPERS_SOURCE, plan_cell
from archsearch.errors import CompileError
from archsearch.ir import SCALAR, Cell

_TEMPLATE = '''"""{title}

A recurrent cell exported by archsearch (structural hash {hash}); needs only torch.

Equations (paper notation; x_t is the layer input, state 0 is the output h):

{equations}

Usage, like torch.nn.LSTM:

    cell = {cls}(input_size, {hidden}, num_layers=1, batch_first=False)
    output, hx = cell(input)          # input (T, B, input_size) or (B, T, input_size)
    # hx: {hx_doc}

This file was generated for hidden_size={hidden} (the step code has the sizes of the
gate slices written in); export again with --hidden-size for another size.
"""

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN_SIZE = {hidden}
STATE_NAMES = {state_names!r}
STATE_WIDTHS = {state_widths!r}  # 1: a scalar state per example (e.g. an HM-LSTM boundary)
USES_RAW_INPUT = {raw_x!r}  # reads x_t without a linear map: input_size must equal hidden_size
X_GROUPS = {x_groups!r}  # (parameter, has bias) of each fused map of x, in column order
# partner map whose every linear is summed with one of x's: its bias is added to x's projection once, here
FOLDED = {folded!r}  # partner -> (x parameter, first column, width)
{helpers}

# ---------------------------------------------------------------- the generated step (one time step)
{step}

class {cls}Layer(nn.Module):
    """One layer: forward(x (T, B, D), state tuple of (B, width)) -> (h over time (T, B, H), state)."""

    def __init__(self, input_size: int, hidden_size: int = HIDDEN_SIZE):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
{params}
    def input_projections(self, x):
        """Every linear map of x (plus the folded partner biases), for all time steps at once: (T, B, P)."""
        parts = []
        for param, has_bias in X_GROUPS:
            weight = getattr(self, "weight_" + param)
            bias = getattr(self, "bias_" + param) if has_bias else weight.new_zeros(weight.shape[0])
            for partner, (target, start, width) in FOLDED.items():
                if target == param and hasattr(self, "bias_" + partner):
                    pieces = [bias[:start], bias[start : start + width] + getattr(self, "bias_" + partner)[:width]]
                    bias = torch.cat(pieces + [bias[start + width :]])
            parts.append(F.linear(x, weight, bias))
        if not parts:
            return x.new_zeros(x.shape[0], x.shape[1], 0)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def forward(self, x, state):
        xp = self.input_projections(x)  # (T, B, P)
        outputs = []
        for x_t, xp_t in zip(x.unbind(0), xp.unbind(0)):
            state = step(self, x_t, xp_t, *state)
            outputs.append(state[0])
        return torch.stack(outputs), state


class {cls}(nn.Module):
    """{title} with an nn.LSTM-like interface."""

    def __init__(self, input_size: int, hidden_size: int = HIDDEN_SIZE, num_layers: int = {layers}, batch_first: bool = False):
        super().__init__()
        if hidden_size != HIDDEN_SIZE:
            raise ValueError(f"this file was generated for hidden_size={{HIDDEN_SIZE}}, got {{hidden_size}}; export again")
        if USES_RAW_INPUT and input_size != hidden_size:
            raise ValueError(f"this cell reads x_t directly, so input_size must equal hidden_size ({{hidden_size}})")
        if num_layers < 1 or (num_layers > 1 and {depth} > 1):
            raise ValueError("num_layers must be >= 1, and 1 for cells that contain their own layers")
        self.input_size, self.hidden_size, self.num_layers, self.batch_first = input_size, hidden_size, num_layers, batch_first
        self.layers = nn.ModuleList(
            {cls}Layer(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )

    def initial_state(self, batch: int, device=None, dtype=None):
        widths = [1 if w == 1 else self.hidden_size for w in STATE_WIDTHS]
        return tuple(torch.zeros(self.num_layers, batch, w, device=device, dtype=dtype) for w in widths)

    def forward(self, input, hx=None):
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, D)
        if hx is None:
            hx = self.initial_state(x.shape[1], x.device, x.dtype)
        elif isinstance(hx, torch.Tensor):
            hx = (hx,)
        new = []
        for i, layer in enumerate(self.layers):
            x, state = layer(x, tuple(s[i] for s in hx))
            new.append(state)
        hx = tuple(torch.stack(s) for s in zip(*new))  # each (num_layers, B, width)
        output = x.transpose(0, 1) if self.batch_first else x
        return output, (hx[0] if len(hx) == 1 else hx)
'''


def _docstring_text(text: str) -> str:
    """``text`` made safe inside a triple-quoted (non-raw) docstring: it reads back unchanged.

    Backslashes, quotes, control and non-ASCII characters are escaped, so no text from a
    cell (a name from a shared database, say) can close the string and run as code.
    """
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _check_source(source: str, cls: str) -> None:
    """The generated text must parse, and define ``cls`` (a last line of defence for the escaping)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise CompileError(f"generated source does not parse (line {e.lineno}): {e.msg}") from e
    if not any(isinstance(n, ast.ClassDef) and n.name == cls for n in tree.body):
        raise CompileError(f"generated source does not define class {cls!r}")


def _class_name(name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", name)
    cls = "".join(w[:1].upper() + w[1:] for w in words if w) or "Cell"
    return cls if cls[0].isalpha() else "Cell" + cls


def export_source(cell: Cell, hidden_size: int, num_layers: int = 1, class_name: str | None = None) -> str:
    """The source text of a standalone module for ``cell`` (validated here)."""
    cell.validate()
    if hidden_size < 1:
        raise CompileError(f"hidden_size must be positive, got {hidden_size}")
    plan = plan_cell(cell, hidden_size)
    cls = class_name or _class_name(cell.name)
    params = []
    for g in plan.groups:
        rows = sum(plan.offsets[m][2] for m in g.members)
        cols = "input_size" if g.source == "x" else "hidden_size"
        params.append(f"        self.weight_{g.param} = nn.Parameter(torch.empty({rows}, {cols}))")
        if g.bias:
            params.append(f"        self.bias_{g.param} = nn.Parameter(torch.empty({rows}))")
    if plan.uses_slope:
        params.append('        self.register_buffer("slope", torch.tensor(1.0))  # hard-sigmoid slope a (annealed in training)')
    params.append("        bound = 1.0 / hidden_size**0.5")
    params.append("        for p in self.parameters():")
    params.append("            nn.init.uniform_(p, -bound, bound)")
    single = len(cell.states) == 1
    hx_doc = ("a tensor (num_layers, B, hidden_size), as nn.GRU" if single else
              "a tuple (" + ", ".join(s.name for s in cell.states) + "), each (num_layers, B, width), as nn.LSTM")
    if not cls.isidentifier() or keyword.iskeyword(cls):
        raise CompileError(f"class name {cls!r} is not a Python identifier")
    source = _TEMPLATE.format(
        title=_docstring_text(f"{cls}: the archsearch cell {cell.name!r}"),
        hash=cell.structural_hash(),
        equations=textwrap.indent("\n".join(map(_docstring_text, cell.equations().splitlines())), "    "),
        cls=cls,
        hidden=hidden_size,
        hx_doc=hx_doc,
        state_names=tuple(s.name for s in cell.states),
        state_widths=tuple(1 if s.width == SCALAR else "n" for s in cell.states),
        raw_x=cell.uses_raw_x(),
        helpers=HELPERS_SOURCE,
        step=plan.source,
        params="\n".join(params) + "\n",
        x_groups=[(g.param, g.bias) for g in plan.groups if g.source == "x"],
        folded=dict(getattr(plan, "folded", {})),
        layers=num_layers,
        depth=cell.depth,
    )
    _check_source(source, cls)
    return source
