"""Functional fingerprint: renamed / commuted / no-op variants collide; different functions do not."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import archsearch
from archsearch.ir import Cell, Op
from archsearch.mutation import TransformContext, apply_transform, fingerprint, fingerprint_weights

SEEDS = archsearch.seeds()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def renamed(cell: Cell, seed: int) -> Cell:
    """The same cell with fresh node names, shuffled node order and swapped add/mul arguments."""
    r = random.Random(seed)
    data = cell.to_dict(canonical=False)
    names = [n["name"] for n in data["nodes"]]
    new = {n: f"v{i}" for i, n in enumerate(r.sample(names, len(names)))}
    nodes = []
    for n in data["nodes"]:
        inputs = [new.get(i, i) for i in n["inputs"]]
        if n["op"] in ("add", "mul") and r.random() < 0.5:
            inputs.reverse()
        nodes.append(dict(n, name=new[n["name"]], inputs=inputs))
    r.shuffle(nodes)
    data.update(nodes=nodes, outputs=[new.get(o, o) for o in data["outputs"]], name="renamed")
    return Cell.from_dict(data).validate()


@pytest.mark.parametrize("name", SEEDS)
def test_renamed_and_commuted_collide(name: str) -> None:
    cell = archsearch.seed(name)
    assert fingerprint(renamed(cell, 1)) == fingerprint(cell) == fingerprint(renamed(cell, 2))


def test_weights_follow_the_node_not_its_name() -> None:
    cell = archsearch.seed("lstm")
    other = renamed(cell, 3)
    w_a, w_b = fingerprint_weights(cell), fingerprint_weights(other)
    assert sorted(w.tobytes() for w, _ in w_a.values()) == sorted(w.tobytes() for w, _ in w_b.values())
    assert len({w.tobytes() for w, _ in w_a.values()}) == len(w_a), "sibling linears must get distinct weights"


def test_a_plus_b_equals_b_plus_a() -> None:
    cell = archsearch.seed("gru")
    swapped = cell.copy()
    for node in swapped:
        if node.op in (Op.ADD, Op.MUL):
            node.inputs = node.inputs[::-1]
    assert fingerprint(swapped) == fingerprint(cell)


def test_seeds_all_differ() -> None:
    fps = {name: fingerprint(archsearch.seed(name)) for name in SEEDS}
    assert len(set(fps.values())) == len(fps), fps
    assert fps["lstm"] != fps["gru"]


def test_init_is_part_of_the_architecture() -> None:
    """LSTM and LSTM-b differ only in the forget-gate bias init (0 vs 1): different fingerprints."""
    assert fingerprint(archsearch.seed("lstm")) != fingerprint(archsearch.seed("lstm-b"))
    cell = archsearch.seed("tanh")
    lin = next(n.name for n in cell if n.op is Op.LINEAR)
    other = cell.copy()
    other[lin].attrs = {**other[lin].attrs, "diag": 1.0}
    assert fingerprint(other) != fingerprint(cell)


def test_noop_insertion_collides() -> None:
    """relu(sigmoid(v)) == sigmoid(v): a child that only adds this no-op is a functional duplicate."""
    cell = archsearch.seed("lstm")
    child = cell.copy()
    j = next(n for n in child if n.op is Op.SIGMOID)
    user = child.users(j.name)[0]
    child.add_node("j_relu", Op.RELU, [j.name])
    child[user].inputs = tuple("j_relu" if i == j.name else i for i in child[user].inputs)
    child.validate()
    assert child.structural_hash() != cell.structural_hash()
    assert fingerprint(child) == fingerprint(cell)


def test_real_change_differs() -> None:
    cell = archsearch.seed("gru")
    node = next(n.name for n in cell if n.op is Op.ADD)
    child = cell.copy()
    apply_transform(TransformContext(child), 2, node, np.random.default_rng(0))
    assert fingerprint(child) != fingerprint(cell)


def test_deterministic_and_raw_x_cells() -> None:
    cell = archsearch.seed("mut1")  # tanh(x_t): needs input size == hidden size
    assert cell.uses_raw_x()
    assert fingerprint(cell) == fingerprint(cell.copy())
    assert len(fingerprint(cell)) == 32
