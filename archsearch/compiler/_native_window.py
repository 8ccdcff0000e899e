"""Write a cell's whole forward window with its elementwise runs as native stages (:mod:`._native`).

The window function keeps the step's matmuls (the step writer's projections) and replaces each
run of elementwise nodes by one call of a compiled stage. Every value a stage writes has a home
in a buffer allocated once per window, one row per step: a state's new value lands in that
state's ``(T + 1, B, width)`` buffer (row 0 holds the initial state), so the states read at each
step, the outputs and the final state are views of it; a value the generated backward reads has
its own ``(T, B, width)`` buffer, which is what the backward gets (nothing is stacked). A stage
reads a value with a home through its address (``p + t * r``, row stride ``w``), and a
projection's columns through the tensor. Only values a matmul reads become tensors in the loop.
"""

from __future__ import annotations

from archsearch.compiler._codegen import _StepWriter
from archsearch.compiler._native import Stage, stage_source
from archsearch.compiler._runtime import Size
from archsearch.compiler._sizes import add_sizes
from archsearch.ir import SCALAR, Op

_VECTOR_SIZE: Size = (1, 0)
_SCALAR_SIZE: Size = (0, 1)


class NativeWindowWriter(_StepWriter):
    """``window_native(self, xs, xp, state, K) -> (ys, final state, S, V)`` for one cell (unbatched)."""

    def __init__(self, cell, groups, offsets, pairs, users, folded, prefix: str, first: int):
        super().__init__(cell, groups, offsets, pairs, users, folded, False)
        self.prefix, self.first = prefix, first  # stage names: prefix + index, indices from first
        self.stages: list[Stage] = []
        self.texts: list[str] = []
        self.taken |= {"x", "xp", "self"}
        self.xs, self.xp_all, self.state = self._fresh("xs"), self._fresh("xp_all"), self._fresh("state")
        self.kernels, self.t, self.steps = self._fresh("K"), self._fresh("t"), self._fresh("T")
        self.batch, self.esize = self._fresh("B"), self._fresh("E")
        self.prelude: list[str] = []
        self.address: dict[str, tuple[str, str, str]] = {}  # buffer -> (base pointer, bytes per step, row stride)
        self.views: dict[str, str] = {}  # buffer -> its per-step views
        self.home: dict[str, tuple[str, int]] = {}  # node -> (buffer, row offset: 1 for a state's new value)
        self.state_buffers: list[str] = []
        self.claimed: set[int] = set()  # states whose new value a stage writes into their buffer
        self.hoisted: dict[str, str] = {}  # parameters and transposes read once per window
        # node -> (tensor, its address, its row stride, first column): a projection's columns, read in place
        self.columns: dict[str, tuple[str, str, str, Size]] = {}
        self.column_bytes: dict[Size, str] = {}

    # ------------------------------------------------------------ what the step writer reads
    def _hoist(self, key: str, expr: str) -> str:
        if key not in self.hoisted:
            self.hoisted[key] = self._fresh(key)
            self.prelude.append(f"{self.hoisted[key]} = {expr}")
        return self.hoisted[key]

    def _param(self, name: str) -> str:
        return self._hoist(name, f"self.{name}")

    def _transposed(self, param: str) -> str:
        return self._hoist(f"weight_t_{param}", f"self.weight_{param}.t()")

    def _split(self, expr: str, names: list[str], sizes: list[Size]) -> None:
        """Columns of a projection are read in place by the stages (no split); only values that are not nodes
        (``xp_<partner>``, which a projection adds) become tensors."""
        base = expr
        if not expr.isidentifier():
            base = self._fresh("q")
            self.emit(f"{base} = {expr}")
        address, stride = self._fresh(f"{base}_p"), self._fresh(f"{base}_s")
        self.emit(f"{address}, {stride} = {base}.data_ptr(), {base}.stride(0)")
        start: Size = (0, 0)
        for name, size in zip(names, sizes):
            end = add_sizes(start, size)
            if name in self.cell:
                self.columns[name] = (base, address, stride, start)
            else:
                self.emit(f"{name} = {base}[:, {self.size(start)}:{self.size(end)}]")
            start = end

    def _define(self, names: list[str]) -> None:
        sources = {g.source for g in self.groups}
        for name in names:
            if name in sources and name in self.columns:  # a matmul reads it: a tensor
                self.emit(f"{name} = {self._tensor(name)}")
        super()._define(names)

    # ------------------------------------------------------------ buffers
    def _size_of(self, node: str) -> Size:
        return _SCALAR_SIZE if self.cell.widths()[node] == SCALAR else _VECTOR_SIZE

    def _buffer(self, base: str, rows: str, size: Size) -> str:
        buffer = self._fresh(base)
        pointer, step, stride = self._fresh(f"p_{buffer}"), self._fresh(f"r_{buffer}"), self._fresh(f"w_{buffer}")
        self.prelude += [
            f"{buffer} = {self.xp_all}.new_empty({rows}, {self.batch}, {self.size(size)})",
            f"{pointer}, {step}, {stride} = {buffer}.data_ptr(), {buffer}.stride(0) * {self.esize}, {buffer}.stride(1)",
        ]
        self.address[buffer] = (pointer, step, stride)
        return buffer

    def _views(self, buffer: str) -> str:
        if buffer not in self.views:
            self.views[buffer] = self._fresh(f"{buffer}_steps")
            self.prelude.append(f"{self.views[buffer]} = {buffer}.unbind(0)")
        return self.views[buffer]

    def _row(self, node: str) -> str:
        buffer, offset = self.home[node]
        return self.t if offset == 0 else f"{self.t} + {offset}"

    def _pointer(self, node: str) -> str:
        """``pointer, row stride`` of ``node`` at step t: through its home or its projection's columns."""
        if node in self.columns:
            _, address, stride, start = self.columns[node]
            if start == (0, 0):
                return f"{address}, {stride}"
            if start not in self.column_bytes:
                self.column_bytes[start] = self._fresh(f"col{len(self.column_bytes)}")
                self.prelude.append(f"{self.column_bytes[start]} = ({self.size(start)}) * {self.esize}")
            return f"{address} + {self.column_bytes[start]}, {stride}"
        if node not in self.home:
            return f"{node}.data_ptr(), {node}.stride(0)"
        pointer, step, stride = self.address[self.home[node][0]]
        row = self._row(node)
        return f"{pointer} + {row if row == self.t else f'({row})'} * {step}, {stride}"

    def _tensor(self, node: str) -> str:
        """The node's value at step t as a tensor expression."""
        if node in self.columns:
            base, _, _, start = self.columns[node]
            return f"{base}[:, {self.size(start)}:{self.size(add_sizes(start, self._size_of(node)))}]"
        if node not in self.home:
            return node
        return f"{self._views(self.home[node][0])}[{self._row(node)}]"

    # ------------------------------------------------------------ the window
    def write_window(self, name: str, order: list[str], record: tuple[str, ...]) -> str:
        states = [s.name for s in self.cell.states]
        self.uses_n = True
        for k, state in enumerate(states):
            buffer = self._buffer(f"S{k}", f"{self.steps} + 1", self._size_of(state))
            self.prelude.append(f"{buffer}[0].copy_({self.state}[{k}])")
            self.state_buffers.append(buffer)
            self.home[state] = (buffer, 0)
        raw_x = self.cell.uses_raw_x()
        if raw_x:
            self.address[self.xs] = (self._fresh("p_xs"), self._fresh("r_xs"), self._fresh("w_xs"))
            pointer, step, stride = self.address[self.xs]
            self.prelude.append(f"{pointer}, {step}, {stride} = {self.xs}.data_ptr(), {self.xs}.stride(0) * "
                                f"{self.esize}, {self.xs}.stride(1)")
            self.home["x"] = (self.xs, 0)
        self.emit(f"xp = {self._views(self.xp_all)}[{self.t}]")
        for state in states:
            self.emit(f"{state} = {self._tensor(state)}")
        self._split_input_projections()
        self.done |= {"x", *states}
        self.done |= {lin for pair in self.pairs.values() for lin in pair}
        for s in ["x", *states]:
            self._project(s)
        self._stages(order, set(record))
        recorded = self._finish_step(record)
        return self._assemble(name, recorded)

    def _stages(self, order: list[str], record: set[str]) -> None:
        """A node joins the open stage unless it reads a value not ready yet (a linear of a node in the
        stage): that closes the stage first. Linears and paired adds come from the projections."""
        stage: list[str] = []
        for name in order:
            node = self.cell[name]
            if name in self.done or node.op in (Op.INPUT, Op.STATE, Op.LINEAR) or name in self.pairs:
                continue
            if any(i not in self.done and i not in stage for i in node.inputs):
                self._close(stage, record)
                stage = []
                assert all(i in self.done for i in node.inputs), f"{name} reads a value nothing makes"
            stage.append(name)
        self._close(stage, record)

    def _close(self, stage: list[str], record: set[str]) -> None:
        """Emit one stage's call; its outputs (the nodes read outside it) get their homes."""
        members = set(stage)
        self.done |= members  # values inside the stage never leave it
        sources = {g.source for g in self.groups}
        outputs = [m for m in stage if m in self.cell.outputs or m in record or m in sources
                   or any(u not in members for u in self.users[m])]
        if not outputs:
            return
        for m in outputs:
            claim = next((k for k, out in enumerate(self.cell.outputs) if out == m and k not in self.claimed), None)
            if claim is not None:
                self.claimed.add(claim)
                self.home[m] = (self.state_buffers[claim], 1)
            else:
                self.home[m] = (self._buffer(f"V_{len(self.home)}", self.steps, self._size_of(m)), 0)
        inputs = list(dict.fromkeys(i for m in stage for i in self.cell[m].inputs if i not in members))
        index = self.first + len(self.stages)
        slope = any(self.cell[m].op is Op.HARD_SIGMOID and self.cell[m].attr("slope") is None for m in stage)
        spec = Stage(f"{self.prefix}{index}", tuple(stage), tuple(inputs), tuple(outputs), slope)
        self.stages.append(spec)
        self.texts.append(stage_source(self.cell, spec))
        args = ", ".join(self._pointer(m) for m in (*inputs, *outputs))
        self.emit(f"{self.kernels}[{index}]({self.batch}, {self.n}, {self._slope() if slope else '0.0'}, {args})")
        for m in outputs:
            if m in sources:  # a matmul reads it: a tensor
                self.emit(f"{m} = {self._tensor(m)}")
        self._define(outputs)

    def _slope(self) -> str:
        if "slope" not in self.address:
            self.address["slope"] = (self._fresh("slope"), "", "")
            self.prelude.append(f"{self.address['slope'][0]} = float(self.slope)")
        return self.address["slope"][0]

    def _finish_step(self, record: tuple[str, ...]) -> list[str]:
        """Copy what no stage wrote (a state's new value that is a linear, a state, x or another state's value;
        a recorded linear) into its buffer; returns the recorded values' window expressions."""
        for k, out in enumerate(self.cell.outputs):
            if k not in self.claimed:
                self.emit(f"{self._views(self.state_buffers[k])}[{self.t} + 1].copy_({self._tensor(out)})")
        recorded = []
        for name in record:
            if name not in self.home:
                buffer = self._buffer(f"V_{len(self.home)}", self.steps, self._size_of(name))
                self.emit(f"{self._views(buffer)}[{self.t}].copy_({self._tensor(name)})")
                self.home[name] = (buffer, 0)
            buffer, offset = self.home[name]
            recorded.append(f"{buffer}[1:]" if offset else buffer)
        return recorded

    def _assemble(self, name: str, recorded: list[str]) -> str:
        buffers = self.state_buffers
        head = [
            f"def {name}(self, {self.xs}, {self.xp_all}, {self.state}, {self.kernels}):",
            f"    {self.n} = self.hidden_size  # sizes below are in units of the hidden size",
            f"    {self.steps}, {self.batch}, {self.esize} = {self.xp_all}.shape[0], {self.xp_all}.shape[1], "
            f"{self.xp_all}.element_size()",
            *(f"    {line}" for line in self.prelude),
            f"    for {self.t} in range({self.steps}):",
            *(f"    {line}" for line in self.lines),
        ]
        final = "".join(f"{b}[{self.steps}], " for b in buffers)
        seen = "".join(f"{b}[:{self.steps}], " for b in buffers)
        values = "".join(f"{v}, " for v in recorded)
        head.append(f"    return {buffers[0]}[1:], ({final}), ({seen}), ({values})")
        return "\n".join(head) + "\n"

