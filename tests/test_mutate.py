"""Mutation engine: chains of mutations stay valid, compile and run; each transform keeps its promise."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st

import archsearch
from archsearch.errors import ArchsearchError
from archsearch.ir import BINARY, SOURCES, Cell, Op, StateSpec
from archsearch.mutation import (
    FORMS,
    AppliedTransform,
    MutationError,
    MutationRecord,
    Rejected,
    TransformContext,
    applicable_kinds,
    apply_transform,
    mutate,
)
from archsearch.mutation import _mutate as mutate_module
from archsearch.mutation._transforms import current_form

SEEDS = archsearch.seeds()
SMALL = [s for s in SEEDS if len(archsearch.seed(s)) < 60]  # the 3-layer seeds are slow for long chains
FORM_OPS = {f.op for f in FORMS}
_settings = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls on a shared machine
    yield
    torch.set_num_threads(threads)


def _fused(cell: Cell, name: str) -> bool:
    node = cell[name]
    return node.op is Op.LINEAR or (node.op is Op.ADD and all(cell[i].op is Op.LINEAR for i in node.inputs))


def _linear_of_linear(cell: Cell) -> bool:
    """The known compiler bug: a linear reading a node the compiler defines by a fused split
    (a linear, or an add of two linears) is never projected ("not placed in a group" / NameError)."""
    return any(n.op is Op.LINEAR and _fused(cell, n.inputs[0]) for n in cell)


def _compile(cell: Cell, n: int, in_hypothesis: bool = True):
    """Compile in float64; skip (only) the known compiler bug with a linear reading a linear."""
    from archsearch.compiler import compile_cell

    try:
        stack = compile_cell(cell, n, n, dtype=torch.float64, seed=0)
        _probe(stack, cell, n)
    except (AssertionError, NameError) as e:
        if _linear_of_linear(cell):  # see test_compiler_linear_of_linear
            if in_hypothesis:
                reject()
            pytest.xfail(f"compiler cannot yet compile a linear of a linear: {e}")
        raise
    return stack


def _probe(stack, cell: Cell, n: int) -> None:
    state = tuple(torch.zeros(1, 1, 1 if s.width == "1" else n, dtype=torch.float64) for s in cell.states)
    stack(torch.zeros(1, 1, n, dtype=torch.float64), state)


def _compile_and_run(cell: Cell, n: int = 4, steps: int = 3, batch: int = 2, in_hypothesis: bool = True) -> None:
    """Compile in float64, run forward and backward on small random input, check everything is finite."""
    stack = _compile(cell, n, in_hypothesis)
    gen = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(steps, batch, n, generator=gen, dtype=torch.float64)).requires_grad_()
    widths = [1 if s.width == "1" else n for s in cell.states]
    state = tuple((0.1 * torch.randn(1, batch, w, generator=gen, dtype=torch.float64)).requires_grad_() for w in widths)
    y, new_state = stack(x, state)  # explicit state: a cell may have no parameters at all
    assert y.shape == (steps, batch, n)
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in new_state), cell.dump()
    loss = y.sum() + sum(s.sum() for s in new_state)
    loss.backward()
    grads = [p.grad for p in stack.parameters() if p.grad is not None] + [x.grad]
    assert all(torch.isfinite(g).all() for g in grads if g is not None), cell.dump()


# ---------------------------------------------------------------- chains
@settings(_settings, max_examples=30)
@given(name=st.sampled_from(SMALL), seed=st.integers(0, 2**32 - 1), length=st.integers(1, 20))
def test_chains_stay_valid(name: str, seed: int, length: int) -> None:
    cell = archsearch.seed(name)
    rng = np.random.default_rng(seed)
    for _ in range(length):
        cell, record = mutate(cell, rng)
        cell.validate()
        assert len(record.transforms) >= 1
        assert list(cell.states) == list(archsearch.seed(name).states)


@settings(_settings, max_examples=24)
@given(name=st.sampled_from(SMALL), seed=st.integers(0, 2**32 - 1), length=st.integers(1, 20))
def test_chains_compile_and_run(name: str, seed: int, length: int) -> None:
    cell = archsearch.seed(name)
    rng = np.random.default_rng(seed)
    for _ in range(length):
        cell, _ = mutate(cell, rng)
    _compile_and_run(cell)


@pytest.mark.xfail(reason="compiler bug: a linear whose input is a linear is never projected", strict=False)
def test_compiler_linear_of_linear() -> None:
    """Minimal case the mutations produce: h' = W2 (W1 x) (e.g. (3) inserting Linear(1,x) after a linear)."""
    cell = archsearch.seed("tanh")
    outer = next(n for n in cell if n.op is Op.LINEAR and n.inputs == ("x",))
    child = cell.copy()
    apply_transform(TransformContext(child), 3, outer.name, np.random.default_rng(3))
    while not _linear_of_linear(child):
        child = cell.copy()
        apply_transform(TransformContext(child), 3, outer.name, np.random.default_rng())
    from archsearch.compiler import compile_cell

    _probe(compile_cell(child.validate(), 4, 4, dtype=torch.float64), child, 4)


@settings(_settings, max_examples=6)
@given(name=st.sampled_from([s for s in SEEDS if s not in SMALL]), seed=st.integers(0, 2**32 - 1))
def test_chains_from_multilayer_seeds(name: str, seed: int) -> None:
    """GF-RNN / HM-LSTM: scalar gates, hard sigmoid, step and the constant 1 stay consistent."""
    cell = archsearch.seed(name)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        cell, _ = mutate(cell, rng)
    widths = cell.widths()
    assert [widths[o] for o in cell.outputs] == [s.width for s in cell.states]
    _compile_and_run(cell, n=3, steps=2)


@pytest.mark.parametrize("name", SEEDS)
def test_every_seed_mutates(name: str) -> None:
    child, record = mutate(archsearch.seed(name), 0)
    child.validate()
    assert child.name.startswith(name + "~")
    assert record.child_hash == child.structural_hash() != record.parent_hash


@pytest.mark.slow
@pytest.mark.parametrize("name", SEEDS)
def test_long_chains_every_seed(name: str) -> None:
    cell = archsearch.seed(name)
    rng = np.random.default_rng(1)
    for _ in range(20):
        cell, _ = mutate(cell, rng)
    _compile_and_run(cell, in_hypothesis=False)


# ---------------------------------------------------------------- reproducibility, records
@settings(_settings, max_examples=15)
@given(name=st.sampled_from(SMALL), seed=st.integers(0, 2**32 - 1))
def test_same_seed_same_child(name: str, seed: int) -> None:
    parent = archsearch.seed(name)
    before = parent.to_json()
    a, ra = mutate(parent, seed)
    b, rb = mutate(parent, np.random.default_rng(seed))
    assert a.to_json() == b.to_json()
    assert ra.to_dict() | {"seed": None} == rb.to_dict() | {"seed": None}
    assert parent.to_json() == before, "mutate changed the parent"


def test_generator_advances() -> None:
    rng = np.random.default_rng(5)
    parent = archsearch.seed("lstm")
    children = {mutate(parent, rng)[0].to_json() for _ in range(10)}
    assert len(children) > 5


def test_record_roundtrip_and_describe() -> None:
    child, record = mutate(archsearch.seed("gru"), 11)
    data = json.loads(json.dumps(record.to_dict()))
    again = MutationRecord.from_dict(data)
    assert again.to_dict() == record.to_dict()
    lines = record.describe().splitlines()
    assert len(lines) == len(record.transforms)
    assert all(line.startswith(f"({t.kind}) ") for line, t in zip(lines, record.transforms))
    assert 0.0 <= record.p <= 1.0 and record.attempts >= 1 and 0 <= record.rejection_rate < 1


def test_describe_insert() -> None:
    t = AppliedTransform(3, "f_add", {"parent": "f", "position": 0, "new": "f_add_relu", "activation": "relu"})
    assert t.describe().startswith("(3) insert relu between f and f_add")


@pytest.mark.parametrize("name,count", [("lstm", 300), ("gru", 300), ("hm-lstm", 60)])
def test_most_children_carry_one_transform(name: str, count: int) -> None:
    """§3.2: p sets the size, most mutations small, some large (whatever the parent's size: 16 to 184 nodes)."""
    rng = np.random.default_rng(0)
    sizes = Counter(len(mutate(archsearch.seed(name), rng)[1].transforms) for _ in range(count))
    assert sizes[1] >= 0.5 * count, sizes
    assert sum(v for k, v in sizes.items() if k >= 3) <= 0.15 * count, sizes
    assert max(sizes) >= 2, sizes  # a tail of larger mutations


def test_all_six_transforms_are_used() -> None:
    kinds: Counter[int] = Counter()
    rng = np.random.default_rng(0)
    for name in ("lstm", "gru", "hm-lstm"):
        for _ in range(30 if name != "hm-lstm" else 10):
            kinds.update(mutate(archsearch.seed(name), rng)[1].kinds)
    assert set(kinds) == {1, 2, 3, 4, 5, 6}, kinds


def test_rejections_are_counted() -> None:
    rng = np.random.default_rng(0)
    records = [mutate(archsearch.seed("tanh"), rng)[1] for _ in range(60)]
    assert sum(r.rejections for r in records) > 0
    for r in records:
        assert sum(r.rejection_reasons.values()) == r.rejections


def test_attempt_cap_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_rejected(*args, **kwargs):
        raise Rejected("cycle")

    monkeypatch.setattr(mutate_module, "_draw_child", always_rejected)
    with pytest.raises(MutationError, match="5 attempts") as info:
        mutate(archsearch.seed("lstm"), 0, max_attempts=5)
    assert isinstance(info.value, ArchsearchError)


def test_nothing_to_mutate_raises() -> None:
    cell = Cell("wire", [StateSpec("h")])
    cell.outputs = ("x",)
    with pytest.raises(MutationError):
        mutate(cell.validate(), 0)


# ---------------------------------------------------------------- each transform's postcondition
def _nodes_except(cell: Cell, *names: str) -> dict[str, tuple]:
    return {n.name: (n.op, n.inputs, n.label()) for n in cell if n.name not in names}


def _setup(name: str, seed: int, kind: int) -> tuple[Cell, TransformContext, str, np.random.Generator]:
    """A seed (mutated 0-2 times for variety) and a random anchor where ``kind`` applies."""
    rng = np.random.default_rng(seed)
    cell = archsearch.seed(name)
    for _ in range(int(rng.integers(3))):
        cell, _ = mutate(cell, rng)
    ctx = TransformContext(cell)
    anchors = [n.name for n in cell if n.op not in SOURCES and kind in applicable_kinds(ctx, n.name)]
    assume(anchors)
    return cell, ctx, anchors[int(rng.integers(len(anchors)))], rng


_names = st.sampled_from(SMALL + ["hm-lstm"])
_transform_settings = settings(_settings, max_examples=20)


@_transform_settings
@given(name=_names, seed=st.integers(0, 2**32 - 1))
def test_t1_replace_activation(name: str, seed: int) -> None:
    parent, ctx, anchor, rng = _setup(name, seed, 1)
    old = current_form(parent, anchor)
    child = parent.copy()
    detail = apply_transform(TransformContext(child), 1, anchor, rng)
    new = current_form(child, anchor)
    assert new is not None and new != old and new in FORMS
    assert detail == {"from": old.label(), "to": new.label()}
    assert len(child) == len(parent)
    assert _nodes_except(child, anchor) == _nodes_except(parent, anchor)
    if ctx.widths[anchor] == "1":
        assert child[anchor].op is not Op.LINEAR
    child.validate()


@_transform_settings
@given(name=_names, seed=st.integers(0, 2**32 - 1))
def test_t2_replace_binary(name: str, seed: int) -> None:
    parent, _, anchor, rng = _setup(name, seed, 2)
    child = parent.copy()
    apply_transform(TransformContext(child), 2, anchor, rng)
    assert len(child) == len(parent)
    changed = [n.name for n in child if (n.op, n.inputs) != (parent[n.name].op, parent[n.name].inputs)]
    assert changed == [anchor]
    assert child[anchor].op in BINARY and child[anchor].op is not parent[anchor].op
    assert child[anchor].inputs == parent[anchor].inputs
    child.validate()


@_transform_settings
@given(name=_names, seed=st.integers(0, 2**32 - 1))
def test_t3_insert_activation(name: str, seed: int) -> None:
    parent, _, anchor, rng = _setup(name, seed, 3)
    child = parent.copy()
    detail = apply_transform(TransformContext(child), 3, anchor, rng)
    assert len(child) == len(parent) + 1
    new = child[detail["new"]]
    assert new.name not in parent and new.op in FORM_OPS and new.inputs == (detail["parent"],)
    assert child[anchor].inputs[detail["position"]] == new.name
    assert parent[anchor].inputs[detail["position"]] == detail["parent"]
    assert _nodes_except(child, anchor, new.name) == _nodes_except(parent, anchor)
    child.validate()


@_transform_settings
@given(name=_names, seed=st.integers(0, 2**32 - 1))
def test_t4_remove_node(name: str, seed: int) -> None:
    parent, _, anchor, rng = _setup(name, seed, 4)
    child = parent.copy()
    detail = apply_transform(TransformContext(child), 4, anchor, rng)
    assert len(child) == len(parent) - 1 and anchor not in child
    src = parent[anchor].inputs[0]
    assert detail["input"] == src
    readers = [n for n in child if src in n.inputs and n.name in parent and anchor in parent[n.name].inputs]
    assert readers or src in child.outputs
    child.validate()


@_transform_settings
@given(name=_names, seed=st.integers(0, 2**32 - 1))
def test_t5_replace_with_ancestor(name: str, seed: int) -> None:
    parent, ctx, anchor, rng = _setup(name, seed, 5)
    child = parent.copy()
    detail = apply_transform(TransformContext(child), 5, anchor, rng)
    assert len(child) <= len(parent) - 1 and anchor not in child
    assert detail["ancestor"] in ctx.ancestors(anchor)
    assert ctx.widths[detail["ancestor"]] == ctx.widths[anchor]
    for user in parent.users(anchor):
        if user in child:
            assert detail["ancestor"] in child[user].inputs
    assert set(child.outputs) <= {detail["ancestor"], *parent.outputs}


@_transform_settings
@given(name=_names, seed=st.integers(0, 2**32 - 1))
def test_t6_replace_with_binary(name: str, seed: int) -> None:
    parent, ctx, anchor, rng = _setup(name, seed, 6)
    child = parent.copy()
    try:
        detail = apply_transform(TransformContext(child), 6, anchor, rng)
    except Rejected as e:
        assert e.reason == "cycle"
        return
    new = child[detail["new"]]
    assert anchor not in child and new.name not in parent
    assert new.op in BINARY and new.op.value == detail["op"]
    assert new.inputs == (detail["left"], detail["right"])
    assert detail["left"] in ctx.ancestors(anchor)
    assert detail["right"] in ctx.ancestors(detail["other"])
    for user in parent.users(anchor):
        if user in child:
            assert new.name in child[user].inputs
    assert len(child) <= len(parent)
    assert TransformContext(child).widths[new.name] == ctx.widths[anchor]


def test_inapplicable_transform_is_refused() -> None:
    cell = archsearch.seed("lstm")
    with pytest.raises(ValueError, match="does not apply"):
        apply_transform(TransformContext(cell), 2, "i", np.random.default_rng(0))  # i is tanh, not binary


def test_scalar_gates_get_scalar_forms() -> None:
    cell = archsearch.seed("hm-lstm")
    ctx = TransformContext(cell)
    scalar_acts = [n.name for n in cell if n.op in (Op.STEP, Op.HARD_SIGMOID)]
    assert scalar_acts
    for i, name in enumerate(scalar_acts):
        child = cell.copy()
        apply_transform(TransformContext(child), 1, name, np.random.default_rng(i))
        assert child[name].op in (Op.TANH, Op.SIGMOID, Op.RELU)
        child.validate()
    row_linears = [n.name for n in cell if n.op is Op.LINEAR and n.attr("width") == "1"]
    assert row_linears and not any(1 in applicable_kinds(ctx, n) or 4 in applicable_kinds(ctx, n) for n in row_linears)
