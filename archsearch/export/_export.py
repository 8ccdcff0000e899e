"""Write a discovered cell as a standalone PyTorch module (a ``.py`` file that needs only torch).

The file is the compiler's runtime (:mod:`archsearch.compiler._runtime`, copied verbatim),
the cell's :class:`~archsearch.compiler.Layout` as plain data, its generated step function,
and a class with ``nn.LSTM``'s interface:
``Cls(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0)``,
``forward(input, hx=None) -> (output, hx)``. The class is ``archsearch.compile``'s module:
same code, init, speed (the generated backward of a window) and parameter names, so ``state_dict``s
move between the two unchanged (torch-lstm/torch-gru: nn.LSTM's/nn.GRU's names).
"""

from __future__ import annotations

import ast
import inspect
import keyword
import math
import re
import textwrap

from archsearch.compiler import _runtime, plan_cell
from archsearch.compiler._runtime import Layout
from archsearch.errors import CompileError
from archsearch.ir import Cell

_HEADER = '''"""{title}

A recurrent cell exported by archsearch (structural hash {hash}); needs only torch.

Equations (paper notation; x_t is the layer input, state 0 is the output h):

{equations}

Usage, like torch.nn.{like}:

    rnn = {cls}(input_size, hidden_size, num_layers={layers}, bias=True, batch_first=False, dropout=0.0)
    output, hx = rnn(input)   # input (T, B, input_size), (B, T, input_size) with batch_first, or unbatched (T, input_size)
    output, hx = rnn(input, hx)
    # output: (T, B, hidden_size) (the h of the last layer at every step)
    # hx: {hx_doc}
    hx = rnn.initial_state(batch)   # zeros

{cls} takes any input_size and hidden_size{raw_x_note}{hidden_note}. {layers_note}
Parameters (rnn.state_dict() keys; k = layer):

{params}

Everything below up to "the cell" is the archsearch runtime, copied verbatim: the same code
archsearch.compile runs (init, generated window backward, nn.LSTM-like interface).
torch.export.export works; torch.jit.script does not (the step is a Python function).
"""

'''

_CELL = '''

# ==================================================================== the cell
LAYOUT = Layout.from_dict({layout})


{step}

# the same step, also returning the values the window's backward reads, and that backward (generated)
{record_step}

{window_backward}

WINDOW = Window(step_record, window_backward, {params}, LAYOUT.raw_x)


class {cls}(RecurrentStack):
    """{title_line}: nn.{like}'s interface; see the module docstring."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int{hidden_default},
        num_layers: int = {layers},
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        *,
        init_scale: float = 1.0,
    ):
        super().__init__(LAYOUT, step, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         init_scale=init_scale, hx_tensor={hx_tensor}, window=WINDOW)
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


def export_class_name(cell: Cell) -> str:
    """The name of the class ``export_source(cell)`` writes (``lstm-b`` -> ``LstmB``)."""
    return _class_name(cell.name)


def _class_name(name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", name)
    cls = "".join(w[:1].upper() + w[1:] for w in words if w) or "Cell"
    return cls if cls[0].isalpha() else "Cell" + cls


def _literal(value) -> str:
    """``value`` (tuples, dicts, strings, numbers) as Python literal text; strings are ASCII-escaped."""
    if isinstance(value, str):
        return ascii(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise CompileError(f"cannot write the non-finite number {value!r} into an exported file")
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_literal, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise CompileError(f"cannot write a {type(value).__name__} into an exported file")


def layout_literal(layout: Layout) -> str:
    """The layout as a dict literal (one entry per line) that reads back with ``ast.literal_eval``."""
    data = layout.to_dict()
    lines = []
    for key, value in data.items():
        if isinstance(value, tuple) and value and isinstance(value[0], tuple):
            items = "".join(f"        {_literal(v)},\n" for v in value)
            lines.append(f"    {_literal(key)}: (\n{items}    ),")
        else:
            lines.append(f"    {_literal(key)}: {_literal(value)},")
    text = "{\n" + "\n".join(lines) + "\n}"
    if ast.literal_eval(text) != data:  # plain data only: nothing in it can run
        raise CompileError("the exported layout does not read back as written")
    return text


def _size_text(size: tuple[int, int], n: str = "hidden_size") -> str:
    a, b = size
    return " + ".join(([n if a == 1 else f"{a}*{n}"] if a else []) + ([str(b)] if b or not a else []))


def _params_doc(layout: Layout) -> str:
    names = dict(layout.torch_names)
    lines = []
    for g in layout.groups:
        cols = "input_size if k == 0 else hidden_size" if g.source == "x" else "hidden_size"
        rows = _size_text(g.rows)
        members = ", ".join(s.name for s in layout.slots if s.param == g.param)
        reads = "x" if g.source == "x" else g.source
        if g.param in names:
            weight, bias = f"weight_{names[g.param]}_l{{k}}", f"bias_{names[g.param]}_l{{k}}"
        else:
            weight, bias = f"layers.{{k}}.weight_{g.param}", f"layers.{{k}}.bias_{g.param}"
        lines.append(f"    {weight}: ({rows}, {cols}), the linears of {reads}: {members}")
        if g.bias:
            lines.append(f"    {bias}: ({rows},)")
    if layout.uses_slope:
        lines.append("    layers.{k}.slope: a buffer, the hard-sigmoid slope (set_slope(a) anneals it)")
    if not lines:
        lines.append("    (none: this cell has no parameters)")
    lines.append("    (each linear's rows, in the order listed: hidden_size rows, or 1 for a scalar gate)")
    return "\n".join(map(_docstring_text, lines))


def _hx_doc(layout: Layout) -> str:
    """What ``hx`` is, for the module docstring."""
    names = [name for name, _ in layout.states]
    shapes = [f"{name} (num_layers, B, {'1' if scalar else 'hidden_size'})" for name, scalar in layout.states]
    if len(names) == 1:
        return "a tensor (num_layers, B, hidden_size), as nn.GRU's h"
    if names == ["h", "c"] and not any(scalar for _, scalar in layout.states):
        return "a tuple (h, c), each (num_layers, B, hidden_size), as nn.LSTM's"
    return f"a tuple of {len(names)} tensors, one per state (state 0 is the output h): {', '.join(shapes)}"


def _header(cell: Cell, layout: Layout, cls: str, hidden_size: int | None, num_layers: int) -> str:
    """The module docstring: equations, usage, sizes, parameter names (cell text escaped)."""
    return _HEADER.format(
        title=_docstring_text(f"{cls}: the archsearch cell {cell.name!r}"),
        hash=cell.structural_hash(),
        equations=textwrap.indent("\n".join(map(_docstring_text, cell.equations().splitlines())), "    "),
        like="GRU" if len(layout.states) == 1 else "LSTM",
        cls=cls,
        hidden_note="" if hidden_size is None else f" (hidden_size defaults to {int(hidden_size)})",
        layers=num_layers,
        hx_doc=_docstring_text(_hx_doc(layout)),
        raw_x_note=" (input_size must equal hidden_size: the cell reads x_t without a linear map)" if layout.raw_x else "",
        layers_note=(f"This cell has {cell.depth} layers inside, so num_layers is 1." if cell.depth > 1 else
                     "num_layers stacks layers (layer k+1 reads layer k's h), dropout acts between them."),
        params=_params_doc(layout),
    )


def export_source(cell: Cell, hidden_size: int | None = None, num_layers: int = 1, class_name: str | None = None) -> str:
    """The source text of a standalone module for ``cell`` (validated here).

    The class takes any sizes; ``hidden_size`` only sets the default of its ``hidden_size``
    argument (e.g. the size the search trained), ``num_layers`` the default of ``num_layers``.
    """
    cell.validate()
    if hidden_size is not None and hidden_size < 1:
        raise CompileError(f"hidden_size must be positive, got {hidden_size}")
    if num_layers < 1:
        raise CompileError(f"num_layers must be at least 1, got {num_layers}")
    if cell.depth > 1 and num_layers != 1:
        raise CompileError(f"num_layers must be 1 for cell {cell.name!r} (it has {cell.depth} layers inside)")
    cls = class_name or _class_name(cell.name)
    if not cls.isidentifier() or keyword.iskeyword(cls):
        raise CompileError(f"class name {cls!r} is not a Python identifier")
    plan = plan_cell(cell, hidden_size or 1)  # the step and layout are size-free; the size only fills offsets
    body = _CELL.format(
        layout=layout_literal(plan.layout),
        step=plan.source,
        record_step=plan.record_source,
        window_backward=plan.window.source,
        params=_literal(plan.window.params),
        cls=cls,
        title_line=_docstring_text(f"{cls}: the archsearch cell {cell.name!r}"),
        like="GRU" if len(cell.states) == 1 else "LSTM",
        hidden_default="" if hidden_size is None else f" = {int(hidden_size)}",
        layers=num_layers,
        hx_tensor=len(cell.states) == 1,
    )
    source = _header(cell, plan.layout, cls, hidden_size, num_layers) + inspect.getsource(_runtime) + body
    _check_source(source, cls)
    return source
