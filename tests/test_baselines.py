"""The separation statistic and its paired bootstrap (archsearch.baselines), on synthetic scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from archsearch.baselines import (
    PAPER_TABLE1, best_of, bootstrap, paper_separation, ratio, score_matrix, separation,
)


def _scores(gated: float, ungated: float, n: int, spread: float, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {cell: (centre + spread * rng.standard_normal(n)).clip(0, 1).tolist()
            for cell, centre in [("tanh", ungated), ("lstm-f", ungated), ("lstm", gated), ("gru", gated)]}


def test_ratio_is_weaker_gated_over_stronger_ungated() -> None:
    assert ratio({"lstm": 0.9, "gru": 0.6, "tanh": 0.2, "lstm-f": 0.3}) == pytest.approx(2.0)
    assert ratio({"lstm": 0.5, "gru": 0.6, "tanh": 0.0, "lstm-f": 0.0}) == math.inf
    assert math.isnan(ratio({"lstm": 0.0, "gru": 0.6, "tanh": 0.0, "lstm-f": 0.0}))


def test_paper_ratios_from_table1() -> None:
    assert paper_separation("arithmetic") == pytest.approx(0.89228 / 0.29493)  # 3.03
    assert paper_separation("xml") == pytest.approx(0.42470 / 0.32050)  # 1.33
    assert paper_separation("ptb-mini") == pytest.approx(PAPER_TABLE1["lstm"]["ptb"] / PAPER_TABLE1["lstm-f"]["ptb"])
    assert paper_separation("memorize") is None


def test_clear_gap_gives_an_interval_above_one() -> None:
    est = separation(_scores(0.8, 0.25, n=12, spread=0.05))
    assert est is not None and est.settings == 12
    best = {c: max(v) for c, v in _scores(0.8, 0.25, n=12, spread=0.05).items()}
    assert est.value == pytest.approx(ratio(best))
    assert 2.0 < est.low <= est.value <= est.high < 4.5


def test_no_gap_gives_an_interval_around_one() -> None:
    est = separation(_scores(0.3, 0.3, n=12, spread=0.05, seed=3))
    assert est.low < 1.0 < est.high


def test_constant_scores_collapse_the_interval_and_seed_repeats() -> None:
    scores = {"tanh": [0.2] * 5, "lstm-f": [0.1] * 5, "lstm": [0.5] * 5, "gru": [0.7] * 5}
    est = separation(scores)
    assert est.value == est.low == est.high == pytest.approx(2.5)
    noisy = _scores(0.6, 0.3, n=6, spread=0.1)
    assert separation(noisy, seed=4) == separation(noisy, seed=4)


def test_bootstrap_is_paired_over_settings() -> None:
    # the two cells trade the best setting: paired resamples keep "a" ahead of "b" in every draw
    scores = {"a": [0.9, 0.5, 0.4], "b": [0.8, 0.45, 0.3]}
    est = bootstrap(scores, lambda best: best["a"] - best["b"], resamples=500)
    assert est.low > 0
    one = bootstrap(scores, best_of("a"), resamples=500)
    # a resample without setting 0 has best 0.5, or 0.4 when it is setting 2 three times (1/27 > 2.5%)
    assert one.value == one.high == 0.9 and one.low == 0.4
    assert bootstrap(scores, best_of("a"), resamples=500, level=0.9).low == 0.5


def test_missing_cells_and_ragged_input() -> None:
    assert separation({"tanh": [0.1], "gru": [0.5]}) is None
    with pytest.raises(ValueError, match="same settings"):
        bootstrap({"a": [0.1, 0.2], "b": [0.3]}, best_of("a"))
    with pytest.raises(ValueError):
        bootstrap({}, best_of("a"))


def test_score_matrix_keeps_settings_every_cell_finished() -> None:
    runs = [{"cell": c, "task": "xml", "setting": s, "metric": 0.1 * s + (c == "gru")}
            for c in ("tanh", "gru") for s in range(3)] + [
        {"cell": "tanh", "task": "xml", "setting": 3, "metric": 0.9},
        {"cell": "gru", "task": "arithmetic", "setting": 0, "metric": 0.5}]
    assert score_matrix(runs, "xml") == {"tanh": [0.0, 0.1, 0.2], "gru": [1.0, 1.1, 1.2]}
    assert score_matrix(runs, "ptb-mini") == {}


def test_baseline_settings_come_from_the_scales_setting_space(monkeypatch):
    from archsearch.baselines import draw_settings, make_jobs
    from archsearch.tasks import get_task
    from archsearch.train import PAPER_SPACE, SETTING_SPACES, SettingSpace

    tasks = [get_task("arithmetic"), get_task("xml")]
    monkeypatch.setitem(SETTING_SPACES, "tiny", SettingSpace(lrs=(0.3,), layers=(1, 2)))
    draws = draw_settings(tasks, 20, seed=0, scale="tiny")
    assert {hp.lr for hps in draws.values() for hp in hps} == {0.3}
    assert {hp.layers for hps in draws.values() for hp in hps} == {1, 2}
    jobs = make_jobs(["tanh", "lstm"], tasks, 4, 0, "tiny")
    assert {job["hparams"]["lr"] for job in jobs} == {0.3}
    paper = draw_settings(tasks, 20, seed=0, scale="paper")
    assert SETTING_SPACES["paper"] == PAPER_SPACE and len({hp.lr for hp in paper["xml"]}) > 1


def _short(**more):
    """tiny's setting space (every setting one shape) with a few SGD steps."""
    return {"epoch_positions": 20 * 35 * 2, "valid_positions": 20 * 35 * 2, "test_positions": 20 * 35 * 2,
            "max_epochs": 2, **more}


def test_group_jobs_batches_one_cell_task_and_shape(monkeypatch):
    from archsearch.baselines import group_jobs, make_jobs
    from archsearch.tasks import get_task
    from archsearch.train import SETTING_SPACES, SettingSpace

    tasks = [get_task("arithmetic"), get_task("xml")]
    jobs = make_jobs(["tanh", "lstm"], tasks, 5, 0, "tiny")
    groups = group_jobs(jobs, 2)
    assert sorted(len(g) for g in groups) == [1] * 4 + [2] * 8  # 5 settings of each (cell, task): 2 + 2 + 1
    assert sorted(id(j) for g in groups for j in g) == sorted(id(j) for j in jobs)  # each job exactly once
    assert all(len({(j["cell"], j["task"]) for j in g}) == 1 for g in groups)
    assert [g[0] for g in groups] == [j for j in jobs if any(g[0] is j for g in groups)]  # the jobs' order
    assert group_jobs(jobs, 1) == [[j] for j in jobs]
    one = [j for j in jobs if j["cell"] == "lstm" and j["task"] == "xml"]
    assert [len(g) for g in group_jobs(one, 20)] == [5]
    assert sorted(len(g) for g in group_jobs(one, 20, workers=2)) == [2, 3]  # no worker idles for batching
    assert sorted(len(g) for g in group_jobs(one, 20, workers=8)) == [1] * 5
    with pytest.raises(ValueError, match="at least 1"):
        group_jobs(jobs, 0)
    # settings of different depth never share a model
    monkeypatch.setitem(SETTING_SPACES, "tiny", SettingSpace(lrs=(0.3,), layers=(1, 2)))
    mixed = make_jobs(["lstm"], tasks[:1], 12, 0, "tiny")
    for group in group_jobs(mixed, 20):
        assert len({j["hparams"]["layers"] for j in group}) == 1
    shapes = {(j["hparams"]["layers"], j["hparams"]["params"]) for j in mixed}
    assert len(shapes) > 1 and len(group_jobs(mixed, 20)) == len(shapes)


def test_batched_baselines_equal_one_by_one_in_float64():
    """The same jobs, batched and one by one: the same records (float64, where rounding cannot drift apart)."""
    from archsearch.baselines import make_jobs, run_jobs
    from archsearch.tasks import get_task

    jobs = make_jobs(["lstm", "gru"], [get_task("xml")], 3, 0, "tiny", train_overrides=_short())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        alone = {(r["cell"], r["setting"]): r for r in run_jobs(jobs, 1, batch=1)}
        batched = {(r["cell"], r["setting"]): r for r in run_jobs(jobs, 1, batch=3)}
    finally:
        torch.set_default_dtype(previous)
    assert set(alone) == set(batched) and len(alone) == 6
    for key, run in alone.items():
        assert run["batched"] == 1 and batched[key]["batched"] == 3 and batched[key]["cpu_seconds"] > 0
        assert batched[key]["hparams"] == run["hparams"] and batched[key]["epochs"] == run["epochs"]
        for field in ("valid", "test", "metric"):
            assert batched[key][field] == pytest.approx(run[field], abs=1e-9)


def test_a_group_that_fails_batched_is_trained_one_by_one():
    """Settings of two depths forced into one group cannot share a model: each is trained alone instead."""
    from archsearch.baselines import make_jobs, run_group, run_group_safely
    from archsearch.tasks import get_task

    jobs = make_jobs(["gru"], [get_task("xml")], 8, 0, "ci")
    pair = next([a, b] for a in jobs for b in jobs if a["hparams"]["layers"] != b["hparams"]["layers"])
    with pytest.raises(Exception, match="layers"):
        run_group(pair)
    records = run_group_safely(pair)
    assert [r["setting"] for r in records] == [j["setting"] for j in pair] and all(r["batched"] == 1 for r in records)
