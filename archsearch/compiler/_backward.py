"""Generate the backward pass of a whole window of a cell (source-to-source reverse mode).

Autograd records ~15 small ops per time step and replays them one by one; at the search's
sizes that bookkeeping, not arithmetic, is most of a train step. The compiler knows the
whole graph, so it writes the window's backward itself, as one function run once per window
by :class:`archsearch.compiler._runtime.GeneratedWindow`:

* the forward runs the cell's step without autograd (``step_record``, the same generated
  step that also returns the node values the backward needs);
* a prologue computes every local derivative (``1 - tanh^2``, ``s (1 - s)``, the other
  factor of a product, ...) for all T steps at once, and multiplies them along chains of
  single-user nodes, so a chain costs one multiply per step instead of one per node;
* the reverse loop then does about one op per node that needs its adjoint written out
  (a linear's slot, a state, a node with several users) and one matmul per linear group;
* each recurrent weight gets its gradient in one matmul per window, from the adjoints the
  loop wrote into a buffer and the source values recorded in the forward.

Adjoints are kept *lazy* where they can be: the adjoint of a single-user node is a list of
terms ``(variable, coefficient)``, with the coefficient a product of local derivatives
computed in the prologue. A term list is written out (materialized) only where it must be.

The generated code names its variables by node position, never by node name (node names
appear only inside ``self.weight_<name>`` attributes, as in the step, and are validated
identifiers). Gradients equal autograd's on the step to rounding (tests check 1e-10 in float64).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from archsearch.compiler._runtime import Size
from archsearch.compiler._sizes import add_sizes, size_code, sum_sizes
from archsearch.ir import SCALAR, VECTOR, Cell, Op

Location = tuple[str, Size, Size]  # (buffer, first column, width), sizes in units of the hidden size n


@dataclass(frozen=True)
class WindowCode:
    """What :class:`~archsearch.compiler._runtime.GeneratedWindow` runs for one cell at one size."""

    record: tuple[str, ...]  # nodes whose values ``step_record`` returns after the new state, in order
    params: tuple[str, ...]  # module attributes whose gradients ``window_backward`` returns, in order
    source: str  # ``def window_backward(self, dys, douts, S, V, X) -> (dxp, dX, d_init, grads)``, size-free


Factor = tuple[str, str]  # (kind, node): "value" of a node, or the derivative of a "tanh"/"sigmoid"/... node


@dataclass(frozen=True)
class Coef:
    """A coefficient: a sum of integer multiples of products of local derivatives (``(product, multiple)``)."""

    terms: tuple[tuple[tuple[Factor, ...], int], ...] = (((), 1),)

    @staticmethod
    def of(*monomials: tuple[tuple[Factor, ...], int]) -> "Coef":
        total: dict[tuple[Factor, ...], int] = {}
        for factors, multiple in monomials:
            key = tuple(sorted(factors))
            total[key] = total.get(key, 0) + multiple
        return Coef(tuple(sorted((f, m) for f, m in total.items() if m)))

    def __mul__(self, other: "Coef") -> "Coef":
        return Coef.of(*((a + b, m * n) for a, m in self.terms for b, n in other.terms))

    def __add__(self, other: "Coef") -> "Coef":
        return Coef.of(*self.terms, *other.terms)

    @property
    def constant(self) -> int | None:
        """The integer this coefficient equals when no factor varies (0 for an empty sum), else None."""
        if any(factors for factors, _ in self.terms):
            return None
        return sum(m for _, m in self.terms)

    @property
    def plain(self) -> bool:
        return self.constant == 1


def _single(kind: str, node: str) -> Coef:
    """The coefficient made of one factor."""
    return Coef.of((((kind, node),), 1))


ONE = Coef()
NEG = Coef((((), -1),))
Term = tuple[str, Coef]  # the adjoint variable it scales (an expression at step t), and its coefficient


class _BackwardWriter:
    """Writes ``window_backward`` for a planned cell; see the module docstring."""

    def __init__(self, cell: Cell, groups, offsets, folded, batched: bool):
        self.cell, self.batched = cell, batched
        self.order = cell.topological_order()
        self.pos = {name: i for i, name in enumerate(self.order)}
        self.widths = cell.widths()
        self.groups = [g for g in groups if g.source != "x"]
        self.group_index = {g.param: j for j, g in enumerate(self.groups)}
        x_start, col = {}, (0, 0)
        for g in groups:
            if g.source == "x":
                x_start[g.param] = col
                col = add_sizes(col, sum_sizes(offsets[m][2] for m in g.members))
        self.xp_width = col
        self.location: dict[str, Location] = {}
        for g in groups:
            for m in g.members:
                _, start, width = offsets[m]
                if g.source == "x":
                    self.location[m] = ("dxp", add_sizes(x_start[g.param], start), width)
                elif g.param in folded:
                    x_param, fold_start, _ = folded[g.param]
                    self.location[m] = ("dxp", add_sizes(add_sizes(x_start[x_param], fold_start), start), width)
                else:
                    self.location[m] = (f"gb{self.group_index[g.param]}", start, width)
        self.group_columns = {}  # non-x group -> (buffer, first column, width) of its adjoint block
        for g in self.groups:
            buffer, start, width = self.location[g.members[0]]
            width = sum_sizes(offsets[m][2] for m in g.members)
            self.group_columns[g.param] = (buffer, start, width)
        self.folded = folded
        self.prologue: list[str] = []
        self.prologue_keys: list[object] = []  # what each prologue line names (see _name)
        self.body: list[str | _SlotProduct] = []
        self.names: dict[object, str] = {}  # values, factors, coefficients, slots -> prologue names
        self.record: list[str] = []
        self.terms: dict[str, list[Term]] = defaultdict(list)
        self.written_groups: set[str] = set()  # non-x groups with at least one member's adjoint written
        self.written_slots: dict[Location, tuple[Term, ...]] = {}
        self.state_adjoint: dict[int, str] = {}
        self.uses_dx = False
        self.fresh = 0
        # the loop again as data, for the native backward (archsearch.compiler._native_backward), in order:
        # ("lin", target, terms, groups): target = sum(terms) + the groups' matmuls, target a variable, a Location
        # (a linear's columns) or "dx"; ("reduce", variable, terms): the terms summed over units; ("state", k, var)
        self.ops: list[tuple] = []
        self.var_size: dict[str, Size] = {}  # variables the loop writes -> width

    # ------------------------------------------------------------ prologue: values, factors, coefficients
    def _name(self, key: object, prefix: str, expr: str) -> str:
        if key not in self.names:
            self.names[key] = f"{prefix}{len(self.names)}"
            self.prologue.append(f"{self.names[key]} = {expr}")
            self.prologue_keys.append(key)
        return self.names[key]

    def value(self, node: str) -> str:
        """The node's values at every step, (T, [K,] B, width)."""
        n = self.cell[node]
        if n.op is Op.STATE:
            return self._name(("value", node), "v", f"S[{n.attr('index')}]")
        if n.op is Op.INPUT:
            return self._name(("value", node), "v", "X")
        assert n.op is not Op.ONE, "the constant needs no recorded value"
        if node not in self.record:
            self.record.append(node)
        return self._name(("value", node), "v", f"V[{self.record.index(node)}]")

    def factor(self, kind: str, node: str) -> str:
        n = self.cell[node]
        if kind == "value":
            return self.value(node)
        if kind == "tanh":
            v = self.value(node)
            return self._name((kind, node), "f", f"1 - {v} * {v}")
        if kind == "sigmoid":
            v = self.value(node)
            return self._name((kind, node), "f", f"{v} * (1 - {v})")
        if kind == "relu":
            v = self.value(node)
            return self._name((kind, node), "f", f"({v} > 0).to({v}.dtype)")
        if kind == "hard_sigmoid":  # clamp passes the gradient where its input lies in [0, 1] (ends included)
            v = self.value(n.inputs[0])
            slope = "self.slope" if n.attr("slope") is None else repr(float(n.attr("slope")))
            pre = self._name(("pre", node), "f", f"({v} * {slope} + 1.0) * 0.5")
            return self._name((kind, node), "f", f"(({pre} >= 0) & ({pre} <= 1)).to({v}.dtype) * 0.5 * {slope}")
        raise AssertionError(kind)

    def coef_tensor(self, coef: Coef) -> str:
        """``coef`` (not a constant) at every step, computed in the prologue."""
        assert coef.constant is None
        sums = []
        for factors, multiple in coef.terms:
            product = " * ".join([self.factor(kind, node) for kind, node in factors] or ["1"])
            sums.append(product if multiple == 1 else f"{multiple} * {product}")
        return self._name(("coef", coef), "c", " + ".join(sums).replace("+ -1 * ", "- "))

    def coef_at(self, coef: Coef) -> str:
        """``coef`` at step t."""
        whole = self.coef_tensor(coef)
        return self._name(("coef steps", coef), "c", f"{whole}.unbind(0)") + "[t]"

    def columns(self, buffer: str, start: Size, width: Size) -> str:
        return f"{buffer}[..., {size_code_n(start)}:{size_code_n(add_sizes(start, width))}]"

    def slot(self, loc: Location) -> str:
        return self._name(("slot", loc), "s", f"{self.columns(*loc)}.unbind(0)") + "[t]"

    # ------------------------------------------------------------ the reverse loop
    def emit(self, line: str) -> None:
        self.body.append("        " + line)

    def visit(self, name: str) -> None:
        node = self.cell[name]
        terms = self.terms[name]
        mms = [g for g in self.groups if g.source == name and g.param in self.written_groups]
        i = self.pos[name]
        if node.op is Op.ONE:
            return
        if node.op is Op.STATE:
            k = node.attr("index")
            if k == 0:
                terms.append(("dyp[t]", ONE))
            if terms or mms:
                self.var_size[f"a{i}"] = _size(self.widths[name])
                self.state_adjoint[k] = self.materialize(f"a{i}", terms, mms)
                self.ops.append(("state", k, self.state_adjoint[k]))
            return
        if node.op is Op.INPUT:
            if terms:
                self.uses_dx = True
                dx = self._name("dx steps", "s", "dxb.unbind(0)") + "[t]"
                self.materialize(dx, terms, [], out=True, key="dx")
            return
        if node.op is Op.LINEAR:  # its adjoint goes to its columns; the group's matmul passes it on
            loc = self.location[name]
            if not terms and not mms:
                return
            if loc in self.written_slots:  # a folded pair: the add's x-linear and its partner share columns
                assert self.written_slots[loc] == tuple(terms) and not mms
            else:
                self.written_slots[loc] = tuple(terms)
                if len(terms) == 1 and terms[0][1].constant is None and not mms:
                    self.body.append(_SlotProduct(terms[0][0], terms[0][1], loc))  # may merge with its neighbours
                    self.ops.append(("lin", loc, list(terms), []))
                else:
                    self.materialize(self.slot(loc), terms, mms, out=True, key=loc)
            group = next((g for g in self.groups if name in g.members), None)
            if group is not None:
                self.written_groups.add(group.param)
            return
        if not terms and not mms:
            return
        if mms or len(terms) > 1:
            self.var_size[f"a{i}"] = _size(self.widths[name])
            terms = [(self.materialize(f"a{i}", terms, mms), ONE)]
        for arg, src in enumerate(node.inputs):
            if self.cell[src].op is Op.ONE:
                continue
            contribution = [(var, coef * self.partial(node, arg)) for var, coef in terms]
            if self.widths[name] == VECTOR and self.widths[src] == SCALAR:  # broadcast: sum over units
                contribution = [(self.reduce(contribution), ONE)]
            self.add_terms(src, contribution)

    def add_terms(self, node: str, contribution: list[Term]) -> None:
        """Add to the node's adjoint; terms of one variable merge into one (their coefficients add)."""
        merged = dict(self.terms[node])
        for var, coef in contribution:
            merged[var] = merged[var] + coef if var in merged else coef
        self.terms[node] = [(var, coef) for var, coef in merged.items() if coef.constant != 0]

    def partial(self, node, arg: int) -> Coef:
        """d node / d node.inputs[arg], as a coefficient."""
        op = node.op
        if op in (Op.TANH, Op.SIGMOID, Op.RELU, Op.HARD_SIGMOID):
            return _single(op.value, node.name)
        if op in (Op.IDENTITY, Op.STEP, Op.ADD):  # step: straight-through
            return ONE
        if op is Op.SUB:
            return ONE if arg == 0 else NEG
        if op is Op.MUL:
            other = node.inputs[1 - arg]
            return ONE if self.cell[other].op is Op.ONE else _single("value", other)
        raise AssertionError(op)

    def reduce(self, terms: list[Term]) -> str:
        """Sum the (vector) terms over the last dimension, into a new (scalar) variable."""
        self.fresh += 1
        name = f"r{self.fresh}"
        self.var_size[name] = _size(SCALAR)
        if len(terms) == 1 and terms[0][1].plain:
            self.emit(f"{name} = {terms[0][0]}.sum(-1, keepdim=True)")
            self.ops.append(("reduce", name, list(terms)))
        elif len(terms) == 1 and terms[0][1].constant is None:
            self.emit(f"{name} = ({terms[0][0]} * {self.coef_at(terms[0][1])}).sum(-1, keepdim=True)")
            self.ops.append(("reduce", name, list(terms)))
        else:
            self.var_size[f"{name}v"] = _size(VECTOR)
            whole = self.materialize(f"{name}v", terms, [], fresh=True)
            self.emit(f"{name} = {whole}.sum(-1, keepdim=True)")
            self.ops.append(("reduce", name, [(whole, ONE)]))
        return name

    def materialize(self, target: str, terms: list[Term], mms: list, out: bool = False, fresh: bool = False,
                    key: object = None) -> str:
        """Write ``sum(terms) + sum(G_g[t] @ W_g)`` into ``target`` (a variable, or a slot with ``out``).

        The first op makes a fresh tensor (or writes the slot); the rest accumulate in place.
        A single plain term is aliased (a variable) or copied (a slot). ``key``: the target in ``ops``
        where it is not the variable ``target`` (a Location, or "dx").
        """
        terms = sorted(terms, key=lambda term: not term[1].plain)  # a plain term first: it can seed an add
        if not mms and len(terms) == 1 and terms[0][1].plain and not out and not fresh:
            return terms[0][0]
        self.ops.append(("lin", target if key is None else key, list(terms), list(mms)))
        rest = list(terms)
        if mms:
            g, mms = mms[0], mms[1:]
            seed = rest.pop(0)[0] if rest and rest[0][1].plain else None
            first = self.matmul(g, seed)
        else:
            first = self.combine(rest)
        if first.startswith("clone(") and out:
            self.emit(f"{target}.copy_({first[6:-1]})")
        else:
            self.emit(f"torch.{first[:-1]}, out={target})" if out else f"{target} = torch.{first}")
        for g in mms:
            group, weight = self.group_at(g)
            self.emit(f"{target}.{'baddbmm_' if self.batched else 'addmm_'}({group}, {weight})")
        for var, coef in rest:
            if coef.constant is None:
                self.emit(f"{target}.addcmul_({var}, {self.coef_at(coef)})")
            else:
                self.emit(f"{target}.add_({var}{_alpha(coef.constant)})")
        return target

    def combine(self, rest: list[Term]) -> str:
        """The first op over one or two terms popped from ``rest`` (a call to a torch function)."""
        var, coef = rest.pop(0)
        if coef.plain and rest:
            var2, coef2 = rest.pop(0)
            if coef2.constant is None:
                return f"addcmul({var}, {var2}, {self.coef_at(coef2)})"
            return f"add({var}, {var2}{_alpha(coef2.constant)})"
        if coef.constant is None:
            return f"mul({var}, {self.coef_at(coef)})"
        return f"clone({var})" if coef.plain else f"mul({var}, {coef.constant})"

    def group_at(self, g) -> tuple[str, str]:
        group = self._name(("group", g.param), "g", self.columns(*self.group_columns[g.param]))
        steps = self._name(("group steps", g.param), "g", f"{group}.unbind(0)")
        weight = self._name(("weight", g.param), "w", f"self.weight_{g.param}")
        return f"{steps}[t]", weight

    def matmul(self, g, seed: str | None) -> str:
        group, weight = self.group_at(g)
        if seed is None:
            return f"{'bmm' if self.batched else 'mm'}({group}, {weight})"
        return f"{'baddbmm' if self.batched else 'addmm'}({seed}, {group}, {weight})"

    def merged_body(self) -> list[str]:
        """The loop's lines; a run of products of one variable into adjacent columns becomes one product.

        (The LSTM's i, j and f: ``dc * [c_i, c_j, c_f]`` into one (B, 3, n) view instead of three ops.)
        """
        lines: list[str] = []
        run: list[_SlotProduct] = []
        for item in [*self.body, None]:
            if isinstance(item, _SlotProduct) and (not run or (item.var, item.loc[0]) == (run[0].var, run[0].loc[0])):
                run.append(item)
                continue
            for chunk in _adjacent_chunks(run):
                lines.append("        " + self.product_line(chunk))
            run = [item] if isinstance(item, _SlotProduct) else []
            if isinstance(item, str):
                lines.append(item)
        return lines

    def product_line(self, chunk: list["_SlotProduct"]) -> str:
        if len(chunk) == 1:
            return f"torch.mul({chunk[0].var}, {self.coef_at(chunk[0].coef)}, out={self.slot(chunk[0].loc)})"
        coefs = ", ".join(self.coef_tensor(p.coef) for p in chunk)
        stacked = self._name(("stacked", tuple(p.coef for p in chunk)), "c",
                             f"torch.stack(torch.broadcast_tensors({coefs}), dim=-2).unbind(0)")
        buffer, start, _ = chunk[0].loc
        width = sum_sizes(p.loc[2] for p in chunk)
        view = self._name(("stacked slot", buffer, start, width), "s",
                          f"{self.columns(buffer, start, width)}.unflatten(-1, ({len(chunk)}, n)).unbind(0)")
        return f"torch.mul({chunk[0].var}.unsqueeze(-2), {stacked}[t], out={view}[t])"

    def _new(self, buffer: str, width: Size) -> str:
        """``new_empty`` where every step writes all of ``buffer``'s columns (each written slot is written whole,
        once per step), else ``new_zeros``: the columns of linears no adjoint reaches stay zero."""
        written = sum_sizes(loc[2] for loc in self.written_slots if loc[0] == buffer)
        return "new_empty" if written == width else "new_zeros"

    # ------------------------------------------------------------ the whole function
    def write(self) -> WindowCode:
        for k, out in enumerate(self.cell.outputs):
            self.terms[out].append((f"do{k}", ONE))
        for name in reversed(self.order):
            self.visit(name)
        states = range(len(self.cell.states))
        carry = [self.state_adjoint.get(k, "dyp[t]" if k == 0 else f"z{k}") for k in states]
        self.emit(f"{', '.join(f'do{k}' for k in states)} = {', '.join(carry)}")
        body = self.merged_body()  # before the prologue is written out: merging adds to it

        params, grads = [], []
        for g in self.groups:
            group = self.names.get(("group", g.param))
            source = self.value(g.source)
            if group is None:  # no member's adjoint was ever written: zero gradients
                grads.append(f"torch.zeros_like(self.weight_{g.param})")
            elif self.batched:  # (T, K, B, .) -> (K, T*B, .): one copy each, then one bmm
                grads.append(f"torch.bmm({group}.transpose(0, 1).flatten(1, 2).transpose(1, 2), "
                             f"{source}.transpose(0, 1).flatten(1, 2))")
            else:
                grads.append(f"{group}.flatten(0, -2).t() @ {source}.flatten(0, -2)")
            params.append(f"weight_{g.param}")
            if g.bias and g.param not in self.folded:  # a folded bias is in xp: autograd takes it from there
                params.append(f"bias_{g.param}")
                if group is None:
                    grads.append(f"torch.zeros_like(self.bias_{g.param})")
                else:
                    grads.append(f"{group}.sum((0, 2))" if self.batched else f"{group}.flatten(0, -2).sum(0)")

        head = [
            "def window_backward(self, dys, douts, S, V, X):",
            "    # dys (T, [K,] B, n): adjoints of the outputs; douts: of the final states; S[k]: state k read at",
            "    # each step; V: the recorded node values; X: the inputs (time first). Returns dxp, dX, d_init, grads.",
            "    T, n = dys.shape[0], self.hidden_size",
            f"    dxp = dys.{self._new('dxp', self.xp_width)}(*dys.shape[:-1], {size_code_n(self.xp_width)})",
        ]
        if self.uses_dx:
            head.append("    dxb = torch.empty_like(X)")  # every step writes all of its dx
        for g in self.groups:
            if g.param not in self.folded:
                j, width = self.group_index[g.param], self.group_columns[g.param][2]
                head.append(f"    gb{j} = dys.{self._new(f'gb{j}', width)}(*dys.shape[:-1], {size_code_n(width)})")
        head.append("    dyp_all = torch.cat([torch.zeros_like(dys[:1]), dys[:-1]])  # dyp[t] = dys[t - 1]")
        head.append("    dyp = dyp_all.unbind(0)")
        self.head_start = head[1:]  # for the native backward: the head without the def line and the prologue
        head += [f"    {line}" for line in self.prologue]
        carry_start = len(head)
        head.append("    do0 = douts[0] + dys[T - 1]")
        for k in states:
            if k:
                head.append(f"    do{k} = douts[{k}]")
            if k and k not in self.state_adjoint:
                head.append(f"    z{k} = torch.zeros_like(douts[{k}])")
        loop = ["    for t in range(T - 1, -1, -1):", *body]
        tail = [
            f"    return dxp, {'dxb' if self.uses_dx else 'None'}, ({''.join(f'do{k}, ' for k in states)}), "
            f"({''.join(g + ', ' for g in grads)})"
        ]
        self.head_end, self.grads = head[carry_start:], grads  # for the native backward
        return WindowCode(tuple(self.record), tuple(params), "\n".join(head + loop + tail) + "\n")


@dataclass(frozen=True)
class _SlotProduct:
    """A loop line ``torch.mul(var, coef[t], out=<loc's columns>[t])``, kept apart so neighbours can merge."""

    var: str
    coef: Coef
    loc: Location


def _adjacent_chunks(run: list[_SlotProduct]) -> list[list[_SlotProduct]]:
    """``run`` (one variable, one buffer) in runs of adjacent full-width (n) columns, by first column."""
    chunks: list[list[_SlotProduct]] = []
    for p in sorted(run, key=lambda p: p.loc[1]):
        last = chunks[-1][-1] if chunks else None
        if last is not None and p.loc[2] == last.loc[2] == (1, 0) and p.loc[1] == add_sizes(last.loc[1], last.loc[2]):
            chunks[-1].append(p)
        else:
            chunks.append([p])
    return chunks


def _size(width: str) -> Size:
    return (0, 1) if width == SCALAR else (1, 0)


def size_code_n(size: Size) -> str:
    return size_code(size, "n")


def _alpha(multiple: int) -> str:
    return "" if multiple == 1 else f", alpha={multiple}"


def write_window_backward(cell: Cell, groups, offsets, folded, batched: bool) -> tuple[WindowCode, "_BackwardWriter"]:
    """The generated backward of ``cell``'s window (offsets and folds size-free, as :class:`Size`), and its
    writer (whose ``ops`` the native backward renders)."""
    writer = _BackwardWriter(cell, groups, offsets, folded, batched)
    return writer.write(), writer
