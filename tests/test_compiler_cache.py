"""The compiler's bounded caches: LRU eviction, linecache clean-up, recompiling after eviction."""

from __future__ import annotations

import linecache

import pytest
import torch

import archsearch
from archsearch.compiler import DEFAULT_CACHE_SIZE, cache_info, cache_size, compile_cell, set_cache_size
from archsearch.executors import InProcessExecutor
from archsearch.search import SearchConfig, SearchDriver
from archsearch.storage import open_storage


@pytest.fixture
def small_cache():
    """Caches of 2 entries for the test, then the default bound again (both start empty)."""
    set_cache_size(2)
    yield
    set_cache_size(DEFAULT_CACHE_SIZE)


def _step_file(stack) -> str:
    return stack.layers[0]._step.__code__.co_filename


def _output(stack, seed: int = 0) -> torch.Tensor:
    x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return stack(x)[0]


def test_the_least_recently_used_cell_is_evicted_and_recompiles_the_same(small_cache):
    first = compile_cell(archsearch.seed("lstm"), 4, 6, seed=1)
    first_file = _step_file(first)
    assert first_file in linecache.cache
    compile_cell(archsearch.seed("gru"), 4, 6, seed=1)
    third = compile_cell(archsearch.seed("tanh"), 4, 6, seed=1)

    assert cache_info() == {"steps": 2, "plans": 2, "maxsize": 2}
    assert first_file not in linecache.cache, "an evicted step function must leave linecache too"
    assert _step_file(third) in linecache.cache

    again = compile_cell(archsearch.seed("lstm"), 4, 6, seed=1)
    assert again.layers[0]._step is not first.layers[0]._step, "the evicted step was generated again"
    assert _step_file(again) in linecache.cache and _step_file(again) != first_file
    torch.testing.assert_close(_output(again), _output(first), atol=0, rtol=0)  # the old model still runs
    assert cache_info()["steps"] == 2


def test_a_cache_hit_is_the_most_recently_used(small_cache):
    lstm = compile_cell(archsearch.seed("lstm"), 4, 6)
    gru = compile_cell(archsearch.seed("gru"), 4, 6)
    assert compile_cell(archsearch.seed("lstm"), 4, 6).layers[0]._step is lstm.layers[0]._step  # a hit
    compile_cell(archsearch.seed("tanh"), 4, 6)  # evicts gru, the least recently used now
    assert _step_file(lstm) in linecache.cache and _step_file(gru) not in linecache.cache


def test_the_cache_size_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            set_cache_size(bad)
    assert cache_size() == DEFAULT_CACHE_SIZE


def test_the_search_config_default_is_the_compiler_default():
    assert SearchConfig().compile_cache_size == DEFAULT_CACHE_SIZE


def test_a_search_bounds_its_workers_caches(tmp_path):
    from test_search import tiny_config

    config = tiny_config(compile_cache_size=3)
    try:
        with InProcessExecutor(1) as executor:
            SearchDriver(open_storage(f"sqlite:///{tmp_path}/c.db"), config, executor, max_evaluations=3).run()
        info = cache_info()
        assert info["maxsize"] == 3 and 1 <= info["steps"] <= 3 and info["plans"] <= 3
    finally:
        set_cache_size(DEFAULT_CACHE_SIZE)
