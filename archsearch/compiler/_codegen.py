"""Generate a readable Python step function from a validated cell graph.

The plan groups linear maps by the node they read (one matmul per source),
lays out the input's projections so they can be computed for all time steps
before the loop, and pairs ``add(W_a x, W_b s)`` nodes so that each pair costs
a slice of one wide addition instead of two matmuls and an add (as cuDNN does
for the LSTM's gates). The same source text is what ``archsearch export`` writes.

A paired projection whose source feeds nothing else is one ``torch.addmm``
(the partner's bias is folded into the precomputed x projections). With
``batched=True`` the writer emits the same step for K stacked settings: every
tensor gets a leading slice dimension and each linear map is a batched matmul
(``blinear`` / ``torch.baddbmm``), see :mod:`archsearch.compiler._batched`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archsearch.ir import BINARY, OPS, SCALAR, Cell, Node, Op

# Helpers the generated code calls; export copies this text into its file.
HELPERS_SOURCE = '''
def hard_sigmoid(v, slope):
    """max(0, min(1, (slope * v + 1) / 2)) (Chung et al. 2016)."""
    return torch.clamp((v * slope + 1.0) * 0.5, 0.0, 1.0)


def step_st(v):
    """1 where v > 0.5 else 0; the backward pass treats it as the identity (straight-through)."""
    return v + ((v > 0.5).to(v.dtype) - v).detach()
'''

# The extra helper of batched steps (K settings stacked on a leading dimension).
BATCHED_HELPERS_SOURCE = '''
def blinear(v, weight, bias=None):
    """Per-slice linear map: v (K, B, in), weight (K, out, in), bias (K, out) -> (K, B, out)."""
    if bias is None:
        return torch.bmm(v, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), v, weight.transpose(1, 2))
'''


@dataclass
class LinearGroup:
    """Linears that read one source and share one weight matrix (and bias, if ``bias``)."""

    source: str
    bias: bool
    members: list[str] = field(default_factory=list)  # linear node names in layout order
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (x side only) partner -> [(add, x-linear)]

    @property
    def param(self) -> str:
        return f"{self.source}{'_b' if self.bias else ''}"


@dataclass
class Plan:
    """Everything the module needs: parameter layout and the step's source."""

    groups: list[LinearGroup]
    offsets: dict[str, tuple[str, int, int]]  # linear node -> (group param, start, width)
    source: str
    state_names: list[str]
    uses_slope: bool
    # partner param -> (x group param, first column in that x group, width): partners all of whose
    # linears are paired; their bias and add live in the precomputed x projection (step: one addmm)
    folded: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    batched: bool = False


def _sole_user(cell: Cell, name: str, users: dict[str, list[str]]) -> str | None:
    us = users[name]
    return us[0] if len(us) == 1 and name not in cell.outputs else None


def _find_pairs(cell: Cell, users: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
    """add nodes of the form W_a x + W_b s (s != x, same bias-free-ness of s side) -> (x-linear, s-linear)."""
    pairs: dict[str, tuple[str, str]] = {}
    for node in cell:
        if node.op is not Op.ADD:
            continue
        a, b = (cell[i] for i in node.inputs)
        if not (a.op is Op.LINEAR and b.op is Op.LINEAR) or a.name == b.name:
            continue
        if b.inputs[0] == "x" and a.inputs[0] != "x":
            a, b = b, a
        if a.inputs[0] != "x" or b.inputs[0] == "x" or a.attr("width") != b.attr("width"):
            continue
        if _sole_user(cell, a.name, users) == node.name and _sole_user(cell, b.name, users) == node.name:
            pairs[node.name] = (a.name, b.name)
    return pairs


def plan_cell(cell: Cell, hidden_size: int, batched: bool = False) -> Plan:
    """Lay out the parameters and write the step function of ``cell`` (already validated).

    ``batched``: write the step for K stacked settings (weights ``(K, out, in)``, tensors ``(K, B, .)``).
    """
    order = cell.topological_order()
    users = {n: cell.users(n) for n in order}
    pairs = _find_pairs(cell, users)

    groups: dict[tuple[str, bool], LinearGroup] = {}
    for name in order:
        node = cell[name]
        if node.op is Op.LINEAR:
            key = (node.inputs[0], bool(node.attr("bias")))
            groups.setdefault(key, LinearGroup(*key))
    # paired members first, in the same order on both sides, then the rest
    partner_x_bias: dict[str, bool] = {}
    for add, (xl, sl) in list(pairs.items()):
        sg = groups[(cell[sl].inputs[0], bool(cell[sl].attr("bias")))]
        x_bias = bool(cell[xl].attr("bias"))
        if partner_x_bias.setdefault(sg.param, x_bias) != x_bias:
            del pairs[add]  # one partner pairs with one x group only; leave this add unfused
            continue
        sg.members.append(sl)
        groups[("x", x_bias)].pairs.setdefault(sg.param, []).append((add, xl))
    for xg in (g for g in groups.values() if g.source == "x"):
        xg.members = [xl for plist in xg.pairs.values() for _, xl in plist]
    paired_linears = {lin for xl, sl in pairs.values() for lin in (xl, sl)}
    for name in order:
        node = cell[name]
        if node.op is Op.LINEAR and name not in paired_linears:
            groups[(node.inputs[0], bool(node.attr("bias")))].members.append(name)

    widths = cell.widths()
    offsets: dict[str, tuple[str, int, int]] = {}
    for g in groups.values():
        start = 0
        for m in g.members:
            w = 1 if widths[m] == SCALAR else hidden_size
            offsets[m] = (g.param, start, w)
            start += w
    folded = _folded_partners(list(groups.values()), offsets)
    gen = _StepWriter(cell, hidden_size, list(groups.values()), offsets, pairs, users, folded, batched)
    uses_slope = any(n.op is Op.HARD_SIGMOID and n.attr("slope") is None for n in cell)
    states = [s.name for s in cell.states]
    return Plan(list(groups.values()), offsets, gen.write(order), states, uses_slope, folded, batched)


def _folded_partners(groups: list[LinearGroup], offsets) -> dict[str, tuple[str, int, int]]:
    """Partner groups all of whose linears are paired with x: their step is ``addmm(xp_part, s, W.T)``.

    Returns partner param -> (x group param, first column inside that x group, width).
    """
    by_param = {g.param: g for g in groups}
    folded = {}
    for xg in (g for g in groups if g.source == "x"):
        start = 0
        for partner, plist in xg.pairs.items():
            width = sum(offsets[xl][2] for _, xl in plist)
            if len(by_param[partner].members) == len(plist):
                folded[partner] = (xg.param, start, width)
            start += width
    return folded


class _StepWriter:
    def __init__(self, cell, n, groups, offsets, pairs, users, folded, batched):
        self.cell: Cell = cell
        self.folded: dict[str, tuple[str, int, int]] = folded
        self.batched = batched
        self.n = n
        self.groups: list[LinearGroup] = groups
        self.offsets = offsets
        self.pairs: dict[str, tuple[str, str]] = pairs
        self.users = users
        self.lines: list[str] = []
        self.done: set[str] = set()  # nodes whose variable is defined

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def write(self, order: list[str]) -> str:
        states = [s.name for s in self.cell.states]
        self.emit("# xp: this step's share of the input projections, computed for all steps before the loop")
        self._split_input_projections()
        self.done |= {"x", *states}
        self.done |= {lin for pair in self.pairs.values() for lin in pair}  # folded into their add
        for s in ["x", *states]:
            self._project(s)
        for name in order:
            node = self.cell[name]
            if name in self.done or node.op in (Op.INPUT, Op.STATE):
                continue
            self.emit(f"{name} = {self._expr(node)}")
            self.done.add(name)
            self._project(name)
        outs = ", ".join(self.cell.outputs) + ("," if len(self.cell.outputs) == 1 else "")
        self.emit(f"return ({outs})")
        header = f"def step(self, x, xp, {', '.join(states)}):"
        return "\n".join([header, *self.lines]) + "\n"

    def _split_input_projections(self) -> None:
        x_groups = [g for g in self.groups if g.source == "x"]
        if not x_groups:
            return
        start = 0
        for g in x_groups:
            names, sizes = [], []
            for partner, plist in g.pairs.items():
                names.append(f"xp_{partner}")
                sizes.append(sum(self.offsets[xl][2] for _, xl in plist))
            paired = {xl for plist in g.pairs.values() for _, xl in plist}
            for m in g.members:
                if m not in paired:
                    names.append(m)
                    sizes.append(self.offsets[m][2])
            total = sum(sizes)
            part = "xp" if len(x_groups) == 1 else f"xp[..., {start}:{start + total}]"
            start += total
            self._split(part, names, sizes)
            self._define([m for m in names if m in g.members])

    def _split(self, expr: str, names: list[str], sizes: list[int]) -> None:
        if len(names) == 1:
            self.emit(f"{names[0]} = {expr}")
        else:
            self.emit(f"{', '.join(names)} = torch.split({expr}, {sizes}, dim=-1)")

    def _project(self, source: str) -> None:
        """Emit the fused matmul(s) of every linear that reads ``source``."""
        if source == "x":
            return
        for g in (g for g in self.groups if g.source == source):
            weight = f"self.weight_{g.param}"
            proj = f"p_{g.param}"
            paired = [(add, sl) for add, (_, sl) in self.pairs.items() if sl in g.members]
            rest = [m for m in g.members if m not in {sl for _, sl in paired}]
            width = sum(self.offsets[sl][2] for _, sl in paired)
            if g.param in self.folded:  # xp_ already holds this group's bias: one fused multiply-add
                sums = f"s_{g.param}"
                if self.batched:
                    self.emit(f"{sums} = torch.baddbmm(xp_{g.param}, {source}, {weight}.transpose(1, 2))")
                else:
                    self.emit(f"{sums} = torch.addmm(xp_{g.param}, {source}, {weight}.t())")
                self._split(sums, [add for add, _ in paired], [self.offsets[sl][2] for _, sl in paired])
                self._define([add for add, _ in paired])
                continue
            bias = f", self.bias_{g.param}" if g.bias else ""
            linear = "blinear" if self.batched else "F.linear"
            self.emit(f"{proj} = {linear}({source}, {weight}{bias})")
            if paired:
                sums = f"s_{g.param}"
                head = f"{proj}[..., :{width}]" if rest else proj
                self.emit(f"{sums} = {head} + xp_{g.param}")
                self._split(sums, [add for add, _ in paired], [self.offsets[sl][2] for _, sl in paired])
            if rest:
                self._split(f"{proj}[..., {width}:]" if paired else proj, rest, [self.offsets[m][2] for m in rest])
            self._define([add for add, _ in paired] + rest)

    def _define(self, names: list[str]) -> None:
        """Mark nodes produced by a split as defined, then project whatever reads them."""
        self.done |= set(names)
        for name in names:
            self._project(name)

    def _float_one(self, node: Node) -> bool:
        """The constant 1 may be a Python float when only binary ops read it, each with a tensor beside it."""
        if node.name in self.cell.outputs:
            return False
        for user in map(self.cell.__getitem__, self.users[node.name]):
            if user.op not in BINARY or any(self.cell[i].op is Op.ONE for i in user.inputs if i != node.name):
                return False
            if user.inputs[0] == user.inputs[1]:
                return False
        return True

    def _expr(self, node: Node) -> str:
        if node.op is Op.ONE:
            if self._float_one(node):  # broadcasts like the tensor, without an allocation per step
                return "1.0"
            # a (B, 1) tensor, so any op (even tanh) may read it
            return "x.new_ones(x.shape[0], x.shape[1], 1)" if self.batched else "x.new_ones(x.shape[0], 1)"
        if node.op is Op.HARD_SIGMOID:
            slope = node.attr("slope")
            return f"hard_sigmoid({node.inputs[0]}, {'self.slope' if slope is None else repr(float(slope))})"
        if node.op is Op.LINEAR:  # only reached for linears the plan did not fuse (cannot happen)
            raise AssertionError(f"linear {node.name} was not placed in a group")
        return OPS[node.op].lowering.format(*node.inputs)
