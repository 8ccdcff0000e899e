"""The trainer on real (tiny) runs: carried state, model sizing, divergence, schedules, seeds, slope annealing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from archsearch.errors import HyperParameterError
from archsearch.ir import parse_cell
from archsearch.search_spaces import seed as seed_cell
from archsearch.tasks import Stream, Task, get_task
from archsearch.train import (
    FILTER_OVERRIDES,
    HyperParams,
    TrainConfig,
    build_model,
    model_param_count,
    scale_config,
    task_config,
    train,
    train_batched,
    train_model,
    units_for_budget,
)

# the first `tiny` (12 minibatches per epoch, 2% budgets, the paper's tasks): runs of a second or two
TINY = scale_config("ci").with_overrides(max_epochs=6, patience=2, decay_epochs=2, music_max_epochs=6)
RELU_RNN = "cell relu\nstates h\nh' = relu(W(x) + W(h) + b)\n"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the CI machine is small and shared


class PreviousSymbol(Task):
    """Predict the symbol seen one step *before* the current input: target[i] = input[i-1].

    With unroll 2, every other target lies across a minibatch boundary: it is predictable only
    from the state carried over from the previous minibatch.
    """

    name, kind, metric, synthetic = "previous", "symbols", "accuracy", True
    num_inputs = num_outputs = 8
    param_budgets = (2_000,)

    def stream(self, split, seed, length=None):
        rng = np.random.default_rng([seed, ["train", "valid", "test"].index(split)])
        x = rng.integers(0, 8, size=(length or 4000) + 1)
        return Stream(inputs=x[1:], targets=x[:-1], mask=np.ones(len(x) - 1, dtype=np.float32))

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_hidden_state_is_carried_across_minibatches() -> None:
    cfg = TrainConfig(unroll=2, epoch_positions=20 * 2 * 100, valid_positions=2000, test_positions=2000,
                      max_epochs=5, patience=10)
    result = train(seed_cell("lstm"), PreviousSymbol(), HyperParams(1.0, 1.0, 5.0, 1, 2_000), cfg, seed=0)
    # If the state were reset at each minibatch, the first target of every 2-step window would be
    # unpredictable: the mean training NLL could not go below ln(8) / 2 = 1.04.
    assert result.history[-1]["loss"] < 0.5 * math.log(8) / 2, result.history
    assert result.valid > 0.95


def test_second_window_sees_the_first() -> None:
    """Forward check on a fixed model: window 2's outputs depend on the state left by window 1."""
    task = get_task("memorize")
    torch.manual_seed(0)
    model = build_model(seed_cell("gru"), task, 25_000, 1, 1.0)
    x = torch.from_numpy(task.stream("train", 0, 20 * 70).inputs.reshape(20, 70).T.copy())  # (70, B)
    _, state = model(x[:35])
    carried, _ = model(x[35:], state)
    fresh, _ = model(x[35:])
    whole, _ = model(x)
    torch.testing.assert_close(carried, whole[35:])  # carrying = one long pass
    assert (carried - fresh).abs().max() > 1e-3


@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru", "lstm-b", "mut1", "mut3", "gf-lstm", "hm-lstm"])
@pytest.mark.parametrize("task_name,budget", [("memorize", 25_000), ("arithmetic", 250_000), ("chorales", 100_000)])
@pytest.mark.parametrize("layers", [1, 3])
def test_units_for_budget_hits_the_budget(cell, task_name, budget, layers) -> None:
    c, task = seed_cell(cell), get_task(task_name)
    eff_layers = 1 if c.depth > 1 else layers
    sizes = (task.num_inputs, task.num_outputs, task.kind == "symbols")
    n = units_for_budget(c, budget, eff_layers, *sizes)
    assert model_param_count(c, n, eff_layers, *sizes) <= budget < model_param_count(c, n + 1, eff_layers, *sizes)


@pytest.mark.parametrize("cell", ["lstm", "gru", "mut2", "gf-gru", "hm-lstm"])
def test_param_count_formula_matches_the_built_model(cell) -> None:
    c, task = seed_cell(cell), get_task("xml")
    model = build_model(c, task, 50_000, 2, 1.0)
    layers = 1 if c.depth > 1 else 2
    expected = model_param_count(c, model.cells.hidden_size, layers, task.num_inputs, task.num_outputs, True)
    assert sum(p.numel() for p in model.parameters()) == expected <= 50_000


def test_divergence_is_a_result() -> None:
    relu = parse_cell(RELU_RNN)
    task, cfg = get_task("arithmetic"), TINY.with_overrides(max_epochs=3)
    result = train(relu, task, HyperParams(5.0, 2.8, 20.0, 1, 250_000), cfg, seed=0)
    assert result.diverged and result.metric == 0.0 and math.isnan(result.valid) and result.epochs == 0
    calm = train(relu, task, HyperParams(0.1, 2.8, 20.0, 1, 250_000), cfg, seed=0)  # same cell, small lr
    assert not calm.diverged and calm.metric > 0.05


def test_a_huge_finite_loss_is_divergence() -> None:
    from archsearch.train._loop import DIVERGED_LOSS, loss_is_sane

    assert loss_is_sane(torch.tensor(DIVERGED_LOSS)) and not loss_is_sane(torch.tensor(1e31))
    assert loss_is_sane(torch.tensor([1.0, 1e31, math.nan])).tolist() == [True, False, False]
    # init scale 1e5: saturated tanh units times huge softmax weights give a finite loss near 4.6e6 a window
    # (the run used to go on "learning" with it); now it is a diverged result like a NaN
    task, cfg = get_task("arithmetic"), TINY.with_overrides(max_epochs=1)
    huge = train(seed_cell("tanh"), task, HyperParams(0.1, 1e5, 5.0, 1, 250_000), cfg, seed=0)
    assert huge.diverged and huge.metric == 0.0 and huge.epochs == 0


def _frozen(schedule: str, max_epochs: int, patience: int = 3):
    """A run whose validation never changes (lr so small that float32 weights do not move)."""
    cfg = TINY.with_overrides(max_epochs=max_epochs, patience=patience, decay_epochs=4, schedule=schedule,
                              epoch_positions=20 * 35 * 2, valid_positions=20 * 35 * 2)
    return train(seed_cell("tanh"), get_task("xml"), HyperParams(1e-30, 1.0, 5.0, 1, 250_000), cfg, seed=1)


def test_search_schedule_decays_then_stops() -> None:
    result = _frozen("search", max_epochs=30)
    lrs = [h["lr"] / 1e-30 for h in result.history]
    # epoch 1 is the best; 3 epochs without improvement; then 4 epochs at halved lrs; stop
    assert lrs == pytest.approx([1, 1, 1, 1, 0.5, 0.25, 0.125, 0.0625]), lrs
    assert result.epochs == 8 and len({h["valid"] for h in result.history}) == 1


def test_filter_schedule_halves_on_plateaus_until_max_epochs() -> None:
    result = _frozen("filter", max_epochs=12, patience=5)
    lrs = [h["lr"] / 1e-30 for h in result.history]
    assert lrs == pytest.approx([1] * 6 + [0.5] * 5 + [0.25]), lrs


def test_target_stops_early() -> None:
    cfg = TINY.with_overrides(max_epochs=10, target=0.0)
    result = train(seed_cell("gru"), get_task("memorize"), HyperParams(1.0, 1.0, 5.0, 1, 25_000), cfg)
    assert result.epochs == 1


def test_same_seed_same_result() -> None:
    hp, task = HyperParams(1.0, 1.0, 5.0, 2, 250_000), get_task("arithmetic")
    cfg = TINY.with_overrides(max_epochs=2, epoch_positions=20 * 35 * 4)
    a, b = (train(seed_cell("gru"), task, hp, cfg, seed=7) for _ in range(2))
    assert a.history == b.history and a.valid == b.valid and a.test == b.test
    c = train(seed_cell("gru"), task, hp, cfg, seed=8)
    assert c.history != a.history


def test_hm_lstm_slope_is_annealed() -> None:
    slopes = []
    cfg = TINY.with_overrides(max_epochs=3, patience=10, epoch_positions=20 * 35 * 4, valid_positions=20 * 35 * 2,
                              test_positions=20 * 35)
    result, model = train_model(seed_cell("hm-lstm"), get_task("xml"), HyperParams(1.0, 1.0, 5.0, 1, 250_000), cfg,
                                on_epoch=lambda info: slopes.append(info["epoch"]))
    # the returned model holds the best epoch's weights, its slope buffer included
    best_epoch = max(result.history, key=lambda h: h["valid"])["epoch"]
    for layer in model.cells.layers:
        assert float(layer.slope) == pytest.approx(1.0 + 0.04 * (best_epoch - 1))  # a = min(5, 1 + 0.04 epoch)
    assert best_epoch > 1 and slopes == [1, 2, 3]


@pytest.mark.parametrize("task_name", ["chorales", "ptb-mini"])
def test_corpora_train_with_finite_numbers(task_name) -> None:
    task = get_task(task_name)
    cfg = task_config("tiny", task).with_overrides(max_epochs=2, music_max_epochs=2, corpus_positions=20 * 35 * 4,
                                                   eval_corpus_positions=20 * 35 * 2)
    result = train(seed_cell("lstm"), task, HyperParams(1.0, 1.0, 5.0, 1, task.param_budgets[0]), cfg)
    assert not result.diverged and result.epochs == 2
    assert all(math.isfinite(v) for v in (result.metric, result.valid, result.test))
    if task_name == "chorales":
        assert cfg.schedule == "music" and result.metric == 1 / result.valid and 0 < result.valid < 88 * math.log(2)
    else:
        assert 0 < result.valid < 1 and result.perplexity == pytest.approx(1 / result.valid)


def test_memorize_config_is_the_filter() -> None:
    task = get_task("memorize")
    for scale in ("tiny", "small", "paper"):
        cfg = task_config(scale, task)
        assert (cfg.param_scale, cfg.target, cfg.schedule) == (1.0, 0.95, "filter")
        assert cfg.batch_size == 20 and cfg.unroll == 35 and cfg.max_epochs == FILTER_OVERRIDES[scale]["max_epochs"]
    assert task_config("small", get_task("xml")) == scale_config("small")


def test_a_scale_can_train_one_task_longer() -> None:
    """`small` trains arithmetic (4-digit sums) 4x as long as XML, with more patience; only that task's config
    changes."""
    from archsearch.train import TASK_OVERRIDES

    small, arithmetic = scale_config("small"), task_config("small", get_task("arithmetic"))
    assert arithmetic.max_epochs == TASK_OVERRIDES["small"]["arithmetic"]["max_epochs"] == 4 * small.max_epochs
    assert arithmetic == small.with_overrides(max_epochs=arithmetic.max_epochs, patience=arithmetic.patience)
    assert arithmetic.patience == 2 * small.patience
    assert task_config("small", get_task("ptb-mini")) == small
    assert task_config("tiny", get_task("arithmetic")) == scale_config("tiny")


def test_scale_difficulty_reaches_the_generated_task() -> None:
    from dataclasses import replace

    from archsearch.tasks import Difficulty

    assert scale_config("paper").difficulty == Difficulty()  # the paper's tasks at the paper's scale
    assert scale_config("ci").difficulty == Difficulty()
    easier = scale_config("tiny").difficulty
    assert easier.arithmetic_max_digits < 8 and easier.xml_max_iterations < 50
    frozen = HyperParams(1e-30, 1.0, 5.0, 1, 250_000)  # weights do not move: accuracy depends only on the data
    cfg = scale_config("ci").with_overrides(max_epochs=1)
    short, long = (train(seed_cell("tanh"), get_task("arithmetic"), frozen, replace(cfg, arithmetic_max_digits=d), seed=1)
                   for d in (1, 8))
    assert short.valid != long.valid


def test_the_returned_model_holds_the_best_epoch_and_evaluate_scores_it() -> None:
    from archsearch.tasks import Metric
    from archsearch.train import batchify, evaluate

    task = get_task("arithmetic")
    cfg = TINY.with_overrides(max_epochs=4, patience=10)
    result, model = train_model(seed_cell("gru"), task, HyperParams(1.0, 1.0, 5.0, 1, 250_000), cfg, seed=4)
    best = max(h["valid"] for h in result.history)
    assert result.history[-1]["valid"] < best  # the last epoch is not the best: the model went back to the best
    valid = batchify(task.with_difficulty(cfg.difficulty).stream("valid", 4, cfg.valid_positions), cfg.batch_size, "cpu")
    assert evaluate(model, valid, Metric(task.metric)) == best == result.valid


def test_read_by_drops_only_the_difficulty_fields_a_task_does_not_read() -> None:
    xml, arithmetic = get_task("xml"), get_task("arithmetic")
    config = scale_config("small")
    assert config.read_by(xml)["xml_max_tag_length"] == 6 and "arithmetic_max_digits" not in config.read_by(xml)
    assert config.with_overrides(xml_max_tag_length=3).read_by(arithmetic) == config.read_by(arithmetic)
    assert config.with_overrides(xml_max_tag_length=3).read_by(xml) != config.read_by(xml)
    assert config.read_by(arithmetic)["schedule"] == "search"  # plain data, as stored in JSON


def test_training_flushes_denormals_and_restores_the_setting() -> None:
    """Denormal floats are flushed to zero while a run trains (they make CPU ops many times slower) and the
    caller's setting comes back afterwards, also when training raises."""
    from archsearch.train._loop import flushes_denormals

    hp, task = HyperParams(1.0, 1.0, 5.0, 1, 250_000), get_task("arithmetic")
    seen = []
    torch.set_flush_denormal(False)
    assert not flushes_denormals()
    train(seed_cell("gru"), task, hp, TINY.with_overrides(max_epochs=1), on_epoch=lambda info: seen.append(flushes_denormals()))
    assert seen == [True] and not flushes_denormals()
    with pytest.raises(HyperParameterError):
        train_batched(seed_cell("gru"), task, [hp], TINY, seeds=[1, 2])  # raises inside the training call
    assert not flushes_denormals()
