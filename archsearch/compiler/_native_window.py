"""Write a cell's whole forward window with its elementwise runs as native stages (:mod:`._native`).

The window function keeps the step's matmuls and replaces each run of elementwise nodes by one
call of a compiled stage. Every value has a *home*: a column block of a buffer allocated once per
window, one row per step, so a stage finds every operand by arithmetic on a per-window table of
(address at t = 0, bytes per step, row stride) and its call takes only ``t``:

* a state's new value lands in that state's ``(T + 1, [K,] B, width)`` buffer (row 0 holds the initial
  state), so the states read at each step, the outputs and the final state are views of it;
* each projection writes its step's row of a ``(T, [K,] B, rows)`` buffer (``out=``; batched slices, K of
  them, through ``bmm``, each with its own weights), the input
  projections are the window's ``xp``; a linear is a column block there, and an add of an x-linear and
  a linear (``W x + U h``) is computed by the stage unless the projection folds it (``addmm``);
* a value a later stage, a matmul or the generated backward reads has its own ``(T, [K,] B, width)``
  buffer, which is what the backward gets (nothing is stacked).

A stage's rows are all of a step's rows, over slices and batch (K x B): they are evenly spaced in every
buffer. The hard-sigmoid slope is one per slice.

Only values a matmul reads become tensors in the loop (views of their buffers).
"""

from __future__ import annotations

from archsearch.compiler._codegen import _StepWriter
from archsearch.compiler._native import Stage, slope_lines, stage_source
from archsearch.compiler._runtime import Size
from archsearch.compiler._sizes import add_sizes, sum_sizes
from archsearch.ir import SCALAR, Op

_VECTOR_SIZE: Size = (1, 0)
_SCALAR_SIZE: Size = (0, 1)
Home = tuple[str, int, Size]  # (buffer, row offset: 1 for a state's new value, first column)


class NativeWindowWriter(_StepWriter):
    """``window_native(self, xs, xp, state, K) -> (ys, final state, S, V)`` for one cell, time first: xs and xp
    ``(T, [K,] B, .)``; batched, a stage's rows are the K slices' batch rows (its buffers are contiguous)."""

    def __init__(self, cell, groups, offsets, pairs, users, folded, batched: bool, prefix: str, first: int):
        super().__init__(cell, groups, offsets, pairs, users, folded, batched)
        self.prefix, self.first = prefix, first  # stage names: prefix + index, indices from first
        self.stages: list[Stage] = []
        self.texts: list[str] = []
        self.taken |= {"x", "xp", "self"}
        self.xs, self.xp_all, self.state = self._fresh("xs"), self._fresh("xp_all"), self._fresh("state")
        self.kernels, self.t, self.steps = self._fresh("K"), self._fresh("t"), self._fresh("T")
        self.batch, self.lead, self.esize = self._fresh("B"), self._fresh("L"), self._fresh("E")
        self.prelude: list[str] = []
        self.address: dict[str, tuple[str, str, str]] = {}  # buffer -> (base pointer, bytes per step, row stride)
        self.widths_of: dict[str, Size] = {}  # buffer -> its width
        self.views: dict[tuple[str, Size, Size], str] = {}  # (buffer, first column, width) -> its per-step views
        self.home: dict[str, Home] = {}
        self.state_buffers: list[str] = []
        self.claimed: set[int] = set()  # states whose new value a stage writes into their buffer
        self.hoisted: dict[str, str] = {}  # parameters and transposes read once per window
        group_of = {m: g for g in groups for m in g.members}
        self.folded_adds = {add for add, (_, sl) in pairs.items() if group_of[sl].param in folded}

    # ------------------------------------------------------------ buffers and homes
    def _size_of(self, node: str) -> Size:
        return _SCALAR_SIZE if self.cell.widths()[node] == SCALAR else _VECTOR_SIZE

    def _buffer(self, base: str, rows: str, size: Size) -> str:
        buffer = self._fresh(base)
        self.prelude.append(f"{buffer} = {self.xp_all}.new_empty({rows}, *{self.lead}, {self.size(size)})")
        self._addressed(buffer, size)
        return buffer

    def _addressed(self, tensor: str, size: Size) -> None:
        pointer, step, stride = self._fresh(f"p_{tensor}"), self._fresh(f"r_{tensor}"), self._fresh(f"w_{tensor}")
        self.prelude.append(f"{pointer}, {step}, {stride} = {tensor}.data_ptr(), {tensor}.stride(0) * {self.esize}, "
                            f"{tensor}.stride(-2)")
        self.address[tensor] = (pointer, step, stride)
        self.widths_of[tensor] = size

    def _views(self, buffer: str, start: Size = (0, 0), width: Size | None = None) -> str:
        """The per-step views of a column block of ``buffer`` (the whole of it by default)."""
        width = self.widths_of[buffer] if width is None else width
        key = (buffer, start, width)
        if key not in self.views:
            self.views[key] = self._fresh(f"{buffer}_steps")
            whole = start == (0, 0) and width == self.widths_of[buffer]
            block = buffer if whole else f"{buffer}[..., {self.size(start)}:{self.size(add_sizes(start, width))}]"
            self.prelude.append(f"{self.views[key]} = {block}.unbind(0)")
        return self.views[key]

    def _tensor(self, node: str) -> str:
        """The node's value at step t as a tensor expression (a view of its home)."""
        buffer, offset, start = self.home[node]
        row = self.t if offset == 0 else f"{self.t} + {offset}"
        return f"{self._views(buffer, start, self._size_of(node))}[{row}]"

    def _entry(self, node: str) -> str:
        """``address at t = 0, bytes per step, row stride`` of the node's home (a stage's table row)."""
        buffer, offset, start = self.home[node]
        pointer, step, stride = self.address[buffer]
        base = pointer if offset == 0 else f"{pointer} + {offset} * {step}"
        if start != (0, 0):
            base = f"{base} + ({self.size(start)}) * {self.esize}"
        return f"{base}, {step}, {stride}"

    # ------------------------------------------------------------ what the step writer reads
    def _hoist(self, key: str, expr: str) -> str:
        if key not in self.hoisted:
            self.hoisted[key] = self._fresh(key)
            self.prelude.append(f"{self.hoisted[key]} = {expr}")
        return self.hoisted[key]

    def _bias(self, param: str) -> str:
        """The group's bias as a matmul adds it (per slice, a row that broadcasts over the batch)."""
        return self._hoist(f"bias_{param}", f"self.bias_{param}{'.unsqueeze(1)' if self.batched else ''}")

    def _transposed(self, param: str) -> str:
        return self._hoist(f"weight_t_{param}", f"self.weight_{param}.{'transpose(1, 2)' if self.batched else 't()'}")

    def _matmul(self, seed: str | None, source: str, param: str, out: str) -> None:
        """``out = seed + source @ W.T`` (per slice where batched), written in place."""
        weight = self._transposed(param)
        if seed is None:
            self.emit(f"torch.{'bmm' if self.batched else 'mm'}({source}, {weight}, out={out})")
        else:
            self.emit(f"torch.{'baddbmm' if self.batched else 'addmm'}({seed}, {source}, {weight}, out={out})")

    def _split_input_projections(self) -> None:
        """Every x-linear is a column block of the window's ``xp`` (as the step writer lays it out)."""
        self._addressed(self.xp_all, self.xp_width())
        start: Size = (0, 0)
        for g in (g for g in self.groups if g.source == "x"):
            for partner, plist in g.pairs.items():
                block = start
                for _, xl in plist:
                    self.home[xl] = (self.xp_all, 0, start)
                    start = add_sizes(start, self.offsets[xl][2])
                self.xp_blocks[partner] = (block, sum_sizes(self.offsets[xl][2] for _, xl in plist))
            paired = {xl for plist in g.pairs.values() for _, xl in plist}
            for m in g.members:
                if m not in paired:
                    self.home[m] = (self.xp_all, 0, start)
                    start = add_sizes(start, self.offsets[m][2])
        self._define([m for m in self.home if m != "x" and self.cell[m].op is Op.LINEAR])

    def xp_width(self) -> Size:
        return sum_sizes(self.offsets[m][2] for g in self.groups if g.source == "x" for m in g.members)

    def _project(self, source: str) -> None:
        """Each group's matmul writes its step's row of the group's buffer; a folded group adds its block of xp."""
        if source == "x":
            return
        for g in (g for g in self.groups if g.source == source):
            rows = sum_sizes(self.offsets[m][2] for m in g.members)
            buffer = self._buffer(f"P_{g.param}", self.steps, rows)
            out = f"{self._views(buffer)}[{self.t}]"
            if g.param in self.folded:  # xp's block holds this group's bias: one fused multiply-add
                block, width = self.xp_blocks[g.param]
                xpp = f"{self._views(self.xp_all, block, width)}[{self.t}]"
                self._matmul(xpp, source, g.param, out)
                adds = [add for add, (_, sl) in self.pairs.items() if sl in g.members]
                for add in adds:
                    self.home[add] = (buffer, 0, self.offsets[self.pairs[add][1]][1])
                self._define(adds)
                continue
            self._matmul(self._bias(g.param) if g.bias else None, source, g.param, out)
            for m in g.members:
                self.home[m] = (buffer, 0, self.offsets[m][1])
            self._define(list(g.members))

    def _define(self, names: list[str]) -> None:
        sources = {g.source for g in self.groups}
        for name in names:
            if name in sources:  # a matmul reads it: a tensor
                self.emit(f"{name} = {self._tensor(name)}")
        super()._define(names)

    # ------------------------------------------------------------ the window
    def write_window(self, name: str, order: list[str], record: tuple[str, ...]) -> str:
        states = [s.name for s in self.cell.states]
        self.uses_n = True
        self.xp_blocks: dict[str, tuple[Size, Size]] = {}  # folded partner -> its block of xp
        for k, state in enumerate(states):
            buffer = self._buffer(f"S{k}", f"{self.steps} + 1", self._size_of(state))
            self.prelude.append(f"{buffer}[0].copy_({self.state}[{k}])")
            self.state_buffers.append(buffer)
            self.home[state] = (buffer, 0, (0, 0))
        if self.cell.uses_raw_x():
            self._addressed(self.xs, _VECTOR_SIZE)
            self.home["x"] = (self.xs, 0, (0, 0))
        for state in states:
            self.emit(f"{state} = {self._tensor(state)}")
        self.done |= {"x", *states}
        self._split_input_projections()
        for s in states:
            self._project(s)
        self._stages(order, set(record))
        recorded = self._finish_step(record)
        return self._assemble(name, recorded)

    def _stages(self, order: list[str], record: set[str]) -> None:
        """A node joins the open stage unless it reads a value not ready yet (a linear of a node in the
        stage): that closes the stage first. Linears and folded adds come from the projections."""
        stage: list[str] = []
        for name in order:
            node = self.cell[name]
            if name in self.done or node.op in (Op.INPUT, Op.STATE, Op.LINEAR) or name in self.folded_adds:
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
                self.home[m] = (self.state_buffers[claim], 1, (0, 0))
            else:
                self.home[m] = (self._buffer(f"V_{len(self.home)}", self.steps, self._size_of(m)), 0, (0, 0))
        inputs = list(dict.fromkeys(i for m in stage for i in self.cell[m].inputs if i not in members))
        index = self.first + len(self.stages)
        slope = any(self.cell[m].op is Op.HARD_SIGMOID and self.cell[m].attr("slope") is None for m in stage)
        spec = Stage(f"{self.prefix}{index}", tuple(stage), tuple(inputs), tuple(outputs), slope)
        self.stages.append(spec)
        self.texts.append(stage_source(self.cell, spec))
        table, address = self._fresh(f"tab{index}"), self._fresh(f"tp{index}")
        entries = ", ".join(self._entry(m) for m in (*inputs, *outputs))
        self.prelude += [f"{table} = torch.tensor([{entries}], dtype=torch.int64)", f"{address} = {table}.data_ptr()"]
        self.emit(f"{self.kernels}[{index}]({self.batch}, {self.n}, {self._slope() if slope else '0, 1'}, {self.t}, "
                  f"{address})")
        self._define(outputs)

    def _slope(self) -> str:
        """``pointer, rows per slope`` of the hard-sigmoid slopes (one per slice), set up once."""
        if "slope" not in self.hoisted:
            names = self._fresh("slope"), self._fresh("slope_p"), self._fresh("slope_per")
            self.prelude += slope_lines(self.batch, *names)
            self.hoisted["slope"] = f"{names[1]}, {names[2]}"
        return self.hoisted["slope"]

    def _finish_step(self, record: tuple[str, ...]) -> list[str]:
        """Copy what no stage wrote (a state's new value that is a linear, a state, x or another state's value)
        into the state's buffer; returns the recorded values' window expressions (views of their homes)."""
        for k, out in enumerate(self.cell.outputs):
            if k not in self.claimed:
                self.emit(f"{self._views(self.state_buffers[k])}[{self.t} + 1].copy_({self._tensor(out)})")
        recorded = []
        for name in record:
            buffer, offset, start = self.home[name]
            width = self._size_of(name)
            rows = "1:" if offset else ":"
            whole = start == (0, 0) and width == self.widths_of[buffer]
            recorded.append(f"{buffer}[{rows}]" if whole else
                            f"{buffer}[{rows}, ..., {self.size(start)}:{self.size(add_sizes(start, width))}]")
        return recorded

    def _assemble(self, name: str, recorded: list[str]) -> str:
        buffers = self.state_buffers
        head = [
            f"def {name}(self, {self.xs}, {self.xp_all}, {self.state}, {self.kernels}):",
            f"    {self.n} = self.hidden_size  # sizes below are in units of the hidden size",
            f"    {self.steps}, {self.lead}, {self.esize} = {self.xp_all}.shape[0], {self.xp_all}.shape[1:-1], "
            f"{self.xp_all}.element_size()",
            f"    {self.batch} = {self.lead}.numel()  # a stage's rows: ([slices,] batch)",
            *(f"    {line}" for line in self.prelude),
            f"    for {self.t} in range({self.steps}):",
            *(f"    {line}" for line in self.lines),
        ]
        final = "".join(f"{b}[{self.steps}], " for b in buffers)
        seen = "".join(f"{b}[:{self.steps}], " for b in buffers)
        values = "".join(f"{v}, " for v in recorded)
        head.append(f"    return {buffers[0]}[1:], ({final}), ({seen}), ({values})")
        return "\n".join(head) + "\n"
