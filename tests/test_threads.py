"""Workers never oversubscribe: every evaluation records the torch threads it trained on, and that is what the
worker was given (default 1), whatever torch's per-process default or the driver's own setting."""

from __future__ import annotations

import pytest
import torch

from archsearch.executors import InProcessExecutor
from archsearch.search import SearchConfig, SearchDriver
from archsearch.storage import open_storage

TINY_TRAIN = {"max_epochs": 1, "epoch_positions": 1400, "valid_positions": 700, "test_positions": 700,
              "param_scale": 0.02}


def _search(url: str, executor) -> list:
    config = SearchConfig(
        name="threads", tasks=("xml",), seeds=("lstm", "gru"), scale="tiny", train_overrides=TINY_TRAIN,
        filter_overrides={**TINY_TRAIN, "param_scale": 0.1}, settings_per_task=2, init_settings_per_task=2,
        reference_settings_per_task=6, filter_threshold=0.0, gate=0.5, seed=5, batch_settings=3,
    )
    with executor:
        SearchDriver(open_storage(url), config, executor, max_evaluations=10).run()
    return [e for e in open_storage(url, read_only=True).evaluations() if e.status == "done"]


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("workers,given,expected", [(1, None, 1), (2, None, 1), (2, 2, 2)])
def test_each_evaluation_trains_on_the_threads_its_worker_was_given(tmp_path, threads_restored, workers, given,
                                                                    expected):
    executor = InProcessExecutor(workers) if given is None else InProcessExecutor(workers, torch_threads=given)
    torch.set_num_threads(3)  # the process's count changed after the executor started (torch's default: one a core)
    done = _search(f"sqlite:///{tmp_path}/t.db", executor)
    assert len(done) >= 4 and any(e.result.get("batched", 1) > 1 for e in done)  # single runs and groups
    assert {e.result["torch_threads"] for e in done} == {expected}


def test_torch_threads_must_be_positive():
    with pytest.raises(ValueError, match="torch_threads"):
        InProcessExecutor(1, torch_threads=0)


@pytest.mark.slow
def test_a_ray_worker_trains_on_the_cpus_of_its_task(tmp_path):
    ray = pytest.importorskip("ray")
    from archsearch.executors import RayExecutor

    assert not ray.is_initialized()
    try:
        with RayExecutor(slots=1, num_cpus=1, init_kwargs={"num_cpus": 2}) as executor:
            done = _search(f"sqlite:///{tmp_path}/r.db", executor)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert len(done) >= 4 and {e.result["torch_threads"] for e in done} == {1}
