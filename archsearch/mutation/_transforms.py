"""The six transforms of Jozefowicz et al. (2015, §3.2), each anchored at one node.

Every transform edits a :class:`~archsearch.ir.Cell` in place and returns the
details a :class:`~archsearch.mutation.AppliedTransform` records. Transforms only
make width-consistent choices (a scalar gate is replaced by a scalar, a linear
never reads a scalar), so the widths of a child are always legal; what they may
still break (the input ``x`` cut off, a constant output, a cycle through the
other node of (6)) is left to :meth:`Cell.validate`, and the child is rejected.

Linears versus activations (transforms (1) and (3)):

* The paper's activation set is {tanh, sigmoid, ReLU, Linear(0,x), Linear(1,x),
  Linear(0.9,x), Linear(1.1,x)}. ``Linear(a, x)`` is a *square* (width n)
  ``linear`` node with ``diag=a``: ``a`` is added to the diagonal of W at init.
* (1) anchors at every elementwise activation (tanh, sigmoid, relu, identity,
  hard_sigmoid, step) and at every square linear, and replaces its form by a
  *different* member of the set. Activation -> Linear(a, .) gives a fresh
  ``linear`` with a bias (init 0); Linear(a, .) -> Linear(a', .) only changes
  ``diag`` (the bias flag and bias init stay); Linear -> tanh drops the weights.
* Scalar (width-1) activations are replaced only by tanh, sigmoid or ReLU (a
  square linear of a scalar does not exist). Row linears (``w·v``, width 1, the
  scalar gates of GF-RNN / HM-LSTM) are projections, not activations: (1) never
  anchors there, and (4) cannot remove them (that would change a width).
* hard_sigmoid and step are never introduced, only kept or replaced by (1).
* (3) inserts a member of the same set (the scalar subset on a scalar edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from archsearch.ir import ACTIVATIONS, BINARY, SCALAR, SOURCES, VECTOR, Cell, Op

__all__ = [
    "FORMS",
    "TRANSFORM_NAMES",
    "Form",
    "Rejected",
    "TransformContext",
    "applicable_kinds",
    "apply_transform",
]

TRANSFORM_NAMES: dict[int, str] = {
    1: "replace_activation",
    2: "replace_binary",
    3: "insert_activation",
    4: "remove_node",
    5: "replace_with_ancestor",
    6: "replace_with_binary",
}


class Rejected(Exception):
    """A transform would make the child invalid (e.g. a cycle); the whole child is redrawn."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Form:
    """An activation-like form: an elementwise activation, or Linear(diag, .) when ``op`` is linear."""

    op: Op
    diag: float | None = None

    def label(self) -> str:
        if self.op is Op.LINEAR:
            return f"Linear({self.diag:g},x)"
        return self.op.value

    def slug(self) -> str:
        """A short identifier for new node names."""
        return self.op.value if self.op is not Op.LINEAR else "lin" + f"{self.diag:g}".replace(".", "")


FORMS: tuple[Form, ...] = (
    Form(Op.TANH),
    Form(Op.SIGMOID),
    Form(Op.RELU),
    Form(Op.LINEAR, 0.0),
    Form(Op.LINEAR, 1.0),
    Form(Op.LINEAR, 0.9),
    Form(Op.LINEAR, 1.1),
)
SCALAR_FORMS: tuple[Form, ...] = tuple(f for f in FORMS if f.op is not Op.LINEAR)
_BINARY_OPS: tuple[Op, ...] = (Op.ADD, Op.MUL, Op.SUB)  # fixed order: rng choices stay reproducible


class TransformContext:
    """Cached facts about a cell between two edits: widths, users and use counts."""

    def __init__(self, cell: Cell):
        self.cell = cell
        self.widths = cell.widths()
        self.users: dict[str, list[str]] = {n.name: [] for n in cell}
        self.uses: dict[str, int] = {n.name: 0 for n in cell}
        for node in cell:
            for src in node.inputs:
                self.users[src].append(node.name)
                self.uses[src] += 1
        for out in cell.outputs:
            self.uses[out] += 1
        self._anc: dict[str, list[str]] = {}

    def ancestors(self, name: str) -> list[str]:
        """Strict ancestors of ``name``, sorted (so random choices are reproducible)."""
        if name not in self._anc:
            seen: set[str] = set()
            stack = list(self.cell[name].inputs)
            while stack:
                cur = stack.pop()
                if cur not in seen:
                    seen.add(cur)
                    stack.extend(self.cell[cur].inputs)
            self._anc[name] = sorted(seen)
        return self._anc[name]

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.users[name])
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(self.users[cur])
        return seen

    def same_width(self, names: list[str], width: str) -> list[str]:
        return [n for n in names if self.widths[n] == width]


def _choice(rng: np.random.Generator, items: list | tuple) -> Any:
    return items[int(rng.integers(len(items)))]


def _is_source(cell: Cell, name: str) -> bool:
    return cell[name].op in SOURCES


# ---------------------------------------------------------------- (1) replace activation
def current_form(cell: Cell, name: str) -> Form | None:
    """The activation-like form of node ``name``, or None if (1) cannot anchor there."""
    node = cell[name]
    if node.op in ACTIVATIONS:
        return Form(node.op)
    if node.op is Op.LINEAR and node.attr("width") == VECTOR:
        return Form(Op.LINEAR, float(node.attr("diag")))
    return None


def _forms_for(ctx: TransformContext, name: str) -> tuple[Form, ...]:
    return SCALAR_FORMS if ctx.widths[name] == SCALAR else FORMS


def _ok_replace_activation(ctx: TransformContext, name: str) -> bool:
    return current_form(ctx.cell, name) is not None


def _replace_activation(ctx: TransformContext, name: str, rng: np.random.Generator) -> dict[str, Any]:
    node = ctx.cell[name]
    old = current_form(ctx.cell, name)
    assert old is not None, f"(1) anchored at {name} ({node.op.value}), not an activation"
    new = _choice(rng, [f for f in _forms_for(ctx, name) if f != old])
    if new.op is not Op.LINEAR:
        node.attrs = {}
    elif node.op is Op.LINEAR:
        node.attrs = {**node.attrs, "diag": new.diag}
    else:
        node.attrs = {"width": VECTOR, "diag": new.diag, "bias": True, "bias_init": 0.0}
    node.op = new.op
    return {"from": old.label(), "to": new.label()}


# ---------------------------------------------------------------- (2) replace binary op
def _ok_replace_binary(ctx: TransformContext, name: str) -> bool:
    return ctx.cell[name].op in BINARY


def _replace_binary(ctx: TransformContext, name: str, rng: np.random.Generator) -> dict[str, Any]:
    node = ctx.cell[name]
    old = node.op
    node.op = _choice(rng, [op for op in _BINARY_OPS if op is not old])
    return {"from": old.value, "to": node.op.value}


# ---------------------------------------------------------------- (3) insert activation
def _ok_insert_activation(ctx: TransformContext, name: str) -> bool:
    return not _is_source(ctx.cell, name)


def _insert_activation(ctx: TransformContext, name: str, rng: np.random.Generator) -> dict[str, Any]:
    cell = ctx.cell
    node = cell[name]
    pos = int(rng.integers(len(node.inputs)))
    parent = node.inputs[pos]
    form = _choice(rng, SCALAR_FORMS if ctx.widths[parent] == SCALAR else FORMS)
    new = cell.fresh_name(f"{name}_{form.slug()}")
    attrs = {"width": VECTOR, "diag": form.diag, "bias": True, "bias_init": 0.0} if form.op is Op.LINEAR else None
    cell.add_node(new, form.op, [parent], attrs)
    node.inputs = tuple(new if i == pos else src for i, src in enumerate(node.inputs))
    return {"parent": parent, "position": pos, "new": new, "activation": form.label()}


# ---------------------------------------------------------------- (4) remove node
def _ok_remove_node(ctx: TransformContext, name: str) -> bool:
    node = ctx.cell[name]
    if node.op in SOURCES or len(node.inputs) != 1:
        return False
    return ctx.uses[name] == 1 and ctx.widths[node.inputs[0]] == ctx.widths[name]


def _remove_node(ctx: TransformContext, name: str, rng: np.random.Generator) -> dict[str, Any]:
    cell = ctx.cell
    node = cell[name]
    src = node.inputs[0]
    label = current_form(cell, name)
    cell.replace_uses(name, src)
    cell.remove_node(name)
    return {"input": src, "op": label.label() if label else node.op.value}


# ---------------------------------------------------------------- (5) replace with ancestor
def _ok_replace_with_ancestor(ctx: TransformContext, name: str) -> bool:
    return not _is_source(ctx.cell, name) and bool(ctx.same_width(ctx.ancestors(name), ctx.widths[name]))


def _replace_with_ancestor(ctx: TransformContext, name: str, rng: np.random.Generator) -> dict[str, Any]:
    cell = ctx.cell
    ancestor = _choice(rng, ctx.same_width(ctx.ancestors(name), ctx.widths[name]))
    before = len(cell)
    cell.replace_uses(name, ancestor)
    cell.remove_node(name)
    cell.prune()
    return {"ancestor": ancestor, "pruned": before - 1 - len(cell)}


# ---------------------------------------------------------------- (6) replace with binary op
def _left_candidates(ctx: TransformContext, name: str) -> list[str]:
    return ctx.same_width(ctx.ancestors(name), ctx.widths[name])


def _right_candidates(ctx: TransformContext, other: str, width: str) -> list[str]:
    # a vector result needs one vector operand (the left); a scalar one needs two scalars
    anc = ctx.ancestors(other)
    return anc if width == VECTOR else ctx.same_width(anc, SCALAR)


def _others(ctx: TransformContext, width: str) -> list[str]:
    """Candidates for the paper's "random node A": non-sources with a usable ancestor."""
    if width == VECTOR:  # every non-source has an ancestor
        return [n.name for n in ctx.cell if n.op not in SOURCES]
    return [n.name for n in ctx.cell if n.op not in SOURCES and _right_candidates(ctx, n.name, width)]


def _ok_replace_with_binary(ctx: TransformContext, name: str) -> bool:
    if _is_source(ctx.cell, name) or not _left_candidates(ctx, name):
        return False
    return ctx.widths[name] == VECTOR or bool(_others(ctx, SCALAR))


def _replace_with_binary(ctx: TransformContext, name: str, rng: np.random.Generator) -> dict[str, Any]:
    cell = ctx.cell
    width = ctx.widths[name]
    left = _choice(rng, _left_candidates(ctx, name))
    other = _choice(rng, _others(ctx, width))
    right = _choice(rng, _right_candidates(ctx, other, width))
    op = _choice(rng, _BINARY_OPS)
    detail = {"op": op.value, "left": left, "right": right, "other": other}
    if right == name or right in ctx.descendants(name):
        raise Rejected("cycle")  # the paper draws A freely; such a child would feed itself
    new = cell.fresh_name(f"{name}_{op.value}")
    cell.add_node(new, op, [left, right])
    before = len(cell)
    cell.replace_uses(name, new)
    cell.remove_node(name)
    cell.prune()
    return {**detail, "new": new, "pruned": before - 1 - len(cell)}


Checker = Callable[[TransformContext, str], bool]
Applier = Callable[[TransformContext, str, np.random.Generator], dict[str, Any]]
_TABLE: dict[int, tuple[Checker, Applier]] = {
    1: (_ok_replace_activation, _replace_activation),
    2: (_ok_replace_binary, _replace_binary),
    3: (_ok_insert_activation, _insert_activation),
    4: (_ok_remove_node, _remove_node),
    5: (_ok_replace_with_ancestor, _replace_with_ancestor),
    6: (_ok_replace_with_binary, _replace_with_binary),
}


def applicable_kinds(ctx: TransformContext, name: str) -> list[int]:
    """The transforms (1..6) that can anchor at node ``name``."""
    return [k for k, (ok, _) in _TABLE.items() if ok(ctx, name)]


def apply_transform(ctx: TransformContext, kind: int, name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Apply transform ``kind`` at ``name`` in place (``ctx.cell`` changes; build a new context after).

    Raises:
        ValueError: the transform is not applicable at ``name``.
        Rejected: the edit would make an invalid child (a cycle).
    """
    ok, apply = _TABLE[kind]
    if not ok(ctx, name):
        raise ValueError(f"transform ({kind}) {TRANSFORM_NAMES[kind]} does not apply at node {name!r}")
    return apply(ctx, name, rng)
