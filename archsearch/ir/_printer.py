"""Write a cell's equations in the paper's notation.

Gates (activations of a compound expression), nodes used more than once and the
new states get a line of their own; linears and elementwise ops are written
inline, e.g. ``i = tanh(W_1 x_t + W_2 h_{t-1} + b_1)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archsearch.ir._ops import OPS, SCALAR, Op

if TYPE_CHECKING:
    from archsearch.ir._graph import Cell, Node

_GATES = frozenset({Op.TANH, Op.SIGMOID, Op.RELU, Op.HARD_SIGMOID, Op.STEP})
_PREC = {Op.ADD: 1, Op.SUB: 1, Op.MUL: 2}


class _Printer:
    def __init__(self, cell: "Cell"):
        self.cell = cell
        self.order = cell.topological_order()
        self.users = {n: cell.users(n) for n in self.order}
        self.weight_ids: dict[str, int] = {}
        for name in self.order:
            if cell[name].op is Op.LINEAR:
                self.weight_ids[name] = len(self.weight_ids) + 1
        self.notes: list[str] = []

    # which nodes get their own line
    def named(self, node: "Node") -> bool:
        if node.op in (Op.INPUT, Op.STATE, Op.ONE):
            return False
        if node.name in self.cell.outputs or len(self.users[node.name]) > 1:
            return True
        if node.op in _GATES:
            arg = self.cell[node.inputs[0]]
            return arg.op not in (Op.INPUT, Op.STATE, Op.ONE) and not self.named(arg)
        return False

    def ref(self, name: str) -> str:
        node = self.cell[name]
        if node.op is Op.INPUT:
            return "x_t"
        if node.op is Op.STATE:
            return f"{name}_{{t-1}}"
        if node.op is Op.ONE:
            return "1"
        if self.named(node):
            return self.label(name)
        return self.expr(node)

    def label(self, name: str) -> str:
        for k, out in enumerate(self.cell.outputs):
            if out == name:
                return f"{self.cell.states[k].name}_t"
        return name

    def terms(self, node: "Node") -> tuple[list[str], list[str]]:
        """Flatten an inline sum into its terms and the biases of its linears."""
        if node.op is Op.ADD and not self.named(node) or node.op is Op.ADD and node is self._root:
            terms: list[str] = []
            biases: list[str] = []
            for src in node.inputs:
                child = self.cell[src]
                if child.op in (Op.ADD, Op.LINEAR) and not self.named(child):
                    t, b = self.terms(child)
                else:
                    t, b = [self.operand(child, Op.ADD, right=False)], []
                terms += t
                biases += b
            return terms, biases
        if node.op is Op.LINEAR:
            return [self.linear(node)], [f"b_{self.weight_ids[node.name]}"] if node.attr("bias") else []
        return [self.ref(node.name)], []

    def linear(self, node: "Node") -> str:
        k = self.weight_ids[node.name]
        w = f"w_{k}·" if node.attr("width") == SCALAR else f"W_{k} "
        if node.attr("diag"):
            self.notes.append(f"W_{k} starts with {node.attr('diag'):g}·I added (Linear({node.attr('diag'):g}, x))")
        if node.attr("bias") and node.attr("bias_init"):
            self.notes.append(f"b_{k} starts at {node.attr('bias_init'):g}")
        arg = self.cell[node.inputs[0]]
        text = self.ref(arg.name)
        if arg.op in _PREC and not self.named(arg):
            text = f"({text})"
        return w + text

    def operand(self, node: "Node", parent: Op, right: bool) -> str:
        text = self.ref(node.name)
        if self.named(node) or node.op not in _PREC:
            if node.op is Op.LINEAR and node.attr("bias") and not self.named(node) and parent is not Op.ADD:
                return f"({text})"
            return text
        if _PREC[node.op] < _PREC[parent] or (right and parent is Op.SUB and _PREC[node.op] == 1):
            return f"({text})"
        return text

    def expr(self, node: "Node") -> str:
        op = node.op
        if op in (Op.ADD, Op.LINEAR):
            terms, biases = self.terms(node)
            return " + ".join(terms + biases)
        if op in (Op.SUB, Op.MUL):
            a, b = (self.cell[i] for i in node.inputs)
            return f"{self.operand(a, op, False)} {OPS[op].symbol} {self.operand(b, op, True)}"
        if op is Op.IDENTITY:
            return self.ref(node.inputs[0])
        if op is Op.HARD_SIGMOID:
            slope = node.attr("slope")
            return f"hard_σ_{{{'a' if slope is None else f'{slope:g}'}}}({self.ref(node.inputs[0])})"
        return f"{OPS[op].symbol}({self.ref(node.inputs[0])})"

    def lines(self) -> list[str]:
        lines = []
        for name in self.order:
            node = self.cell[name]
            if node.op in (Op.INPUT, Op.STATE, Op.ONE) or not self.named(node):
                continue
            self._root = node
            lhs = self.label(name)
            lines.append(f"{lhs} = {self.expr(node)}")
        # a state copied from an input, or sharing its node with an earlier state
        for k, out in enumerate(self.cell.outputs):
            first = self.label(out)
            mine = f"{self.cell.states[k].name}_t"
            if self.cell[out].op in (Op.INPUT, Op.STATE, Op.ONE):
                lines.append(f"{mine} = {self.ref(out)}")
            elif first != mine:
                lines.append(f"{mine} = {first}")
        return lines + sorted(set(f"  ({n})" for n in self.notes))

    _root: "Node | None" = None


def equations(cell: "Cell") -> str:
    """The equations of ``cell``, one per line."""
    return "\n".join(_Printer(cell).lines())
