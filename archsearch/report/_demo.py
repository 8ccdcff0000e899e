"""A synthetic search database written through the storage API (for tests, demos and size checks).

The cells and mutation records are real (the seed cells and :func:`archsearch.mutation.mutate`),
the pipeline follows the driver's stages (filter, task gates, complete) and counters,
but the training results are drawn at random, so a database with hundreds of
architectures takes seconds instead of hours. Do not mistake it for search results.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from archsearch.search._stage import COMPLETE, INIT, Stage, StageKind
from archsearch.storage import LeaderboardStorage, open_storage

_TASK_LEVEL = {"arithmetic": 0.55, "xml": 0.45, "ptb-mini": 0.25, "memorize": 0.4}  # typical metric per task
_SEEDS = ("lstm", "gru", "gf-lstm")  # hm-lstm (184 nodes) makes mutation slow; three seeds are enough here


def make_demo_db(url: str, mutants: int = 20, settings: int = 3, seed: int = 0, name: str = "demo",
                 failure_rate: float = 0.03) -> str:
    """Create a search called ``name`` with ``mutants`` mutation steps and random results.

    Args:
        url: SQLAlchemy URL of a database to create (or add the search to).
        mutants: Mutation steps to simulate (0 gives a search still evaluating its seeds).
        settings: Settings per task per architecture.
        seed: RNG seed (the same seed gives the same database).
        name: The search's name.
        failure_rate: Fraction of evaluations recorded as failed, with a traceback-like error.

    Returns:
        The URL.
    """
    from archsearch.search import preset

    rng = np.random.default_rng(seed)
    config = preset("quick").with_overrides(name=name, seeds=_SEEDS, settings_per_task=settings,
                                           init_settings_per_task=settings)
    storage = open_storage(url)
    search = storage.create_search(name, config.to_dict(), seed)
    sim = _Simulation(storage, search.id, config, rng, failure_rate)
    sim.seeds()
    storage.freeze_normalizers(search.id, storage.normalizers(search.id, config.reference))  # as the driver does
    for step in range(mutants):
        sim.step(step)
    storage.add_counts(search.id, dict(sim.counts))
    storage.update_search(search.id, status="stopped", state={"step": mutants})
    storage.close()
    return url


class _Simulation:
    """The driver's pipeline with random numbers instead of training."""

    def __init__(self, storage: LeaderboardStorage, search_id: int, config, rng: np.random.Generator,
                 failure_rate: float):
        self.storage, self.search_id, self.config, self.rng = storage, search_id, config, rng
        self.failure_rate = failure_rate
        self.quality: dict[int, float] = {}  # hidden "true" quality of each architecture
        self.counts: Counter[str] = Counter()

    def seeds(self) -> None:
        from archsearch.search_spaces import seed as seed_cell

        for name in self.config.seeds:
            cell = seed_cell(name)
            arch, _ = self.storage.add_architecture(
                self.search_id, name=name, graph_json=cell.to_json(), structural_hash=cell.structural_hash(),
                fingerprint=None, parent_id=None, mutation=None, origin="seed", stage=str(INIT))
            self.quality[arch.id] = 1.0 if name == self.config.reference else float(self.rng.uniform(0.9, 1.08))
            for task in self.config.tasks:
                self._evaluate(arch.id, task, "init", self.config.init_settings_per_task)
            self.storage.set_stage(arch.id, str(COMPLETE))

    def step(self, step: int) -> None:
        from archsearch.ir import Cell
        from archsearch.mutation import MutationError, mutate

        complete = self.storage.list_architectures(self.search_id, stage=str(COMPLETE))
        parent = complete[int(self.rng.integers(len(complete)))]
        self.counts["proposed"] += 1
        try:
            child, record = mutate(Cell.from_json(parent.graph_json), self.rng)
        except MutationError:
            self.counts["mutation_failures"] += 1
            return
        mutation = {**record.to_dict(), "step": step, "parent": parent.name}
        arch, created = self.storage.add_architecture(
            self.search_id, name=f"m{step}", graph_json=child.to_json(), structural_hash=child.structural_hash(),
            fingerprint=None, parent_id=parent.id, mutation=mutation, origin="mutant", stage=str(Stage.filter(1)))
        if not created:
            self.counts["duplicates"] += 1
            return
        self.quality[arch.id] = self.quality[parent.id] * float(self.rng.lognormal(-0.04, 0.1))
        self._pipeline(arch.id)

    def _pipeline(self, arch_id: int) -> None:
        self._evaluate(arch_id, self.config.filter_task, str(Stage.filter(1)), 1)
        if self.quality[arch_id] < 0.85 and self.rng.random() < 0.7:
            self.counts["filtered_out"] += 1
            self.storage.set_stage(arch_id, str(Stage(StageKind.FILTERED_OUT, visit=1)))
            return
        self.counts["passed_filter"] += 1
        for task in self.config.tasks:
            stage = Stage.on_task(task, 1)
            self.storage.set_stage(arch_id, str(stage))
            self._evaluate(arch_id, task, str(stage), self.config.settings_per_task)
            if self.quality[arch_id] * float(self.rng.uniform(0.9, 1.1)) < self.config.gate:  # after every task
                self.counts[f"gated_out:{task}"] += 1
                self.storage.set_stage(arch_id, str(Stage(StageKind.GATED_OUT, task, 1)))
                return
        self.counts["completed"] += 1
        self.storage.set_stage(arch_id, str(COMPLETE))

    def _evaluate(self, arch_id: int, task: str, purpose: str, count: int) -> None:
        from archsearch.train import sample_hparams

        for _ in range(count):
            hp = sample_hparams(self.rng, (250_000, 1_000_000)).to_dict()
            ev = self.storage.add_evaluation(arch_id, task, hp, purpose)
            if ev is None:
                continue
            self.storage.mark_running(ev.id, f"worker-{int(self.rng.integers(2))}")
            if self.rng.random() < self.failure_rate:
                self.storage.record_failure(ev.id, _FAKE_ERROR)
                continue
            self.storage.record_result(ev.id, self._result(arch_id, task, hp))

    def _result(self, arch_id: int, task: str, hp: dict[str, Any]) -> dict[str, Any]:
        # a smooth preference for mid learning rates and small init scales, plus noise
        fit = np.exp(-0.5 * (np.log10(hp["lr"]) + 0.3) ** 2) * np.exp(-0.5 * hp["init_scale"])
        diverged = bool(self.rng.random() < 0.03)
        metric = 0.0 if diverged else float(_TASK_LEVEL.get(task, 0.4) * self.quality[arch_id] * (0.6 + 0.4 * fit)
                                            * self.rng.uniform(0.93, 1.0))
        history = [{"epoch": e + 1, "loss": 2.0 / (e + 1), "valid": metric * (e + 1) / 4, "lr": hp["lr"]}
                   for e in range(4)]
        return {"metric": metric, "valid": metric, "test": metric * 0.98, "epochs": 4, "seconds": 1.0,
                "params": hp["params"], "diverged": diverged, "units": 64, "history": history}


_FAKE_ERROR = """Traceback (most recent call last):
  File "archsearch/executors/_work.py", line 40, in run_job
RuntimeError: CUDA out of memory (synthetic failure for the report demo)"""
