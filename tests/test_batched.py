"""Batched training of K settings: each slice equals the unbatched trainer; diverging slices stay contained."""

from __future__ import annotations

import math

import pytest
import torch

import archsearch
from archsearch.compiler import BatchedCellStack, compile_cell
from archsearch.errors import HyperParameterError
from archsearch.tasks import get_task
from archsearch.train import HyperParams, group_compatible, scale_config, train_batched, train_model

# up to 3 epochs of 2 windows, and a schedule that halves and stops early, so slices can stop at different epochs
CONFIG = scale_config("ci").with_overrides(
    max_epochs=3, patience=1, decay_epochs=1,
    epoch_positions=20 * 35 * 2, valid_positions=20 * 35, test_positions=20 * 35,
)
FIELDS = ("metric", "valid", "test", "epochs", "final_lr", "diverged", "units", "params")


def _assert_same(batched, unbatched):
    for name in FIELDS:
        a, b = getattr(batched, name), getattr(unbatched, name)
        if isinstance(a, float) and math.isnan(a):
            assert math.isnan(b), (name, a, b)
        else:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12), (name, a, b)
    assert len(batched.history) == len(unbatched.history)
    for hb, hu in zip(batched.history, unbatched.history):
        for key in ("epoch", "loss", "valid", "lr"):
            assert hb[key] == pytest.approx(hu[key], rel=1e-9, abs=1e-12), (key, hb, hu)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_each_slice_equals_the_unbatched_run(name, float64):
    cell, task = archsearch.seed(name), get_task("arithmetic")
    hps = [HyperParams(0.5, 1.0, 5.0, 1, 5000), HyperParams(1.0, 0.7, 1.0, 1, 5000), HyperParams(2.0, 2.0, 20.0, 1, 5000)]
    seeds = [3, 1, 4]
    results = train_batched(cell, task, hps, CONFIG, seeds)
    for hp, seed, got in zip(hps, seeds, results):
        _assert_same(got, train_model(cell, task, hp, CONFIG, seed=seed)[0])


@pytest.mark.slow
def test_hm_lstm_slices_with_slope_annealing_equal_unbatched(float64):
    cell, task = archsearch.seed("hm-lstm"), get_task("memorize")
    config = CONFIG.with_overrides(max_epochs=3, patience=3)  # three slopes: 1, 1.04, 1.08
    hps = [HyperParams(0.5, 1.0, 5.0, 1, 5000), HyperParams(1.0, 1.4, 2.5, 1, 5000)]
    for hp, seed, got in zip(hps, [0, 7], train_batched(cell, task, hps, config, [0, 7])):
        _assert_same(got, train_model(cell, task, hp, config, seed=seed)[0])


def test_a_diverging_slice_does_not_change_its_neighbours(float64):
    cell, task = archsearch.seed("lstm"), get_task("arithmetic")
    good = [HyperParams(0.5, 1.0, 5.0, 2, 5000), HyperParams(1.0, 0.7, 2.5, 2, 5000)]
    wild = HyperParams(1e300, 2.8, 20.0, 2, 5000)  # the first update overflows the weights: loss inf/NaN
    alone = train_batched(cell, task, good, CONFIG, [1, 2])
    mixed = train_batched(cell, task, [good[0], wild, good[1]], CONFIG, [1, 9, 2])
    assert mixed[1].diverged and mixed[1].metric == 0.0
    assert train_model(cell, task, wild, CONFIG, seed=9)[0].diverged
    for a, b in zip(alone, [mixed[0], mixed[2]]):
        assert not b.diverged
        _assert_same(b, a)


def test_batched_stack_equals_unbatched_stacks_for_every_seed(float64):
    for name in archsearch.seeds():
        cell = archsearch.seed(name)
        layers = 2 if cell.depth == 1 else 1
        stacks = [compile_cell(cell, 5, 5, layers, seed=k, init_scale=1.0 + k) for k in range(3)]
        batched = BatchedCellStack.from_stacks(stacks)
        x = torch.randn(3, 6, 4, 5, requires_grad=True)
        y, _ = batched(x)
        (y * y).sum().backward()
        for k, stack in enumerate(stacks):
            xk = x[k].detach().requires_grad_()
            yk, _ = stack(xk)
            (yk * yk).sum().backward()
            torch.testing.assert_close(y[k], yk, atol=1e-12, rtol=0)
            torch.testing.assert_close(x.grad[k], xk.grad, atol=1e-12, rtol=0)
            for pname, p in stack.named_parameters():
                torch.testing.assert_close(batched.get_parameter(pname).grad[k], p.grad, atol=1e-12, rtol=0)


def test_group_compatible_groups_by_layers_and_units():
    cell, task = archsearch.seed("lstm"), get_task("arithmetic")
    config = scale_config("small")
    hps = [
        HyperParams(0.5, 1.0, 5.0, 1, 100_000),
        HyperParams(1.0, 1.0, 5.0, 2, 100_000),
        HyperParams(2.0, 0.3, 1.0, 1, 100_000),
        HyperParams(0.1, 1.0, 5.0, 1, 1_000_000),
    ]
    assert group_compatible(hps, cell, task, config) == [[0, 2], [1], [3]]
    with pytest.raises(HyperParameterError, match="group_compatible"):
        train_batched(cell, task, hps, config)


def test_a_slice_with_a_huge_finite_loss_is_diverged() -> None:
    cell, task = archsearch.seed("tanh"), get_task("arithmetic")
    good, huge = HyperParams(0.5, 1.0, 5.0, 1, 5000), HyperParams(0.1, 1e5, 5.0, 1, 5000)
    results = train_batched(cell, task, [good, huge], CONFIG, [1, 2])
    assert not results[0].diverged and results[1].diverged and results[1].metric == 0.0
