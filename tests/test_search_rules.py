"""The paper's search rules (§3.1-3.3), checked on whole searches with an executor that returns canned results.

``CannedExecutor`` answers every evaluation at once with a number drawn from the cell's hidden quality
(per structural hash), so a search of hundreds of steps runs in seconds on a real SQLite file and the
driver's decisions (gates, settings, re-examination, normalizer) can be checked against the rules.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time
from typing import Callable

import numpy as np
import pytest

import archsearch
from archsearch.errors import SearchConfigError
from archsearch.executors import EvalJob, EvalOutcome, Executor
from archsearch.ir import Cell, input_reaches_states, output_reads_input, parse_cell
from archsearch.mutation import mutate
from archsearch.search import SearchConfig, SearchDriver, Stage, StageKind
from archsearch.storage import open_storage
from archsearch.tasks import Metric, get_task, register_task

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


def below_the_seeds(job: EvalJob, cell: Cell) -> float:
    """Children at 96% of the GRU: they pass the gates but never enter a top list of the two seeds."""
    return {"gru": 1.0, "lstm": 1.02, "tanh": 1.02}.get(cell.name, 0.96) * (0.8 + 0.2 * _unit(job.seed, "noise"))


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
        name="rules", tasks=("arithmetic", "xml"), seeds=("lstm", "gru"), scale="ci",
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
    assert record.counters["gated_out:xml"] == gated["gated_out:xml"]


# ------------------------------------------------------------------ §3.1 re-examination
def test_a_redrawn_complete_cell_outside_the_top_list_gets_fresh_settings(tmp_path):
    # top_size 1: the tanh RNN holds the list (every complete child is outside it) and has few distinct children
    cfg = config(seeds=("tanh", "gru"), top_size=1, p_reevaluate=0.0)
    storage, record, _ = search(tmp_path, cfg, 300, below_the_seeds)
    counters = record.counters
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
def _child_sources(tmp_path, threshold: int) -> tuple[collections.Counter, object, object]:
    cfg = config(tasks=("arithmetic",), top_size=2, p_reevaluate=0.0, init_settings_per_task=24, reference_settings_per_task=24,
                 settings_per_task=8, parent_settings_threshold=threshold)
    storage, record, _ = search(tmp_path, cfg, 400, below_the_seeds, name=f"t{threshold}")
    counters = record.counters
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


# ------------------------------------------------------------------ metrics with a direction
class XMLPerplexity(type(get_task("xml"))):
    """XML's sizes, scored by perplexity (lower is better), as a task of a user's own could be."""

    name = "xml-perplexity"
    metric = Metric.PERPLEXITY


register_task("xml-perplexity", lambda _: XMLPerplexity())


def lower_is_better(unit: float) -> Score:
    """``unit / quality`` on the search task (an NLL or a perplexity: lower is better); accuracy on the filter."""
    def score(job: EvalJob, cell: Cell) -> float:
        value = quality(job, cell)
        return value if job.task == "memorize" else unit / value
    return score


@pytest.mark.parametrize("task,unit", [("chorales", 8.0), ("xml-perplexity", 120.0)])
def test_lower_is_better_metrics_rank_and_gate_the_right_way(tmp_path, task, unit):
    cfg = config(tasks=(task,), top_size=30, p_reevaluate=0.1)
    storage, record, _ = search(tmp_path, cfg, 160, lower_is_better(unit))
    best = {}  # the lowest value of each cell on the task
    for arch in storage.list_architectures(record.id):
        values = [e.valid for e in storage.evaluations(architecture_id=arch.id, task=task, status="done")]
        if values:
            best[arch.id] = min(values)
    gru = storage.find_architecture(record.id, name="gru")
    init = [e.valid for e in storage.evaluations(architecture_id=gru.id) if e.purpose == "init"]
    assert record.normalizers[task] == pytest.approx(1 / min(init))  # the GRU's lowest value, as a score
    top = storage.top_k(record.id, 30, [task], "gru")
    assert len(top) >= 5
    for arch, fitness, _ in top:  # fitness = the GRU's value / the cell's: below the GRU is better
        assert fitness == pytest.approx(min(init) / best[arch.id])
    values = [best[a.id] for a, _, _ in top]
    assert values == sorted(values), "the lowest value must rank first"
    assert {a.name for a, _, _ in top[:1]} != {"gru"} or values[0] <= min(init)
    for arch in storage.list_architectures(record.id):
        if arch.origin == "mutant" and arch.stage == "complete":
            assert best[arch.id] < min(init) / 0.9
        if arch.stage.startswith(f"gated_out:{task}"):
            assert best[arch.id] >= min(init) / 0.9
    assert any(a.stage.startswith(f"gated_out:{task}") for a in storage.list_architectures(record.id))


# ------------------------------------------------------------------ cheap rejection before training
FRAGILE = """cell fragile
states h, c
c' = tanh(W(x) + b)
h' = h * tanh(W(c) + b)
"""


def test_a_hidden_output_that_never_reads_the_input_is_detected_over_time():
    assert all(all(input_reaches_states(archsearch.seed(name))) for name in archsearch.seeds())
    assert input_reaches_states(parse_cell(FRAGILE)) == [True, True]  # h reads x_{t-1} through c
    dead = parse_cell("cell dead\nstates h, c\nc' = tanh(W(x) + W(c) + b)\nh' = h * tanh(W(h) + b)\n")
    assert input_reaches_states(dead) == [False, True] and not output_reads_input(dead)


def test_children_that_cannot_learn_are_rejected_before_training_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    records = [mutate(parse_cell(FRAGILE), rng) for _ in range(100)]
    assert sum(r.rejection_reasons.get("no_input_path", 0) for _, r in records) >= 1
    assert all(output_reads_input(child) for child, _ in records)
    # the driver counts every rejected child by reason; none was stored or trained
    storage, record, _ = search(tmp_path, config(seeds=("tanh", "gru")), 120)
    counters = record.counters
    mutants = [a for a in storage.list_architectures(record.id) if a.origin == "mutant"]
    reasons = collections.Counter()
    for arch in mutants:
        reasons.update(arch.mutation["rejection_reasons"])
        assert output_reads_input(Cell.from_json(arch.graph_json))
    counted = {k.removeprefix("rejected:"): v for k, v in counters.items() if k.startswith("rejected:")}
    assert sum(reasons.values()) >= 1  # (children equal to a known cell are not stored: their rejections count)
    assert all(counted.get(k, 0) >= v for k, v in reasons.items()), (counted, reasons)


# ------------------------------------------------------------------ overrides checked when the search is created
@pytest.mark.parametrize("overrides,message", [({"max_epoch": 3}, "'max_epoch' is not a training setting"),
                                               ({"schedule": "fast"}, "unknown schedule 'fast'")])
def test_overrides_that_every_worker_would_refuse_are_refused_at_creation(overrides, message):
    with pytest.raises(SearchConfigError, match=message):
        config(train_overrides=overrides)
    with pytest.raises(SearchConfigError, match=message):
        config(filter_overrides=overrides)
    assert config(train_overrides={"max_epochs": 3}).train_overrides == {"max_epochs": 3}


# ------------------------------------------------------------------ the typed vocabulary
@pytest.mark.parametrize("text", ["init", "complete", "filter#1", "task:ptb-mini#3", "filtered_out#2",
                                  "gated_out:xml#1"])
def test_stages_round_trip_through_their_stored_form(text):
    stage = Stage.parse(text)
    assert str(stage) == text and Stage.parse(str(stage)) == stage
    assert stage.in_progress == (stage.kind in (StageKind.INIT, StageKind.FILTER, StageKind.TASK))


@pytest.mark.parametrize("text", ["", "task#1", "task:xml", "filter", "complete#2", "gated_out#1", "done"])
def test_malformed_stages_are_refused(text):
    with pytest.raises(ValueError, match="not a stage"):
        Stage.parse(text)


def test_metrics_declare_their_direction():
    assert Metric.ACCURACY.better(0.9, 0.8) and Metric.NLL.better(0.8, 0.9) and Metric.PERPLEXITY.better(90, 100)
    assert Metric.NLL.score(8.0) / Metric.NLL.score(10.0) == pytest.approx(1.25)  # 20% lower NLL: 1.25x
    assert Metric.EXP_NEG_NLL.from_nll(math.log(100)) == pytest.approx(0.01)
    assert Metric.PERPLEXITY.from_nll(math.log(100)) == pytest.approx(100)
    assert Metric.PERPLEXITY.score(100) == pytest.approx(Metric.EXP_NEG_NLL.score(0.01))
    assert Metric.NLL.score(float("nan")) == 0.0 and Metric.ACCURACY.score(None) == 0.0
    assert {get_task(t).metric for t in ("arithmetic", "xml", "ptb-mini", "chorales")} == \
        {Metric.ACCURACY, Metric.EXP_NEG_NLL, Metric.NLL}


# ------------------------------------------------------------------ the random-search control (issue 12)
class NoSelection(SearchDriver):
    def _select(self, rng):
        raise AssertionError("a random search must not read the top list")

    def _in_top(self, arch_id):
        raise AssertionError("a random search must not read the top list")


def test_random_search_counts_a_proposal_equal_to_a_known_cell_as_a_duplicate(tmp_path):
    """Single mutations of two seeds soon repeat themselves: random search re-examines none of them (that would
    read the top list and re-train known cells), it counts them as duplicates."""
    cfg = config(strategy="random", name="random", random_chain_max=1)
    url = f"sqlite:///{tmp_path}/d.db"
    NoSelection(open_storage(url), cfg, CannedExecutor(), max_evaluations=600).run()
    storage = open_storage(url, read_only=True)
    record = storage.get_search("random")
    assert record.counters.get("duplicates", 0) >= 1, record.counters
    assert not any(k.startswith("reexamined") for k in record.counters)
    assert all(Stage.parse(a.stage).visit <= 1 for a in storage.list_architectures(record.id) if a.origin == "mutant")
    assert not any(e.purpose.startswith("reexamine") for e in storage.evaluations(search_id=record.id))


def test_random_search_draws_from_the_seeds_without_selection_and_spends_the_budget(tmp_path):
    cfg = config(strategy="random", name="random")
    url = f"sqlite:///{tmp_path}/r.db"
    progress = NoSelection(open_storage(url), cfg, CannedExecutor(), max_evaluations=300).run()
    storage = open_storage(url, read_only=True)
    record = storage.get_search("random")
    assert progress.done == 300 and len(storage.evaluations(search_id=record.id, status="done")) == 300
    mutants = [a for a in storage.list_architectures(record.id) if a.origin == "mutant"]
    seeds = {storage.find_architecture(record.id, name=n).id for n in cfg.seeds}
    assert len(mutants) >= 10 and all(a.parent_id in seeds for a in mutants)
    chains = collections.Counter(a.mutation["chain"] for a in mutants)
    assert set(chains) <= set(range(1, cfg.random_chain_max + 1)) and len(chains) >= 4, chains
    assert all(len(a.mutation["transforms"]) >= a.mutation["chain"] for a in mutants)
    purposes = {e.purpose.split("#")[0] for e in storage.evaluations(search_id=record.id)}
    assert {p.split(":")[0] for p in purposes} <= {"filter", "init", "task"}, purposes  # no reeval, no reexamine
    assert record.config["strategy"] == "random" and "reevaluations" not in record.counters
    assert all(Stage.parse(a.stage).visit <= 1 for a in mutants)  # no architecture entered a stage twice
    # the filter and the gates apply as in evolution
    stages = collections.Counter(Stage.parse(a.stage).kind for a in mutants)
    assert stages[StageKind.GATED_OUT] + stages[StageKind.FILTERED_OUT] >= 1, stages


def test_the_strategy_is_part_of_the_search_and_shown_where_users_read_it(tmp_path, capsys):
    from archsearch.cli import main

    url = f"sqlite:///{tmp_path}/r.db"
    SearchDriver(open_storage(url), config(strategy="random", name="r"), CannedExecutor(), max_evaluations=60).run()
    with pytest.raises(SearchConfigError, match="strategy"):  # resuming it as evolution mixes two searches
        SearchDriver(open_storage(url), config(name="r"), CannedExecutor(), max_evaluations=70).run()
    assert main(["leaderboard", "--db", url, "--search", "r"]) == 0
    assert "(random)" in capsys.readouterr().out
    assert main(["leaderboard", "--db", url, "--search", "r", "--format", "json"]) == 0
    import json

    assert {row["strategy"] for row in json.loads(capsys.readouterr().out)} == {"random"}
    from archsearch.report import write_report

    write_report(url, tmp_path / "r.html", search_name="r")
    assert "strategy random" in (tmp_path / "r.html").read_text()
    with pytest.raises(SearchConfigError, match="unknown strategy 'greedy'"):
        config(strategy="greedy")


# ------------------------------------------------------------------ the scale's setting space
def test_random_settings_come_from_the_scales_setting_space(tmp_path, monkeypatch):
    from archsearch.train import SETTING_SPACES, SettingSpace

    narrow = SettingSpace(lrs=(0.2, 0.5), layers=(1,))
    monkeypatch.setitem(SETTING_SPACES, "ci", narrow)
    storage, record, _ = search(tmp_path, config(), 150)
    seen = [e.hparams for e in storage.evaluations(search_id=record.id)]
    single = {Cell.from_json(a.graph_json).depth == 1 for a in storage.list_architectures(record.id)}
    assert len(seen) >= 100 and single == {True}
    assert {hp["lr"] for hp in seen} == {0.2, 0.5} and {hp["layers"] for hp in seen} == {1}
    with pytest.raises(Exception, match="must be a non-empty part of"):
        SettingSpace(lrs=(0.25,))


def test_the_medium_preset_is_the_quick_structure_at_small(tmp_path) -> None:
    """A whole `medium` search (canned results): LSTM and GRU seeds, 2 settings a task, and every job trains with
    the `small` scale's config for its task (its harder tasks, arithmetic's longer runs, its filter), which the
    search stores."""
    from archsearch.search import preset
    from archsearch.train import FILTER_OVERRIDES, TASK_OVERRIDES, scale_config

    cfg = preset("medium").with_overrides(seed=3)
    executor = CannedExecutor()
    url = f"sqlite:///{tmp_path}/m.db"
    SearchDriver(open_storage(url), cfg, executor, max_evaluations=60).run()
    storage = open_storage(url, read_only=True)
    record = storage.get_search("medium")
    assert {a.name for a in storage.list_architectures(record.id) if a.origin == "seed"} == {"lstm", "gru"}
    small = scale_config("small")
    for job in executor.jobs:
        own = TASK_OVERRIDES["small"].get(job.task, {})
        assert job.train_config["max_epochs"] == own.get("max_epochs", small.max_epochs)
        if job.task == "memorize":
            assert job.train_config["max_epochs"] == FILTER_OVERRIDES["small"]["max_epochs"]
        if job.task == "xml":
            assert job.train_config["xml_max_tag_length"] == small.xml_max_tag_length == 6
    arithmetic = record.config["train_configs"]["arithmetic"]
    assert arithmetic["arithmetic_max_digits"] == 4 and arithmetic["max_epochs"] == 4 * small.max_epochs
    assert any(a.origin == "mutant" for a in storage.list_architectures(record.id))


class Barren(SearchDriver):
    """A search whose mutation steps never create work (as when every proposal is a duplicate)."""

    def _step(self):
        self._add_counts({"proposed": 1, "duplicates": 1})
        return False


def test_a_search_that_proposes_nothing_new_stops_and_says_why(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/b.db"
    with caplog.at_level("WARNING", logger="archsearch.search._driver"):
        progress = Barren(open_storage(url), config(name="b"), CannedExecutor(), max_evaluations=500).run()
    record = open_storage(url, read_only=True).get_search("b")
    assert progress.done < 500 and record.status == "stopped"
    assert any("proposed nothing new" in r.getMessage() for r in caplog.records), caplog.text


class ProposesASeedCopy(SearchDriver):
    """Its first mutation step proposes a real GRU child that computes exactly what the GRU computes (a ReLU
    inserted on 1 - z, which is never negative): drawn by the mutation engine from a fixed generator."""

    copy_proposed = None

    def _step(self):
        if self.copy_proposed is None:
            gru = self.storage.find_architecture(self.search.id, name="gru")
            self.copy_proposed = self._mutate_step(gru, np.random.default_rng(78), 0)
            return self.copy_proposed
        return super()._step()


def test_a_child_that_computes_what_a_seed_computes_is_not_trained_as_new(tmp_path):
    """Seeds carry a functional fingerprint too, so a functional copy of a seed is the seed (paper §3.1)."""
    from archsearch.mutation import fingerprint, mutate
    from archsearch.search_spaces import seed

    child, _ = mutate(seed("gru"), np.random.default_rng(78))
    assert child.structural_hash() != seed("gru").structural_hash() and fingerprint(child) == fingerprint(seed("gru"))
    url = f"sqlite:///{tmp_path}/c.db"
    driver = ProposesASeedCopy(open_storage(url), config(name="c"), CannedExecutor(), max_evaluations=60)
    driver.run()
    storage = open_storage(url, read_only=True)
    record = storage.get_search("c")
    assert driver.copy_proposed is False and record.counters["duplicates"] >= 1  # the GRU is on the top list
    assert storage.find_architecture(record.id, structural_hash=child.structural_hash()) is None
    assert storage.find_architecture(record.id, name="gru").fingerprint == fingerprint(seed("gru"))


def test_reevaluating_cells_that_ran_every_setting_is_no_work(tmp_path, monkeypatch, caplog):
    """In a setting space of one setting per task, every cell has run all its settings once it completes, so a
    re-evaluation queues nothing: such steps count as idle and the search stops and says so, instead of looping
    on steps that queue nothing."""
    from archsearch.train import SETTING_SPACES, SettingSpace

    monkeypatch.setitem(SETTING_SPACES, "ci", SettingSpace(lrs=(0.3,), init_scales=(1.0,), max_grad_norms=(5.0,),
                                                           layers=(1,), largest_budget=True))
    cfg = config(name="one", p_reevaluate=1.0, settings_per_task=1, init_settings_per_task=1,
                 reference_settings_per_task=1)
    url = f"sqlite:///{tmp_path}/one.db"
    with caplog.at_level("WARNING", logger="archsearch.search._driver"):
        progress = SearchDriver(open_storage(url), cfg, CannedExecutor(), max_evaluations=500).run()
    record = open_storage(url, read_only=True).get_search("one")
    assert progress.done < 500 and record.status == "stopped" and "reevaluations" not in record.counters
    assert any("proposed nothing new" in r.getMessage() for r in caplog.records)


class ProposesOneChild(SearchDriver):
    """Proposes the same real GRU child (the mutation engine with a fixed generator) whenever it is not being
    evaluated; other steps are the usual ones."""

    child = mutate(archsearch.seed("gru"), np.random.default_rng(3))[0]

    def _step(self):
        known = self.storage.find_architecture(self.search.id, structural_hash=self.child.structural_hash())
        if known is not None and Stage.parse(known.stage).kind in (StageKind.FILTER, StageKind.TASK):
            return super()._step()
        gru = self.storage.find_architecture(self.search.id, name="gru")
        return self._mutate_step(gru, np.random.default_rng(3), self.state["step"])


def _child_scores(filter_score: float, task_score: float) -> Score:
    """The seeds as `quality`; the one child scores ``filter_score`` on memorization, ``task_score`` on tasks."""
    def score(job: EvalJob, cell: Cell) -> float:
        if cell.name in ("gru", "lstm"):
            return quality(job, cell)
        return filter_score if job.task == "memorize" else task_score
    return score


@pytest.mark.parametrize("stopped_at", ["filter", "gate"])
def test_a_known_child_stopped_earlier_is_re_examined_with_fresh_settings(tmp_path, stopped_at):
    """§3.1: a child equal to a known cell that the filter (or a gate) stopped is examined again, on settings it
    has not run: the filter again with a new setting, or (after a gate) task 1 again, skipping the filter."""
    child = ProposesOneChild.child
    fails_filter = stopped_at == "filter"
    score = _child_scores(0.1 if fails_filter else 0.99, 0.5)  # the GRU scores ~0.8-1.0: 0.5 fails the gate
    url = f"sqlite:///{tmp_path}/x.db"
    ProposesOneChild(open_storage(url), config(name="x"), CannedExecutor(score), max_evaluations=50).run()
    storage = open_storage(url, read_only=True)
    record = storage.get_search("x")
    arch = storage.find_architecture(record.id, structural_hash=child.structural_hash())
    stage = Stage.parse(arch.stage)
    evals = storage.evaluations(architecture_id=arch.id)
    filters = [e for e in evals if e.task == "memorize"]
    firsts = [e for e in evals if e.task == "arithmetic"]
    assert record.counters["reexamined"] >= 2 and stage.visit >= 3
    if fails_filter:
        assert stage.kind in (StageKind.FILTERED_OUT, StageKind.FILTER) and not firsts
        assert len(filters) == stage.visit and len({e.hparams_hash for e in filters}) == len(filters)
    else:
        assert stage.kind in (StageKind.GATED_OUT, StageKind.TASK) and len(filters) == 1  # the filter ran once
        assert stage.task in (None, "arithmetic") and not [e for e in evals if e.task == "xml"]  # never past task 1
        assert len(firsts) == stage.visit * config().settings_per_task
        assert len({e.hparams_hash for e in firsts}) == len(firsts)  # never the same setting twice


def test_a_search_stops_at_its_time_limit_and_resumes(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    started = time.monotonic()
    first = SearchDriver(open_storage(url), config(name="t"), CannedExecutor(), time_limit=2.0).run()
    assert 2.0 <= time.monotonic() - started < 30 and first.done > 0
    assert open_storage(url, read_only=True).get_search("t").status == "stopped"
    second = SearchDriver(open_storage(url), config(name="t"), CannedExecutor(), max_evaluations=first.done + 10).run()
    assert open_storage(url, read_only=True).get_search("t").status == "finished" and second.done == first.done + 10
