"""The paper's search rules (§3.1-3.3), checked on whole searches with an executor that returns canned results.

``CannedExecutor`` answers every evaluation at once with a number drawn from the cell's hidden quality
(per structural hash), so a search of hundreds of steps runs in seconds on a real SQLite file and the
driver's decisions (gates, settings, re-examination, normalizer) can be checked against the rules.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Callable

import numpy as np
import pytest

from archsearch.executors import EvalJob, EvalOutcome, Executor
from archsearch.ir import Cell
from archsearch.search import SearchConfig, SearchDriver
from archsearch.storage import open_storage

Score = Callable[[EvalJob, Cell], float]


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def quality(job: EvalJob, cell: Cell) -> float:
    """Seeds at 1.0 (the GRU) and 1.02 (the LSTM); mutants spread around them, per task; plus setting noise."""
    base = {"gru": 1.0, "lstm": 1.02}.get(cell.name)
    if base is None:
        base = 0.7 + 0.5 * _unit(cell.structural_hash(), job.task)
    return base * (0.8 + 0.2 * _unit(job.seed, "noise"))


class CannedExecutor(Executor):
    """Finishes every job at once: its result is ``score(job, cell)`` (an accuracy) on the job's task."""

    def __init__(self, score: Score = quality, slots: int = 2):
        self._score = score
        self._slots = slots
        self._done: list[EvalOutcome] = []
        self.jobs: list[EvalJob] = []

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, job: EvalJob) -> None:
        self.jobs.append(job)
        value = float(self._score(job, Cell.from_json(job.graph_json)))
        result = {"metric": value, "valid": value, "test": value, "epochs": 1, "seconds": 0.0, "params": 1,
                  "diverged": False}
        self._done.append(EvalOutcome(job.evaluation_id, result=result, worker="canned"))

    def poll(self, timeout: float) -> list[EvalOutcome]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)


def config(**changes) -> SearchConfig:
    base = SearchConfig(
        name="rules", tasks=("arithmetic", "xml"), seeds=("lstm", "gru"), scale="tiny",
        settings_per_task=4, init_settings_per_task=4, reference_settings_per_task=4, filter_threshold=0.5,
        p_reevaluate=0.2, seed=11,
    )
    return base.with_overrides(**changes)


def search(tmp_path, cfg: SearchConfig, evaluations: int, score: Score = quality, name: str = "s"):
    url = f"sqlite:///{tmp_path}/{name}.db"
    executor = CannedExecutor(score)
    SearchDriver(open_storage(url), cfg, executor, max_evaluations=evaluations).run()
    storage = open_storage(url, read_only=True)
    return storage, storage.get_search(cfg.name), executor


# ------------------------------------------------------------------ §3.1 gates
def test_no_cell_completes_below_the_last_gate(tmp_path):
    storage, record, _ = search(tmp_path, config(), 400)
    norms = storage.normalizers(record.id, "gru")
    complete = storage.list_architectures(record.id, stage="complete")
    mutants = [a for a in complete if a.origin == "mutant"]
    assert len(mutants) >= 3, "the search should have completed some children"
    for arch in mutants:
        best = storage.best_scores(arch.id)
        assert best["xml"] > 0.9 * norms["xml"], (arch.name, best, norms)
        assert best["arithmetic"] > 0.9 * norms["arithmetic"]
    gated = collections.Counter(a.stage.split("#")[0] for a in storage.list_architectures(record.id))
    assert gated["gated_out:xml"] >= 1, "some children must have been stopped at the last task's gate"
    assert record.state["counters"]["gated_out:xml"] == gated["gated_out:xml"]


# ------------------------------------------------------------------ §3.1 re-examination
def test_a_redrawn_complete_cell_outside_the_top_list_gets_fresh_settings(tmp_path):
    # top_size 2: the seeds hold the list, so every complete child is outside it
    storage, record, _ = search(tmp_path, config(top_size=2, p_reevaluate=0.0), 500)
    counters = record.state["counters"]
    assert counters.get("reexamined_complete", 0) >= 1, counters
    redrawn = [a for a in storage.list_architectures(record.id, stage="complete")
               if any(e.purpose.startswith("reexamine") for e in storage.evaluations(architecture_id=a.id))]
    assert len(redrawn) >= 1
    for arch in redrawn:
        evals = storage.evaluations(architecture_id=arch.id)
        fresh = [e for e in evals if e.purpose.startswith("reexamine")]
        assert {e.task for e in fresh} == {"arithmetic", "xml"}
        keys = [(e.task, e.hparams_hash) for e in evals]
        assert len(keys) == len(set(keys)), "a fresh setting repeated one the cell had run"
        assert not any(e.purpose.startswith("filter") and e.purpose != "filter#1" for e in evals), \
            "a complete cell skips the filter"


# ------------------------------------------------------------------ §3.3 settings for children
def below_the_seeds(job: EvalJob, cell: Cell) -> float:
    """Children at 96% of the GRU: they pass the gates but never enter a top list of the two seeds."""
    return {"gru": 1.0, "lstm": 1.02}.get(cell.name, 0.96) * (0.8 + 0.2 * _unit(job.seed, "noise"))


def _child_sources(tmp_path, threshold: int) -> tuple[collections.Counter, object, object]:
    cfg = config(tasks=("arithmetic",), top_size=2, p_reevaluate=0.0, init_settings_per_task=24, reference_settings_per_task=24,
                 settings_per_task=8, parent_settings_threshold=threshold)
    storage, record, _ = search(tmp_path, cfg, 400, below_the_seeds, name=f"t{threshold}")
    counters = record.state["counters"]
    sources = collections.Counter({k.split(":")[2]: v for k, v in counters.items() if k.startswith("source:task:")})
    assert sum(sources.values()) >= 280, counters
    return sources, storage, record


def _shares(sources: collections.Counter) -> dict[str, float]:
    total = sum(sources.values())
    return {k: v / total for k, v in sources.items()}


def test_children_of_a_parent_with_many_settings_take_80_percent_from_its_best(tmp_path):
    sources, storage, record = _child_sources(tmp_path, threshold=20)  # each seed ran 24 settings: "more than"
    shares = _shares(sources)
    assert abs(shares["parent_best"] - 0.8) <= 0.05 and abs(shares["random"] - 0.2) <= 0.05, shares
    assert set(shares) == {"parent_best", "random"}
    # the settings counted as the parent's are the parent's settings on that task (random ones rarely are)
    overlap = 0
    for arch in storage.list_architectures(record.id):
        if arch.origin == "mutant":
            parents = {e.hparams_hash for e in storage.evaluations(architecture_id=arch.parent_id, task="arithmetic")}
            overlap += sum(e.hparams_hash in parents for e in storage.evaluations(architecture_id=arch.id,
                                                                                task="arithmetic"))
    assert sources["parent_best"] <= overlap <= sources["parent_best"] + 5


def test_children_of_a_parent_with_few_settings_take_thirds(tmp_path):
    sources, _, _ = _child_sources(tmp_path, threshold=420)
    shares = _shares(sources)
    for source in ("random", "reference_best", "parent_tried"):
        assert abs(shares[source] - 1 / 3) <= 0.05, shares


# ------------------------------------------------------------------ a fixed reference
def test_the_normalizer_is_fixed_when_initialization_ends(tmp_path):
    cfg = config(top_size=2, p_reevaluate=0.6, reference_settings_per_task=3, init_settings_per_task=2)
    storage, record, executor = search(tmp_path, cfg, 150)
    gru = storage.find_architecture(record.id, name="gru")
    first = [Cell.from_json(j.graph_json).name for j in executor.jobs[:6]]
    assert first == ["gru"] * 6, "the reference's settings run first"
    init = [e for e in storage.evaluations(architecture_id=gru.id) if e.purpose == "init"]
    assert collections.Counter(e.task for e in init) == {"arithmetic": 3, "xml": 3}
    frozen = {t: max(e.metric for e in init if e.task == t) for t in cfg.tasks}
    assert record.normalizers == pytest.approx(frozen)
    # the GRU was re-evaluated and did better than at initialization: the normalizer did not move
    live = storage.best_scores(gru.id)
    assert any(e.purpose.startswith("reeval") for e in storage.evaluations(architecture_id=gru.id))
    assert any(live[t] > frozen[t] for t in cfg.tasks), (live, frozen)
    assert storage.normalizers(record.id, "gru") == pytest.approx(frozen)
    fitness = {a.name: f for a, f, _ in storage.top_k(record.id, 10, list(cfg.tasks), "gru")}
    assert fitness["gru"] == pytest.approx(min(live[t] / frozen[t] for t in cfg.tasks))
    # every gate decision divided by the frozen numbers
    for arch in storage.list_architectures(record.id):
        best = storage.best_scores(arch.id)
        if arch.stage.startswith("gated_out:arithmetic"):
            assert best["arithmetic"] <= 0.9 * frozen["arithmetic"]
        if arch.stage == "complete" and arch.origin == "mutant":
            assert all(best[t] > 0.9 * frozen[t] for t in cfg.tasks)
    # a resumed search keeps them
    SearchDriver(open_storage(storage.url), cfg, CannedExecutor(), max_evaluations=200).run()
    assert open_storage(storage.url, read_only=True).get_search(cfg.name).normalizers == record.normalizers
