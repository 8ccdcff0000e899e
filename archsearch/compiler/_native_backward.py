"""The generated window backward with its loop's elementwise work as native stages (:mod:`._native`).

:class:`~archsearch.compiler._backward._BackwardWriter` records its reverse loop as data (``ops``):
sums of adjoint terms (``var * coef[t]``, integer multiples) written to a variable or a linear's
columns, with matmuls of written groups; sums over units; the states' adjoints. Here the matmuls
stay torch calls and every run of the rest between two matmuls becomes one C stage: one loop over
the batch, in it one vectorized loop per statement. A stage computes each coefficient (a product of
local derivatives such as ``1 - v * v``) where it uses it, from the values the forward recorded,
rounded as the torch prologue rounds it; so the prologue keeps only views (HM-LSTM's had ~230
window-wide products). The buffers the adjoints are written to and the weight gradients are the
torch version's, line for line.

Every value has an address at step t: a buffer row through pointer arithmetic (``p + t * r``, rows over
``[slices,] batch``); a state's adjoint lives in a ``(T + 1, [K,] B, width)`` buffer (row T holds the final
state's adjoint; row t what step t passes back), so the carry between steps costs nothing; the
loop's other variables are scratch rows reused at every step.
"""

from __future__ import annotations

from archsearch.compiler._backward import Coef, _BackwardWriter, size_code_n
from archsearch.compiler._native import SLOPE, Stage, slope_lines, slope_of, stage_head
from archsearch.ir import SCALAR

Operand = tuple  # ("var", name) | ("value", node) | ("slot", Location) | ("dx",) | ("adjoint", k, row offset)
Statement = tuple[str, Operand, list[tuple[Operand, Coef | None, int]]]  # (kind, target, terms)
FACTORS = ("coef", "tanh", "sigmoid", "relu", "hard_sigmoid", "pre")  # prologue keys the stages compute themselves


class NativeBackwardWriter:
    """``window_backward_native(self, dys, douts, S, V, X, K)``: the torch version's results, its loop native."""

    def __init__(self, writer: _BackwardWriter, first: int):
        self.w = writer
        self.first = first
        self.stages: list[Stage] = []
        self.texts: list[str] = []
        self.prelude: list[str] = []
        self.lines: list[str] = []
        self.pointers: dict[Operand, tuple[str, str, str]] = {}  # operand -> (base, bytes per step, row stride)
        self.states = range(len(writer.cell.states))
        self.state_vars = {op[2]: op[1] for op in writer.ops
                           if op[0] == "state" and any(o[0] == "lin" and o[1] == op[2] for o in writer.ops)}
        self.pending: list[Statement] = []
        self.views: set[object] = set()  # prologue keys of per-step views the native loop reads
        self.slope_used = False  # a stage reads the hard-sigmoid slope

    # ------------------------------------------------------------ operands
    def operand(self, var: str) -> Operand:
        if var.startswith("do") and var[2:].isdigit():
            return ("adjoint", int(var[2:]), 1)
        if var in self.state_vars:
            return ("adjoint", self.state_vars[var], 0)
        return ("var", var)

    def scalar(self, op: Operand) -> bool:
        kind = op[0]
        if kind == "var":
            return op[1] != "dyp[t]" and self.w.var_size[op[1]] == (0, 1)
        if kind == "value":
            return self.w.widths[op[1]] == SCALAR
        if kind == "slot":
            return op[1][2] == (0, 1)
        if kind == "adjoint":
            return self.w.widths[self.w.cell.states[op[1]].name] == SCALAR
        return False  # dx

    def _setup_once(self, op: Operand) -> tuple[str, str, str]:
        """``(base, bytes per step, row stride)`` of ``op`` (set up in the prelude once)."""
        if op not in self.pointers:
            self.pointers[op] = self._setup(op)
        return self.pointers[op]

    def _setup(self, op: Operand) -> tuple[str, str, str]:
        k = len(self.pointers)
        base, step, stride = f"np{k}", f"nr{k}", f"nw{k}"
        kind = op[0]
        if kind == "var" and op[1] == "dyp[t]":
            tensor = "dyp_all"
        elif kind == "var":  # a scratch row, the same at every step
            self.prelude.append(f"ns{k} = dys.new_empty(*L, {size_code_n(self.w.var_size[op[1]])})")
            self.prelude.append(f"{base}, {stride} = ns{k}.data_ptr(), ns{k}.stride(-2)")
            return base, "", stride
        elif kind == "value":  # a recorded value, a state read or the input, time first
            tensor = self.w.value(op[1])
        elif kind == "slot":
            tensor = op[1][0]
        elif kind == "dx":
            tensor = "dxb"
        else:
            tensor = f"D{op[1]}"
        self.prelude.append(f"{base}, {step}, {stride} = {tensor}.data_ptr(), {tensor}.stride(0) * E, {tensor}.stride(-2)")
        if kind == "slot" and op[1][1] != (0, 0):
            self.prelude.append(f"{base} += ({size_code_n(op[1][1])}) * E")
        return base, step, stride

    def tensor(self, op: Operand) -> str:
        """``op`` at step t as a tensor (for torch's matmuls)."""
        kind = op[0]
        if kind == "var" and op[1] == "dyp[t]":
            return "dyp[t]"
        if kind == "var":
            self._setup_once(op)
            return f"ns{list(self.pointers).index(op)}"
        if kind == "slot":
            self.views.add(("slot", op[1]))
            return self.w.slot(op[1])
        if kind == "dx":
            self.views.add("dx steps")
            return self.w._name("dx steps", "s", "dxb.unbind(0)") + "[t]"
        return f"D{op[1]}_steps[{'t' if op[2] == 0 else 't + 1'}]"

    def target(self, key) -> Operand:
        if isinstance(key, str) and key == "dx":
            return ("dx",)
        if isinstance(key, tuple):
            return ("slot", key)
        return self.operand(key)

    def terms(self, terms) -> list[tuple[Operand, Coef | None, int]]:
        out = []
        for var, coef in terms:
            constant = coef.constant
            out.append((self.operand(var), None if constant is not None else coef, 1 if constant is None else constant))
        return out

    # ------------------------------------------------------------ the loop
    def write(self) -> str:
        for op in self.w.ops:
            if op[0] == "lin":
                self.lin(self.target(op[1]), op[2], op[3])
            elif op[0] == "reduce":
                self.pending.append(("reduce", self.operand(op[1]), self.terms(op[2])))
            else:  # a state's adjoint: in its buffer's row t already, unless it is another variable's alias
                k, var = op[1], op[2]
                if self.operand(var) != ("adjoint", k, 0):
                    self.pending.append(("write", ("adjoint", k, 0), [(self.operand(var), None, 1)]))
        for k in self.states:
            if k not in self.w.state_adjoint:  # a state no step reads: its adjoint passes dys (k = 0) or nothing
                terms = [(("var", "dyp[t]"), None, 1)] if k == 0 else []
                self.pending.append(("write", ("adjoint", k, 0), terms))
        self.flush()
        return self.assemble()

    def lin(self, target: Operand, terms, mms) -> None:
        if not mms:
            self.pending.append(("write", target, self.terms(terms)))
            return
        self.flush()  # the matmuls read columns the statements before them write
        seed = terms[0][0] if terms and terms[0][1].plain else None
        rest = terms[1:] if seed is not None else terms
        out = self.tensor(target)
        group, weight = self.w.group_at(mms[0])
        if seed is None:
            self.lines.append(f"torch.{'bmm' if self.w.batched else 'mm'}({group}, {weight}, out={out})")
        else:
            self.lines.append(f"torch.{'baddbmm' if self.w.batched else 'addmm'}({self.tensor(self.operand(seed))}, "
                              f"{group}, {weight}, out={out})")
        for g in mms[1:]:
            group, weight = self.w.group_at(g)
            self.lines.append(f"{out}.{'baddbmm_' if self.w.batched else 'addmm_'}({group}, {weight})")
        if rest:
            self.pending.append(("accumulate", target, self.terms(rest)))

    def flush(self) -> None:
        """One C stage for the statements pending."""
        if not self.pending:
            return
        statements, self.pending = self.pending, []
        operands: list[Operand] = []
        slope = False
        for _, target, terms in statements:
            for op in (target, *_reads(terms, self.w.cell)):
                if op not in operands:
                    operands.append(op)
            slope = slope or any(kind == "hard_sigmoid" and self.w.cell[node].attr("slope") is None
                                 for kind, node in _factors(terms))
        index = self.first + len(self.stages)
        name = f"b{index}"
        self.stages.append(Stage(name, (), (), (), False))
        self.texts.append(_stage_source(name, statements, operands, [self.scalar(o) for o in operands], self.w.cell,
                                        slope))
        self.slope_used = self.slope_used or slope
        entries = []
        for op in operands:  # (address at t = 0, bytes per step, row stride): the stage computes its addresses
            base, step, stride = self._setup_once(op)
            if op[0] == "adjoint" and op[2]:
                base = f"{base} + {step}"
            entries += [base, step or "0", stride]
        self.prelude.append(f"tb{index} = torch.tensor([{', '.join(entries)}], dtype=torch.int64)")
        self.prelude.append(f"tp{index} = tb{index}.data_ptr()")
        self.lines.append(f"K[{index}](B, n, {'slope_p, slope_per' if slope else '0, 1'}, t, tp{index})")

    def prologue(self) -> list[str]:
        """The torch prologue less what only its loop reads (coefficients, and per-step views of them and of
        columns): the stages compute each coefficient from the recorded values where they use it."""
        keep = []
        for key, line in zip(self.w.prologue_keys, self.w.prologue):
            kind = key[0] if isinstance(key, tuple) else key
            if kind in (*FACTORS, "coef steps", "stacked", "stacked slot") or (
                    kind in ("slot", "dx steps") and key not in self.views):
                continue
            keep.append(f"    {line}")
        return keep

    def assemble(self) -> str:
        head = [*self.w.head_start, *self.prologue(), *self.w.head_end]
        states = [self.w.cell.states[k].name for k in self.states]
        adjoints = []
        for k in self.states:
            width = size_code_n((0, 1) if self.w.widths[states[k]] == SCALAR else (1, 0))
            adjoints += [f"    D{k} = dys.new_empty(T + 1, *L, {width})", f"    D{k}[T].copy_(do{k})",
                         f"    D{k}_steps = D{k}.unbind(0)"]
        tail = (f"    return dxp, {'dxb' if self.w.uses_dx else 'None'}, ({''.join(f'D{k}[0], ' for k in self.states)}), "
                f"({''.join(g + ', ' for g in self.w.grads)})")
        return "\n".join([
            "def window_backward_native(self, dys, douts, S, V, X, K):",
            *head,
            "    L, E = dys.shape[1:-1], dys.element_size()  # rows: ([slices,] batch)",
            "    B = L.numel()",
            *(f"    {line}" for line in (slope_lines("B", "slope_d", "slope_p", "slope_per") if self.slope_used else [])),
            *adjoints,
            *(f"    {line}" for line in self.prelude),
            "    for t in range(T - 1, -1, -1):",
            *(f"        {line}" for line in self.lines),
            tail,
        ]) + "\n"


def _stage_source(name: str, statements: list[Statement], operands: list[Operand], scalar: list[bool],
                  cell, slope: bool) -> str:
    """C of one backward stage: per batch row, one loop over units per statement."""
    index = {op: k for k, op in enumerate(operands)}

    def at(op: Operand) -> str:
        return f"a{index[op]}[{'0' if scalar[index[op]] else 'j'}]"

    def factor(kind: str, node: str) -> str:
        """A local derivative, rounded as the torch prologue (:meth:`_BackwardWriter.factor`) rounds it."""
        v = at(_value(cell, kind, node))
        if kind == "value":
            return v
        if kind == "tanh":
            return f"((real)1 - {v} * {v})"
        if kind == "sigmoid":
            return f"({v} * ((real)1 - {v}))"
        if kind == "relu":
            return f"({v} > (real)0 ? (real)1 : (real)0)"
        s = slope_of(cell[node])
        pre = f"(({v} * {s} + (real)1) * (real)0.5)"
        return f"(({pre} >= (real)0 && {pre} <= (real)1 ? (real)1 : (real)0) * (real)0.5 * {s})"

    def coefficient(coef: Coef) -> str:
        sums = []
        for factors, multiple in coef.terms:
            product = " * ".join([factor(kind, node) for kind, node in factors] or ["(real)1"])
            sums.append(product if multiple == 1 else f"(real){multiple} * {product}")
        return "(" + " + ".join(sums).replace("+ (real)-1 * ", "- ") + ")"

    body = []
    for kind, target, terms in statements:
        parts = []
        for var, coef, multiple in terms:
            product = at(var) if coef is None else f"{at(var)} * {coefficient(coef)}"
            parts.append(product if multiple == 1 else f"(real){multiple} * {product}")
        total = " + ".join(parts) or "(real)0"
        wide = not scalar[index[target]] if kind != "reduce" else any(not scalar[index[o]] for o in _reads(terms, cell))
        extent = "n" if wide else "1"
        if kind == "reduce":
            body += ["    { real acc = 0;", "    _Pragma(\"omp simd reduction(+:acc)\")",
                     f"    for (int64_t j = 0; j < {extent}; j++) acc += {total};",
                     f"    a{index[target]}[0] = acc; }}"]
        else:
            value = f"{at(target)} + {total}" if kind == "accumulate" else total
            body += ["    _Pragma(\"omp simd\")", f"    for (int64_t j = 0; j < {extent}; j++) {at(target)} = {value};"]
    rows = [f"    real *a{k} = i{k} + b * s{k};" for k in range(len(operands))]
    return "\n".join([*stage_head(name, len(operands)), "  for (int64_t b = 0; b < B; b++) {", *rows,
                      *([SLOPE] if slope else []), *body, "  }", "}"]) + "\n"


def _factors(terms: list[tuple[Operand, Coef | None, int]]):
    """Every local derivative ``(kind, node)`` the terms' coefficients multiply."""
    for _, coef, _ in terms:
        for factors, _ in coef.terms if coef else ():
            yield from factors


def _value(cell, kind: str, node: str) -> Operand:
    """The recorded value a local derivative is computed from (a hard sigmoid's: its input's)."""
    return ("value", cell[node].inputs[0] if kind == "hard_sigmoid" else node)


def _reads(terms: list[tuple[Operand, Coef | None, int]], cell) -> list[Operand]:
    """What a statement's terms read: their variables, and the values their coefficients are computed from."""
    return [var for var, _, _ in terms] + [_value(cell, kind, node) for kind, node in _factors(terms)]
