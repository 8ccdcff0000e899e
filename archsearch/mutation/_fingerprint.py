"""Functional fingerprint of a cell: the functional-equivalence check of AutoML-Zero.

The cell is compiled in float64 with deterministic weights, run on a fixed
random input sequence from a fixed random state, and every state at every step
is rounded and hashed. Two cells that compute the same function with the same
weights collide; different functions practically never do.

The hard part is choosing weights that do not depend on node names or the
order nodes were added, yet match up between two differently *built* cells
computing the same function. Weights are chosen in two phases at step 0:

1. Each linear gets weights seeded by the (rounded) *value* of its input and its
   own attributes (width, ``diag``, bias, ``bias_init``); the cell is evaluated
   at step 0 in numpy with these weights. Sibling linears (same input, same
   attributes, e.g. the four W x of an LSTM) get equal weights here.
2. Each node gets a *context*: the values of the nodes that consume it and, in
   turn, their contexts and the outputs they reach. A consumer whose value
   equals the node's (``relu(sigmoid(v))``) is transparent, so a no-op node
   does not change anyone's context. Each linear's final weights are seeded by
   its input value, attributes and context, which tells siblings apart (``j``
   meets ``i`` in ``i*j``, ``f`` meets ``c`` in ``c*f``).

Everything is computed from values and graph shape, never from names, so
renamed and commuted (``a+b`` vs ``b+a``) cells collide, and so do cells that
differ by a no-op such as an inserted ``relu`` after a ``sigmoid``.
Initialisation is part of the architecture: ``diag`` and ``bias_init`` are
applied as the real init applies them, so LSTM and LSTM-b (forget bias 1)
differ, as do Linear(0,x) and Linear(1,x).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import numpy as np

from archsearch.ir import COMMUTATIVE, SCALAR, Cell, Node, Op

if TYPE_CHECKING:
    import torch

    from archsearch.compiler import CellStack

FP_UNITS = 8  # n; input size is n too, so cells reading x without a linear compile
FP_BATCH = 4
FP_STEPS = 5
FP_DECIMALS = 8  # rounding before hashing; float64 reordering noise is ~1e-15
FP_VERSION = "fp1"

_Weights = dict[str, tuple[np.ndarray, "np.ndarray | None"]]


def _h(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def _value_key(a: np.ndarray) -> str:
    r = np.round(np.nan_to_num(a, nan=1e300, posinf=1e301, neginf=-1e301), FP_DECIMALS) + 0.0  # -0.0 -> 0.0
    return hashlib.sha256(r.tobytes() + str(r.shape).encode()).hexdigest()[:24]


def _width(cell_widths: dict[str, str], name: str) -> int:
    return 1 if cell_widths[name] == SCALAR else FP_UNITS


def _inputs() -> np.ndarray:
    """The fixed input sequence (T, B, n)."""
    return np.random.default_rng(20150601).uniform(-1.0, 1.0, (FP_STEPS, FP_BATCH, FP_UNITS))


def _state0(index: int, width: int) -> np.ndarray:
    """The fixed random state ``index`` at t = -1, mixed signs (a zero state hides terms)."""
    return np.random.default_rng([20150601, index, width]).uniform(-1.0, 1.0, (FP_BATCH, width))


def _init(seed: bytes, node: Node, out: int) -> tuple[np.ndarray, np.ndarray | None]:
    """U[-1/sqrt(n), 1/sqrt(n)] weights and bias, then ``diag`` and ``bias_init`` as the real init does."""
    rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
    bound = 1.0 / math.sqrt(FP_UNITS)
    w = rng.uniform(-bound, bound, (out, FP_UNITS))
    k = np.arange(min(out, FP_UNITS))
    w[k, k] += float(node.attr("diag"))
    b = rng.uniform(-bound, bound, out) + float(node.attr("bias_init")) if node.attr("bias") else None
    return w, b


def _apply(node: Node, args: list[np.ndarray], weights: _Weights) -> np.ndarray:
    op = node.op
    if op is Op.LINEAR:
        w, b = weights[node.name]
        y = args[0] @ w.T
        return y if b is None else y + b
    if op is Op.TANH:
        return np.tanh(args[0])
    if op is Op.SIGMOID:
        return 1.0 / (1.0 + np.exp(-args[0]))
    if op is Op.RELU:
        return np.maximum(args[0], 0.0)
    if op is Op.IDENTITY:
        return args[0]
    if op is Op.HARD_SIGMOID:
        slope = 1.0 if node.attr("slope") is None else float(node.attr("slope"))  # the buffer starts at 1
        return np.clip((args[0] * slope + 1.0) * 0.5, 0.0, 1.0)
    if op is Op.STEP:
        return (args[0] > 0.5).astype(np.float64)
    if op is Op.ONE:
        return np.ones((FP_BATCH, 1))
    a, b = args
    return a + b if op is Op.ADD else a * b if op is Op.MUL else a - b


def _step0(cell: Cell, order: list[str], widths: dict[str, str], seed_of) -> tuple[dict[str, np.ndarray], _Weights]:
    """Evaluate step 0 in topological order; each linear's weights come from ``seed_of(node, value_key_of_input)``."""
    x = _inputs()
    values: dict[str, np.ndarray] = {}
    weights: _Weights = {}
    for name in order:
        node = cell[name]
        if node.op is Op.INPUT:
            values[name] = x[0]
        elif node.op is Op.STATE:
            values[name] = _state0(node.attr("index"), _width(widths, name))
        else:
            if node.op is Op.LINEAR:
                weights[name] = _init(seed_of(node, _value_key(values[node.inputs[0]])), node, _width(widths, name))
            values[name] = _apply(node, [values[i] for i in node.inputs], weights)
    return values, weights


def _contexts(cell: Cell, order: list[str], keys: dict[str, str]) -> dict[str, str]:
    """Per node: a hash of what consumes its value (consumer values, positions, outputs), downstream first."""
    slots: dict[str, list[tuple[str, ...]]] = {n: [] for n in order}
    for k, out in enumerate(cell.outputs):
        slots[out].append(("out", str(k)))
    consumers: dict[str, list[tuple[str, str]]] = {n: [] for n in order}
    for name in order:
        node = cell[name]
        for pos, src in enumerate(node.inputs):
            consumers[src].append((name, "*" if node.op in COMMUTATIVE else str(pos)))
    ctx: dict[str, str] = {}
    for name in reversed(order):
        mine = list(slots[name])
        for user, pos in consumers[name]:
            if keys[user] == keys[name]:
                mine.extend(slots[user])  # a no-op consumer is transparent
            else:
                mine.append(("use", keys[user], pos, ctx[user]))
        slots[name] = mine
        ctx[name] = _h(*sorted(mine)).hex()[:24]
    return ctx


def fingerprint_weights(cell: Cell) -> _Weights:
    """The deterministic, renaming-invariant weights the fingerprint uses: ``{linear: (W, b or None)}``."""
    cell.validate()
    order = cell.topological_order()
    widths = cell.widths()
    values, _ = _step0(cell, order, widths, lambda node, key: _h("w1", key, node.label()))
    keys = {n: _value_key(v) for n, v in values.items()}
    ctx = _contexts(cell, order, keys)
    _, weights = _step0(cell, order, widths, lambda node, key: _h("w2", keys[node.inputs[0]], node.label(), ctx[node.name]))
    return weights


def _run(cell: Cell, weights: _Weights) -> list["torch.Tensor"]:
    import torch

    from archsearch.compiler import compile_cell

    stack = compile_cell(cell, FP_UNITS, FP_UNITS, dtype=torch.float64, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8x8 matmuls: thread start-up costs ~10x the work on a busy machine
    try:
        return _forward(cell, stack, weights)
    finally:
        torch.set_num_threads(threads)


def _forward(cell: Cell, stack: "CellStack", weights: _Weights) -> list["torch.Tensor"]:
    """Load ``weights`` into the one-layer stack and run it; every state after every step."""
    import torch

    layer = stack.layers[0]
    with torch.no_grad():
        for name, (w, b) in weights.items():
            wv, bv = layer.linear_params(name)
            wv.copy_(torch.from_numpy(w))
            if bv is not None:
                bv.copy_(torch.from_numpy(b))
        x = torch.from_numpy(_inputs())
        widths = cell.widths()
        state = tuple(
            torch.from_numpy(_state0(k, _width(widths, s.name)))[None] for k, s in enumerate(cell.states)
        )  # (1, B, width) each: one layer
        seen: list[torch.Tensor] = []
        for t in range(FP_STEPS):
            _, state = stack(x[t : t + 1], state)
            seen.extend(state)
    return seen


def fingerprint(cell: Cell) -> str:
    """A 32-hex-digit hash of what the compiled cell computes (see the module docstring).

    Raises:
        InvalidGraphError: the cell is invalid.
        CompileError: the cell cannot be compiled.
    """
    outputs = _run(cell, fingerprint_weights(cell))
    digest = hashlib.sha256(f"{FP_VERSION}|{cell.num_states}".encode())
    for t in outputs:
        digest.update(_value_key(t.numpy()).encode())
    return digest.hexdigest()[:32]
