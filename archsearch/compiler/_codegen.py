"""Generate a readable Python step function from a validated cell graph.

The plan groups linear maps by the node they read (one matmul per source),
lays out the input's projections so they can be computed for all time steps
before the loop, and pairs ``add(W_a x, W_b s)`` nodes so that each pair costs
a slice of one wide addition instead of two matmuls and an add (as cuDNN does
for the LSTM's gates). The same source text is what ``archsearch export`` writes.

The step is size-free: split sizes and slices are written in terms of the layer's
``hidden_size`` (read at run time), so one step serves every size. The helpers it
calls (``hard_sigmoid``, ``step_st``, ``blinear``) live in
:mod:`archsearch.compiler._runtime`, with the layers that run it.

A paired projection whose source feeds nothing else is one ``torch.addmm``
(the partner's bias is folded into the precomputed x projections). With
``batched=True`` the writer emits the same step for K stacked settings: every
tensor gets a leading slice dimension and each linear map is a batched matmul
(``blinear`` / ``torch.baddbmm``), see :mod:`archsearch.compiler._batched`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archsearch.compiler._backward import WindowCode, write_window_backward
from archsearch.compiler._native import Stage, library_source
from archsearch.compiler._runtime import Fold, Group, Layout, Size, Slot, units
from archsearch.compiler._sizes import add_sizes, size_code, sum_sizes
from archsearch.ir import BINARY, OPS, SCALAR, Cell, Node, Op

# seeds whose layout is nn.LSTM's / nn.GRU's: their parameters get PyTorch's state_dict names
TORCH_LAYOUT_SEEDS = {"torch-lstm": "ifgo", "torch-gru": "rzn"}  # seed -> PyTorch's gate order

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
    offsets: dict[str, tuple[str, int, int]]  # linear node -> (group param, start, width) at this hidden size
    source: str  # the step function (size-free: it reads self.hidden_size)
    state_names: list[str]
    uses_slope: bool
    # partner param -> (x group param, first column in that x group, width): partners all of whose
    # linears are paired; their bias and add live in the precomputed x projection (step: one addmm)
    folded: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    batched: bool = False
    layout: Layout | None = None  # the same, size-free, for the runtime (archsearch.compiler._runtime)
    window: WindowCode | None = None  # the generated backward of a window (size-free, as the step)
    record_source: str = ""  # step_record: the step, also returning the values the window's backward reads
    native: "NativeCode | None" = None  # the window, recording window and backward with native elementwise stages


@dataclass(frozen=True)
class NativeCode:
    """``window_native`` and ``window_record_native`` (Python, each taking the stage kernels ``K``) and their C."""

    source: str
    c_source: str
    stages: tuple[Stage, ...]


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
    sym: dict[str, tuple[str, Size, Size]] = {}  # linear node -> (group param, start, width), size-free
    for g in groups.values():
        start: Size = (0, 0)
        for m in g.members:
            w: Size = (0, 1) if widths[m] == SCALAR else (1, 0)
            sym[m] = (g.param, start, w)
            start = add_sizes(start, w)
    group_list = list(groups.values())
    sym_folded = _folded_partners(group_list, sym)
    uses_slope = any(n.op is Op.HARD_SIGMOID and n.attr("slope") is None for n in cell)
    states = [s.name for s in cell.states]
    layout = _layout(cell, group_list, sym, sym_folded, uses_slope)
    at = lambda size: units(size, hidden_size)  # noqa: E731
    offsets = {m: (p, at(start), at(w)) for m, (p, start, w) in sym.items()}
    folded = {p: (xg, at(start), at(w)) for p, (xg, start, w) in sym_folded.items()}
    window, backward = write_window_backward(cell, group_list, sym, sym_folded, batched)
    fused = _fused_products(cell, users, keep=set(window.record))  # the same in both steps: the same rounding
    source = _StepWriter(cell, group_list, sym, pairs, users, sym_folded, batched, fused).write(order)
    recorder = _StepWriter(cell, group_list, sym, pairs, users, sym_folded, batched, fused)
    record_source = recorder.write(order, record=window.record)
    native = _native_code(cell, group_list, sym, pairs, users, sym_folded, order, window.record, backward, batched)
    return Plan(group_list, offsets, source, states, uses_slope, folded, batched, layout, window, record_source, native)


def _native_code(cell: Cell, groups, sym, pairs, users, folded, order: list[str], record: tuple[str, ...],
                 backward, batched: bool) -> NativeCode:
    """The window's loop with its elementwise runs as native stages (see archsearch.compiler._native), without
    and with the values the generated backward reads, and the generated backward's loop likewise."""
    from archsearch.compiler._native_backward import NativeBackwardWriter
    from archsearch.compiler._native_window import NativeWindowWriter

    forward = NativeWindowWriter(cell, groups, sym, pairs, users, folded, batched, "s", 0)
    plain = forward.write_window("window_native", order, ())
    recorder = NativeWindowWriter(cell, groups, sym, pairs, users, folded, batched, "r", len(forward.stages))
    recorded = recorder.write_window("window_record_native", order, record)
    reverse = NativeBackwardWriter(backward, len(forward.stages) + len(recorder.stages))
    backward_source = reverse.write()
    stages = forward.stages + recorder.stages + reverse.stages
    return NativeCode("\n".join([plain, recorded, backward_source]),
                      library_source(forward.texts + recorder.texts + reverse.texts), tuple(stages))


def _layout(cell: Cell, groups: list[LinearGroup], sym, folded, uses_slope: bool) -> Layout:
    rows = {g.param: sum_sizes(sym[m][2] for m in g.members) for g in groups}
    slots = tuple(
        Slot(m, p, start, w, float(cell[m].attr("diag")), float(cell[m].attr("bias_init")))
        for m, (p, start, w) in sym.items()
    )  # fmt: skip
    return Layout(
        groups=tuple(Group(g.param, g.source, g.bias, rows[g.param]) for g in groups),
        slots=slots,
        folds=tuple(Fold(p, xg, start, w) for p, (xg, start, w) in folded.items()),
        states=tuple((s.name, s.width == SCALAR) for s in cell.states),
        uses_slope=uses_slope,
        raw_x=cell.uses_raw_x(),
        depth=cell.depth,
        torch_names=_torch_names(cell, groups),
    )



def _torch_names(cell: Cell, groups: list[LinearGroup]) -> tuple[tuple[str, str], ...]:
    """``(("x_b", "ih"), ("h_b", "hh"))`` when ``cell`` is a PyTorch-layout seed whose fused rows are in
    nn.LSTM's gate order (i, f, g, o) or nn.GRU's (r, z, n); else ``()``."""
    from archsearch.search_spaces import seed

    graph = {k: v for k, v in cell.to_dict().items() if k not in ("name", "doc")}
    members = {g.param: g.members for g in groups}
    for name, gates in TORCH_LAYOUT_SEEDS.items():
        reference = {k: v for k, v in seed(name).to_dict().items() if k not in ("name", "doc")}
        rows = {"x_b": [f"{g}_W" for g in gates], "h_b": [f"{g}_W_1" for g in gates]}
        if graph == reference and members == rows:
            return (("x_b", "ih"), ("h_b", "hh"))
    return ()


def _folded_partners(groups: list[LinearGroup], offsets) -> dict[str, tuple[str, Size, Size]]:
    """Partner groups all of whose linears are paired with x: their step is ``addmm(xp_part, s, W.T)``.

    Returns partner param -> (x group param, first column inside that x group, width).
    """
    by_param = {g.param: g for g in groups}
    folded = {}
    for xg in (g for g in groups if g.source == "x"):
        start: Size = (0, 0)
        for partner, plist in xg.pairs.items():
            width = sum_sizes(offsets[xl][2] for _, xl in plist)
            if len(by_param[partner].members) == len(plist):
                folded[partner] = (xg.param, start, width)
            start = add_sizes(start, width)
    return folded


def _fused_products(cell: Cell, users: dict[str, list[str]], keep: set[str]) -> set[str]:
    """Products ``m = a * b`` read only by one sum ``s = c + m``: the step writes ``s = torch.addcmul(c, a, b)``
    (one op instead of two; c * f + i * j in the LSTM). Not a product whose value is an output or in ``keep``
    (recorded for the backward), nor one that involves the constant 1 (which may be a Python float)."""
    fused: set[str] = set()
    for node in cell:
        if node.op is not Op.ADD or node.inputs[0] == node.inputs[1]:
            continue
        for arg in (1, 0):
            product, other = cell[node.inputs[arg]], cell[node.inputs[1 - arg]]
            if (product.op is Op.MUL and users[product.name] == [node.name] and product.name not in cell.outputs
                    and product.name not in keep and other.op is not Op.ONE
                    and all(cell[i].op is not Op.ONE for i in product.inputs)):
                fused.add(product.name)
                break
    return fused


class _StepWriter:
    def __init__(self, cell, groups, offsets, pairs, users, folded, batched, fused: set[str] = frozenset()):
        self.cell: Cell = cell
        self.fused = fused  # products written inside their sum (see _fused_products)
        self.folded: dict[str, tuple[str, Size, Size]] = folded
        self.batched = batched
        self.taken = {node.name for node in cell}
        self.n = self._fresh("n", "units")
        self.uses_n = False  # a size was written: the step starts with n = self.hidden_size
        self.groups: list[LinearGroup] = groups
        self.offsets = offsets
        self.pairs: dict[str, tuple[str, str]] = pairs
        self.users = users
        self.lines: list[str] = []
        self.done: set[str] = set()  # nodes whose variable is defined

    def _fresh(self, *names: str) -> str:
        """The first of ``names`` (then ``names[0]`` with underscores) that no node and no earlier pick uses."""
        name = next(m for m in (*names, *(f"{names[0]}{'_' * i}" for i in range(1, 1000))) if m not in self.taken)
        self.taken.add(name)
        return name

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def write(self, order: list[str], record: tuple[str, ...] | None = None) -> str:
        """The step's source; with ``record``, ``step_record`` that also returns those nodes' values."""
        states = [s.name for s in self.cell.states]
        self.emit("# xp: this step's share of the input projections, computed for all steps before the loop")
        self._split_input_projections()
        self.done |= {"x", *states}
        self.done |= {lin for pair in self.pairs.values() for lin in pair}  # folded into their add
        for s in ["x", *states]:
            self._project(s)
        for name in order:
            node = self.cell[name]
            if name in self.done or node.op in (Op.INPUT, Op.STATE) or name in self.fused:
                continue
            self.emit(f"{name} = {self._expr(node)}")
            self.done.add(name)
            self._project(name)
        outs = ", ".join(self.cell.outputs) + ("," if len(self.cell.outputs) == 1 else "")
        if record is None:
            self.emit(f"return ({outs})")
        else:
            self.emit(f"return ({outs}), ({''.join(f'{name}, ' for name in record)})")
        header = [f"def {'step' if record is None else 'step_record'}(self, x, xp, {', '.join(states)}):"]
        if self.uses_n:
            header.append(f"    {self.n} = self.hidden_size  # sizes below are in units of the hidden size")
        return "\n".join([*header, *self.lines]) + "\n"

    def size(self, size: Size) -> str:
        """``size`` as Python text (``2 * n + 1``)."""
        self.uses_n = self.uses_n or size[0] != 0
        return size_code(size, self.n)

    def _split_input_projections(self) -> None:
        x_groups = [g for g in self.groups if g.source == "x"]
        if not x_groups:
            return
        start: Size = (0, 0)
        for g in x_groups:
            names, sizes = [], []
            for partner, plist in g.pairs.items():
                names.append(f"xp_{partner}")
                sizes.append(sum_sizes(self.offsets[xl][2] for _, xl in plist))
            paired = {xl for plist in g.pairs.values() for _, xl in plist}
            for m in g.members:
                if m not in paired:
                    names.append(m)
                    sizes.append(self.offsets[m][2])
            total = sum_sizes(sizes)
            end = add_sizes(start, total)
            part = "xp" if len(x_groups) == 1 else f"xp[..., {self.size(start)}:{self.size(end)}]"
            start = end
            self._split(part, names, sizes)
            self._define([m for m in names if m in g.members])

    def _split(self, expr: str, names: list[str], sizes: list[Size]) -> None:
        if len(names) == 1:
            self.emit(f"{names[0]} = {expr}")
        else:
            # split_with_sizes, not torch.split: the same op without torch.split's Python wrapper (~7 us a call)
            self.emit(f"{', '.join(names)} = {expr}.split_with_sizes([{', '.join(map(self.size, sizes))}], dim=-1)")

    def _project(self, source: str) -> None:
        """Emit the fused matmul(s) of every linear that reads ``source``."""
        if source == "x":
            return
        for g in (g for g in self.groups if g.source == source):
            weight = self._param(f"weight_{g.param}")
            proj = f"p_{g.param}"
            paired = [(add, sl) for add, (_, sl) in self.pairs.items() if sl in g.members]
            rest = [m for m in g.members if m not in {sl for _, sl in paired}]
            width = sum_sizes(self.offsets[sl][2] for _, sl in paired)
            if g.param in self.folded:  # xp_ already holds this group's bias: one fused multiply-add
                sums = f"s_{g.param}"
                if self.batched:
                    self.emit(f"{sums} = torch.baddbmm(xp_{g.param}, {source}, {weight}.transpose(1, 2))")
                else:
                    self.emit(f"{sums} = torch.addmm(xp_{g.param}, {source}, {self._transposed(g.param)})")
                self._split(sums, [add for add, _ in paired], [self.offsets[sl][2] for _, sl in paired])
                self._define([add for add, _ in paired])
                continue
            bias = f", {self._param(f'bias_{g.param}')}" if g.bias else ""
            linear = "blinear" if self.batched else "F.linear"
            self.emit(f"{proj} = {linear}({source}, {weight}{bias})")
            if paired:
                sums = f"s_{g.param}"
                head = f"{proj}[..., :{self.size(width)}]" if rest else proj
                self.emit(f"{sums} = {head} + xp_{g.param}")
                self._split(sums, [add for add, _ in paired], [self.offsets[sl][2] for _, sl in paired])
            if rest:
                self._split(f"{proj}[..., {self.size(width)}:]" if paired else proj, rest, [self.offsets[m][2] for m in rest])
            self._define([add for add, _ in paired] + rest)

    def _param(self, name: str) -> str:
        """A parameter of the module, as the step reads it."""
        return f"self.{name}"

    def _transposed(self, param: str) -> str:
        """``weight_<param>`` transposed (unbatched)."""
        return f"self.weight_{param}.t()"

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
        product = next((i for i in node.inputs if i in self.fused), None) if node.op is Op.ADD else None
        if product is not None:
            other = node.inputs[0] if product == node.inputs[1] else node.inputs[1]
            return f"torch.addcmul({other}, {', '.join(self.cell[product].inputs)})"
        if node.op is Op.LINEAR:  # only reached for linears the plan did not fuse (cannot happen)
            raise AssertionError(f"linear {node.name} was not placed in a group")
        return OPS[node.op].lowering.format(*node.inputs)
