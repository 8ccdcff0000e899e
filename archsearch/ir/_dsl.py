"""A small equation language for writing cells the way papers do.

Example (the paper's LSTM)::

    cell lstm
    states h, c                 # h first: state 0 feeds the next layer / softmax
    i = tanh(W(x) + W(h) + b)
    j = sigmoid(W(x) + W(h) + b)
    f = sigmoid(W(x) + W(h) + b)
    o = tanh(W(x) + W(h) + b)
    c' = c * f + i * j
    h' = tanh(c') * o

Header lines: ``cell NAME``, ``states a, b, z:1`` (``:1`` marks a scalar state),
``depth L`` (layers the graph already contains), ``doc TEXT``.
Equations: ``name = expr``; ``s' = expr`` sets the new value of state ``s``.
Expressions use ``+ - *``, the constant ``1``, and the functions
``tanh sigmoid relu identity step hard_sigmoid(v[, slope=a])``,
``W(v[, a=d])`` (square matrix, diagonal offset d) and ``w(v)`` (a row: a scalar
gate). The k-th ``b`` or ``b(init)`` term of a sum gives its k-th linear a bias.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from archsearch.errors import DSLError
from archsearch.ir._graph import Cell, StateSpec
from archsearch.ir._ops import SCALAR, VECTOR, Op

_ACTIVATIONS = {
    "tanh": Op.TANH,
    "sigmoid": Op.SIGMOID,
    "relu": Op.RELU,
    "identity": Op.IDENTITY,
    "step": Op.STEP,
    "hard_sigmoid": Op.HARD_SIGMOID,
}
_BINOPS = {ast.Add: Op.ADD, ast.Sub: Op.SUB, ast.Mult: Op.MUL}
_NEXT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)'")


@dataclass
class _Bias:
    init: float


class _Builder:
    def __init__(self, cell: Cell, line_no: int, target: str):
        self.cell = cell
        self.line_no = line_no
        self.target = target
        self.env: dict[str, str] = {}

    def fail(self, msg: str) -> DSLError:
        return DSLError(f"cell {self.cell.name!r}, line {self.line_no}: {msg}")

    def new(self, kind: str, op: Op, inputs: tuple[str, ...] = (), attrs: dict | None = None) -> str:
        name = self.cell.fresh_name(f"{self.target}_{kind}")
        self.cell.add_node(name, op, inputs, attrs)
        return name

    def build(self, node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            if node.id not in self.env:
                raise self.fail(f"unknown name {node.id!r}")
            return self.env[node.id]
        if isinstance(node, ast.Constant):
            if node.value != 1 or isinstance(node.value, bool):
                raise self.fail(f"the only constant is 1, got {node.value!r}")
            return self.new("one", Op.ONE)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            if isinstance(node.op, ast.Add):
                return self.build_sum(node)
            a, b = self.build(node.left), self.build(node.right)
            return self.new(_BINOPS[type(node.op)].value, _BINOPS[type(node.op)], (a, b))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.build_call(node)
        raise self.fail(f"unsupported expression {ast.unparse(node)!r}")

    def build_sum(self, node: ast.BinOp) -> str:
        """A sum; its k-th bias term (``b`` or ``b(init)``) goes to its k-th linear term."""
        terms: list[ast.AST] = []
        _flatten_sum(node, terms)
        biases = [t for t in terms if _is_bias(t)]
        names = [self.build(t) for t in terms if not _is_bias(t)]
        if not names:
            raise self.fail("a bias needs a linear term beside it")
        linears = [n for n in names if self.cell[n].op is Op.LINEAR]
        if len(biases) > len(linears):
            raise self.fail(f"more bias terms than W(...)/w(...) terms in {ast.unparse(node)!r}")
        for linear, bias in zip(linears, biases):
            self.cell[linear].attrs["bias"] = True
            self.cell[linear].attrs["bias_init"] = _bias_init(bias)
        total = names[0]
        for other in names[1:]:
            total = self.new("add", Op.ADD, (total, other))
        return total

    def build_call(self, node: ast.Call) -> str:
        fn = node.func.id  # type: ignore[attr-defined]
        kwargs = {k.arg: _number(k.value, self) for k in node.keywords}
        if len(node.args) != 1:
            raise self.fail(f"{fn}() takes one argument")
        arg = self.build(node.args[0])
        if fn in ("W", "w"):
            unknown = set(kwargs) - {"a"}
            if unknown:
                raise self.fail(f"{fn}() has no option {sorted(unknown)}")
            attrs = {"width": VECTOR if fn == "W" else SCALAR, "bias": False}
            if kwargs.get("a"):
                attrs["diag"] = float(kwargs["a"])
            return self.new(fn, Op.LINEAR, (arg,), attrs)
        if fn in _ACTIVATIONS:
            allowed = {"slope"} if fn == "hard_sigmoid" else set()
            if set(kwargs) - allowed:
                raise self.fail(f"{fn}() has no option {sorted(set(kwargs) - allowed)}")
            attrs = {"slope": float(kwargs["slope"])} if "slope" in kwargs else None
            return self.new(fn, _ACTIVATIONS[fn], (arg,), attrs)
        raise self.fail(f"unknown function {fn!r}")


def _flatten_sum(node: ast.AST, out: list[ast.AST]) -> None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        _flatten_sum(node.left, out)
        _flatten_sum(node.right, out)
    else:
        out.append(node)


def _is_bias(node: ast.AST) -> bool:
    if isinstance(node, ast.Name) and node.id == "b":
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "b"


def _bias_init(node: ast.AST) -> float:
    if isinstance(node, ast.Call):
        return float(ast.literal_eval(node.args[0]))
    return 0.0


def _number(node: ast.AST, builder: _Builder) -> float:
    try:
        value = ast.literal_eval(node)
    except ValueError as e:
        raise builder.fail(f"expected a number, got {ast.unparse(node)!r}") from e
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise builder.fail(f"expected a number, got {value!r}")
    return float(value)


def parse_cell(text: str, name: str | None = None) -> Cell:
    """Build and validate a :class:`Cell` from equation text."""
    header: dict[str, str] = {}
    equations: list[tuple[int, str]] = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word = line.split(None, 1)[0]
        if word in ("cell", "states", "depth", "doc") and "=" not in line.split(None, 1)[-1][:1]:
            header[word] = line.split(None, 1)[1].strip() if " " in line else ""
        else:
            equations.append((line_no, line))
    cell_name = name or header.get("cell", "cell")
    if "states" not in header:
        raise DSLError(f"cell {cell_name!r}: a 'states' line is required")
    cell = Cell(cell_name, _parse_states(header["states"], cell_name), int(header.get("depth", 1)), header.get("doc", ""))
    env = {"x": "x", **{s.name: s.name for s in cell.states}}
    new_values: dict[str, str] = {}
    for line_no, line in equations:
        _parse_equation(cell, env, new_values, line_no, line)
    missing = [s.name for s in cell.states if s.name not in new_values]
    if missing:
        raise DSLError(f"cell {cell_name!r}: no equation gives the new value of state(s) {missing}")
    cell.outputs = tuple(new_values[s.name] for s in cell.states)
    return cell.validate()


def _parse_states(spec: str, cell_name: str) -> list[StateSpec]:
    states = []
    for item in (s.strip() for s in spec.split(",")):
        state, _, width = item.partition(":")
        if not state.isidentifier() or width not in ("", "1", "n"):
            raise DSLError(f"cell {cell_name!r}: bad state declaration {item!r}")
        states.append(StateSpec(state, SCALAR if width == "1" else VECTOR))
    return states


def _parse_equation(cell: Cell, env: dict[str, str], new_values: dict[str, str], line_no: int, line: str) -> None:
    target_text, sep, expr_text = line.partition("=")
    if not sep:
        raise DSLError(f"cell {cell.name!r}, line {line_no}: expected 'name = expression', got {line!r}")
    target_text = target_text.strip()
    is_next = target_text.endswith("'")
    target = target_text.rstrip("'")
    if is_next and target not in {s.name for s in cell.states}:
        raise DSLError(f"cell {cell.name!r}, line {line_no}: {target!r} is not a state")
    if not is_next and (not target.isidentifier() or target in env or target == "b"):
        raise DSLError(f"cell {cell.name!r}, line {line_no}: cannot assign {target!r}")
    try:
        tree = ast.parse(_NEXT.sub(r"\1__next", expr_text.strip()), mode="eval")
    except SyntaxError as e:
        raise DSLError(f"cell {cell.name!r}, line {line_no}: syntax error in {expr_text.strip()!r}") from e
    builder = _Builder(cell, line_no, f"{target}_new" if is_next else target)
    builder.env = env
    result = builder.build(tree.body)
    desired = f"{target}_new" if is_next else target
    if result not in env.values() and result != desired:
        # name the expression's top node after its target; an input or an
        # already-named node is simply aliased
        result = _rename(cell, result, cell.fresh_name(desired))
    if is_next:
        new_values[target] = result
        env[f"{target}__next"] = result
    else:
        env[target] = result


def _rename(cell: Cell, old: str, new: str) -> str:
    node = cell[old]
    cell.remove_node(old)
    cell.add_node(new, node.op, node.inputs, node.attrs)
    cell.replace_uses(old, new)
    return new
