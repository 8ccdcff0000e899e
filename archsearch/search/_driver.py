"""The search driver (paper §3.1-3.3): the only writer of the database.

Every architecture in flight is a small state machine whose state is its
``stage`` column (a :class:`~archsearch.search.Stage`, stored as its string);
all work is ``queued`` evaluations in the database, so a driver killed at any
point resumes by re-queueing what was running.

Randomness is derived from (search seed, step number) or (search seed,
architecture, stage), so a resumed search continues exactly as it would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from archsearch.errors import ArchsearchError, LeaseLostError, SearchConfigError, SearchExistsError
from archsearch.executors import EvalJob, EvalOutcome, Executor, GroupJob
from archsearch.ir import Cell
from archsearch.search._config import TRAIN_CONFIGS, SearchConfig, Strategy
from archsearch.search._settings import choose_settings
from archsearch.search._stage import COMPLETE, INIT, Stage, StageKind
from archsearch.search_spaces import seed as seed_cell
from archsearch.storage import ArchitectureRecord, DriverId, EvalStatus, EvaluationRecord, LeaderboardStorage, SearchStatus
from archsearch.tasks import Metric
from archsearch.train import HyperParams, TrainConfig, setting_space, task_config

log = logging.getLogger(__name__)
_MAX_IDLE_STEPS = 200  # mutation steps in a row that create no work before the driver waits


@dataclass
class Progress:
    """A snapshot for live displays."""

    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    top: list[tuple[str, float]] = field(default_factory=list)
    per_minute: float = 0.0
    elapsed: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    activity: dict[str, Any] = field(default_factory=dict)


def evaluation_seed(structural_hash: str, task: str, hparams_hash: str) -> int:
    """The training seed of an evaluation: the same (cell, task, setting) always trains the same way."""
    return int(hashlib.sha256(f"{structural_hash}|{task}|{hparams_hash}".encode()).hexdigest()[:8], 16) % (2**31)


def job_train_config(config: SearchConfig, task: str, task_obj=None) -> dict[str, Any]:
    """TrainConfig fields for ``task``: the scale's config for it (memorization gets the filter's
    settings, music its schedule), the search's overrides, and the filter's threshold as target."""
    from archsearch.tasks import get_task

    base = task_config(config.scale, task_obj or get_task(task, config.data_dir))
    overrides = dict(config.train_overrides)
    if task == config.filter_task:
        overrides = {**overrides, **config.filter_overrides, "target": config.filter_threshold}
    return {**base.__dict__, **overrides}


def stored_train_config(search_config: Mapping[str, Any], task: str, data_dir: str | None = None,
                        task_obj=None) -> TrainConfig:
    """How ``task`` trains in a stored search: the config recorded when the search started (its scale may have
    been recalibrated since), over today's (for fields added since, and searches stored before configs were).
    ``task_obj``: the task, if the caller has it loaded already."""
    config = SearchConfig.from_dict({**search_config, "data_dir": data_dir or search_config.get("data_dir")})
    stored = search_config.get(TRAIN_CONFIGS, {}).get(task, {})
    return TrainConfig(**{**job_train_config(config, task, task_obj), **stored})


class SearchDriver:
    """Runs (or resumes) one search in ``storage`` with ``executor``."""

    def __init__(
        self,
        storage: LeaderboardStorage,
        config: SearchConfig,
        executor: Executor,
        *,
        max_evaluations: int | None = None,
        time_limit: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_every: float = 2.0,
        take_over: bool = False,
    ):
        self.storage = storage
        self.config = config
        self.executor = executor
        self.max_evaluations = max_evaluations
        self.time_limit = time_limit
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.take_over = take_over  # take the search's lease even from a live driver
        self.driver_id = DriverId.current()
        self.search = None  # the search record once this driver holds its lease
        self._last_beat = time.monotonic()
        self._tasks = {}  # name -> Task (loaded lazily)
        self._queue: deque[int] = deque()
        self._evals: dict[int, EvaluationRecord] = {}  # queued/running evaluations we know of
        self._submitted: set[int] = set()
        self._counts: Counter[str] = Counter()
        self._seed_fps: dict[str, str] | None = None  # seed name -> functional fingerprint
        self._started = time.monotonic()
        self._session_finished = 0

    # ================================================================== setup
    def _open(self) -> None:
        cfg = self.config
        record = self.storage.get_search(cfg.name)
        if record is None:
            try:
                stored = {**cfg.to_dict(), TRAIN_CONFIGS: self._train_configs()}
                record = self.storage.create_search(cfg.name, stored, cfg.seed, driver=self.driver_id)
                log.info("started search %r", cfg.name)
            except SearchExistsError:  # another driver created it a moment ago: resume it, if its lease allows
                record = self.storage.get_search(cfg.name)
        if record.lease is None or record.lease.holder != self.driver_id:
            cfg.check_compatible(record.config)
            self._check_train_configs(record.config.get(TRAIN_CONFIGS))
            self.storage.acquire_lease(record.id, self.driver_id, timeout_s=cfg.lease_timeout, take_over=self.take_over)
            requeued = self.storage.requeue_running(record.id)
            log.info("resuming search %r (%d evaluations re-queued)", cfg.name, requeued)
        self._last_beat = time.monotonic()
        self.search = self.storage.update_search(record.id, status=SearchStatus.RUNNING)
        self.state: dict[str, Any] = {k: v for k, v in (self.search.state or {}).items() if k != "counters"}
        self.state.setdefault("step", 0)
        self._counts.update(self.search.counters)
        for ev in self.storage.evaluations(search_id=self.search.id):
            if ev.status == EvalStatus.QUEUED:
                self._queue.append(ev.id)
                self._evals[ev.id] = ev
            self._counts[f"evals_{ev.status}"] += 1
        self._frozen = self.storage.frozen_normalizers(self.search.id) is not None
        self._ensure_seeds()

    def _train_configs(self) -> dict[str, dict[str, Any]]:
        """How each task of the search trains, its scale resolved (what the scale's name stands for today)."""
        names = (self.config.filter_task, *self.config.tasks)
        return {name: json.loads(json.dumps(TrainConfig(**job_train_config(self.config, name, self.task(name)))
                                            .read_by(self.task(name)))) for name in names}

    def _check_train_configs(self, stored: dict[str, dict[str, Any]] | None) -> None:
        """Refuse to resume a search whose scale has changed since it started (a code update that recalibrated
        it): its new evaluations would not be comparable with the stored ones. Searches stored before the
        resolved configs were recorded (``stored`` None) resume unchecked, and so does a field added to
        TrainConfig since (its default keeps the old behaviour)."""
        if stored is None:
            return
        now = self._train_configs()
        diffs = [f"{task}.{k}: stored {v!r}, now {now[task][k]!r}" for task, config in stored.items()
                 for k, v in config.items() if k in now.get(task, {}) and now[task][k] != v]
        if diffs:
            raise SearchConfigError(
                f"search {self.config.name!r} trained with scale {self.config.scale!r} as it was defined when the "
                f"search started, and that scale has changed since ({'; '.join(diffs)}); new evaluations would not "
                "be comparable with the stored ones: resume it with the archsearch version that started it, or "
                "start a new search"
            )

    def _save_state(self) -> None:
        self.storage.update_search(self.search.id, state=self.state)

    def _counted(self, count: Mapping[str, int] | None) -> None:
        """Mirror counters the storage has just added (with the rows they count) in memory."""
        self._counts.update(count or {})

    def _add_counts(self, count: Mapping[str, int]) -> None:
        """Count events that change no row (a failed mutation, a duplicate child)."""
        self.storage.add_counts(self.search.id, count)
        self._counted(count)

    def _heartbeat(self) -> None:
        """Renew the lease every ``heartbeat_every`` seconds (LeaseLostError if another driver took it)."""
        if time.monotonic() - self._last_beat >= self.config.heartbeat_every:
            self.storage.renew_lease(self.search.id, self.driver_id)
            self._last_beat = time.monotonic()

    def task(self, name: str):
        if name not in self._tasks:
            from archsearch.tasks import get_task

            self._tasks[name] = get_task(name, self.config.data_dir)
        return self._tasks[name]

    def _ensure_seeds(self) -> None:
        """Add the seeds, the reference first: its settings are queued (and run) before the others'."""
        reference = self.config.reference
        for name in (reference, *(s for s in self.config.seeds if s != reference)):
            cell = seed_cell(name)
            arch = self.storage.find_architecture(self.search.id, name=name)
            if arch is None:
                arch, _ = self.storage.add_architecture(
                    self.search.id, name=name, graph_json=cell.to_json(), structural_hash=cell.structural_hash(),
                    fingerprint=self._seed_fingerprints()[name], parent_id=None, mutation=None, origin="seed",
                    stage=str(INIT),
                )
            if Stage.parse(arch.stage) == INIT:
                self._enter(arch, INIT)

    def _seed_fingerprints(self) -> dict[str, str]:
        """Each seed's functional fingerprint, computed once per driver (searches stored before seeds had one
        still match a child that computes what a seed computes)."""
        if self._seed_fps is None:
            from archsearch.mutation import fingerprint

            names = dict.fromkeys((self.config.reference, *self.config.seeds))
            self._seed_fps = {name: fingerprint(seed_cell(name)) for name in names}
        return self._seed_fps

    def _known(self, structural: str, fp: str) -> ArchitectureRecord | None:
        """The stored architecture a child equals: same structure, same fingerprint, or what a seed computes."""
        found = self.storage.find_architecture(self.search.id, structural_hash=structural)
        if found is None:
            found = self.storage.find_architecture(self.search.id, fingerprint=fp)
        if found is None:
            seed = next((name for name, seed_fp in self._seed_fingerprints().items() if seed_fp == fp), None)
            found = None if seed is None else self.storage.find_architecture(self.search.id, name=seed)
        return found

    # ================================================================== stages
    def _init_settings(self, arch: ArchitectureRecord) -> int:
        cfg = self.config
        if arch.name == cfg.reference and cfg.reference_settings_per_task is not None:
            return cfg.reference_settings_per_task
        return cfg.init_settings_per_task

    def _expected(self, stage: Stage, arch: ArchitectureRecord) -> int:
        """How many evaluations ``stage`` queues for ``arch`` (on all its tasks)."""
        if stage.kind is StageKind.INIT:
            return self._init_settings(arch) * len(self.config.tasks)
        return 1 if stage.kind is StageKind.FILTER else self.config.settings_per_task

    def _stage_tasks(self, stage: Stage) -> tuple[str, ...]:
        if stage.kind is StageKind.INIT:
            return self.config.tasks
        return (self.config.filter_task,) if stage.kind is StageKind.FILTER else (stage.task,)

    def _enter(self, arch: ArchitectureRecord, stage: Stage, count: Mapping[str, int] | None = None) -> None:
        """Move ``arch`` to ``stage`` (counting ``count`` with it) and queue the stage's evaluations (idempotent)."""
        if arch.stage != str(stage):
            self.storage.set_stage(arch.id, str(stage), count)
            self._counted(count)
        tasks = self._stage_tasks(stage)
        per_task = self._init_settings(arch) if stage == INIT else self._expected(stage, arch)
        # §3.3: a child's settings on a search task come from its parent (the filter's one setting is random)
        parent = None
        if stage.kind is StageKind.TASK and arch.parent_id is not None:
            parent = self.storage.get_architecture(arch.parent_id)
        cell = Cell.from_json(arch.graph_json)
        for task in tasks:
            rng = np.random.default_rng([self.config.seed, arch.id, zlib.crc32(f"{stage}|{task}".encode())])
            pools = self._pools(parent, task, own=False) if parent is not None else {}
            self._queue_settings(arch, cell, task, per_task, str(stage), stage.kind.value, rng, pools)

    def _queue_settings(self, arch: ArchitectureRecord, cell: Cell, task: str, count: int, purpose: str, why: str,
                        rng: np.random.Generator, pools: dict[str, Any], events: Mapping[str, int] | None = None) -> bool:
        """Queue ``count`` settings of ``arch`` on ``task`` it has not run (§3.3 sources from ``pools``), each
        counted as ``source:<why>:<source>``; ``events`` are counted with the first one queued. Returns
        whether any setting was queued (then ``events`` were counted)."""
        mine = self.storage.evaluations(architecture_id=arch.id, task=task)
        taken = {HyperParams.from_dict(e.hparams).key() for e in mine if e.purpose != purpose}
        space = setting_space(self.config.scale)
        budgets = space.budgets(self.task(task).param_budgets)
        fixed = 1 if cell.depth > 1 else None
        pending, queued = dict(events or {}), False
        for hp, source in choose_settings(rng, count, budgets, taken, fixed_layers=fixed,
                                          threshold=self.config.parent_settings_threshold, space=space, **pools):
            counts = {**pending, f"source:{why}:{source}": 1}
            ev = self.storage.add_evaluation(arch.id, task, hp.to_dict(), purpose, counts)
            if ev is not None:
                self._queue.append(ev.id)
                self._evals[ev.id] = ev
                self._counts["evals_queued"] += 1
                self._counted(counts)
                pending, queued = {}, True
        return queued

    def _pools(self, history: ArchitectureRecord, task: str, *, own: bool) -> dict[str, Any]:
        """§3.3 pools for settings on ``task``: ``history``'s settings ranked by result, how many it ran, and the
        best of the LSTM and GRU on ``task``.

        For a child, ``history`` is its parent and its pool is the parent's settings on ``task``. A re-evaluation
        draws the same way with the cell as its own parent (``own``); as a cell never runs a setting twice on a
        task, its pool is then its settings on every task, ranked by normalized result, their parameter budget
        moved to ``task``'s (see :func:`choose_settings`).
        """
        norms = self.storage.normalizers(self.search.id, self.config.reference)

        def ranked(arch_id: int, on_task: str | None) -> list[tuple[float, HyperParams]]:
            done = self.storage.evaluations(architecture_id=arch_id, task=on_task, status=EvalStatus.DONE)
            return [((e.metric or 0.0) / (norms.get(e.task) or 1.0), HyperParams.from_dict(e.hparams))
                    for e in done if e.task in self.config.tasks]

        def best_first(items: list[tuple[float, HyperParams]]) -> list[HyperParams]:
            return [hp for _, hp in sorted(items, key=lambda t: -t[0])]

        total = len(self.storage.evaluations(architecture_id=history.id, status=EvalStatus.DONE))
        reference: list[tuple[float, HyperParams]] = []
        for name in ("lstm", "gru"):
            ref = self.storage.find_architecture(self.search.id, name=name)
            if ref is not None:
                reference += ranked(ref.id, task)
        return {"parent_ranked": best_first(ranked(history.id, None if own else task)), "parent_total": total,
                "reference_best": best_first(reference)}

    def _advance(self, arch: ArchitectureRecord) -> None:
        """Called when ``arch`` has nothing queued or running: decide its next stage."""
        stage = Stage.parse(arch.stage)
        if not stage.in_progress:
            return  # complete or stopped: nothing to advance (a re-evaluation just finished)
        mine = [e for e in self.storage.evaluations(architecture_id=arch.id) if e.purpose == arch.stage]
        if len(mine) < self._expected(stage, arch):
            self._enter(arch, stage)  # a crash interrupted queueing this stage: finish it
            if any(e.architecture_id == arch.id for e in self._evals.values()):
                return
        if stage.kind is StageKind.INIT:
            self.storage.set_stage(arch.id, str(COMPLETE))
        elif stage.kind is StageKind.FILTER:
            self._after_filter(arch, stage, mine)
        else:
            self._after_task(arch, stage)

    def _after_filter(self, arch: ArchitectureRecord, stage: Stage, mine: list[EvaluationRecord]) -> None:
        metric = Metric(self.task(self.config.filter_task).metric)
        if any(e.status == EvalStatus.DONE and not e.diverged and e.valid is not None
               and metric.reached(e.valid, self.config.filter_threshold) for e in mine):
            self._enter(arch, Stage.on_task(self.config.tasks[0], stage.visit), {"passed_filter": 1})
        else:
            self._set_stage(arch, Stage(StageKind.FILTERED_OUT, visit=stage.visit), {"filtered_out": 1})

    def _after_task(self, arch: ArchitectureRecord, stage: Stage) -> None:
        """§3.1: the 90% gate follows every task, the last included."""
        task = stage.task
        best = self.storage.best_scores(arch.id).get(task, 0.0)
        reference = self.storage.normalizers(self.search.id, self.config.reference).get(task)
        index = self.config.tasks.index(task)
        if not (reference and best > self.config.gate * reference):
            self._set_stage(arch, Stage(StageKind.GATED_OUT, task, stage.visit), {f"gated_out:{task}": 1})
        elif index + 1 == len(self.config.tasks):
            self._set_stage(arch, COMPLETE, {"completed": 1})
        else:
            self._enter(arch, Stage.on_task(self.config.tasks[index + 1], stage.visit))

    def _set_stage(self, arch: ArchitectureRecord, stage: Stage, count: Mapping[str, int]) -> None:
        self.storage.set_stage(arch.id, str(stage), count)
        self._counted(count)

    # ================================================================== steps
    def _seeds_ready(self) -> bool:
        """True once every seed is complete; the first time, the reference's best scores become the fixed
        normalizers of the search (every later gate and fitness divides by them)."""
        if self._frozen:
            return True
        archs = [self.storage.find_architecture(self.search.id, name=n) for n in self.config.seeds]
        if not all(a is not None and a.stage == str(COMPLETE) for a in archs):
            return False
        live = self.storage.normalizers(self.search.id, self.config.reference)
        if not all(live.get(t, 0.0) > 0 for t in self.config.tasks):
            raise SearchConfigError(
                f"the reference cell {self.config.reference!r} has no positive result on every task, so no fitness "
                "can be computed; give it more settings (reference_settings_per_task) or a larger scale"
            )
        self.storage.freeze_normalizers(self.search.id, {t: live[t] for t in self.config.tasks})
        self._frozen = True
        log.info("initialization done: normalizers fixed at %s", live)
        return True

    def _select(self, rng: np.random.Generator) -> ArchitectureRecord:
        """§3.1: the architecture a step re-evaluates or mutates, uniformly from the top list."""
        top = self.storage.top_k(self.search.id, self.config.top_size, list(self.config.tasks), self.config.reference)
        return top[int(rng.integers(len(top)))][0]

    def _step(self) -> bool:
        """One step of §3.1: re-evaluate or mutate. Returns True if it queued work."""
        step = self.state["step"]
        self.state["step"] = step + 1
        self._save_state()  # before acting: a crash mid-step is repaired by _advance, never replayed twice
        rng = np.random.default_rng([self.config.seed, 7, step])
        if self.config.strategy is Strategy.RANDOM:
            return self._random_step(rng, step)
        arch = self._select(rng)
        if rng.random() < self.config.p_reevaluate:
            return self._fresh_settings(arch, f"reeval#{step}", "reeval", rng, {"reevaluations": 1})
        return self._mutate_step(arch, rng, step)

    def _random_step(self, rng: np.random.Generator, step: int) -> bool:
        """Random search (the control of issue 12): a chain of 1..random_chain_max mutations of a seed drawn
        uniformly; nothing is read from the top list and nothing is re-evaluated or re-examined (a proposal
        equal to a known architecture is counted as a duplicate)."""
        name = self.config.seeds[int(rng.integers(len(self.config.seeds)))]
        seed = self.storage.find_architecture(self.search.id, name=name)
        links = int(rng.integers(1, self.config.random_chain_max + 1))
        return self._mutate_step(seed, rng, step, links=links, reexamine=False)

    def _mutate_step(self, parent: ArchitectureRecord, rng: np.random.Generator, step: int, links: int = 1,
                     reexamine: bool = True) -> bool:
        """Propose a child of ``parent`` (``links`` mutations in a chain) and send it to the filter; if it equals
        a known architecture, re-examine that one (``reexamine``) or count a duplicate."""
        from archsearch.mutation import MutationError, chain_record, fingerprint, mutate

        child, chain = Cell.from_json(parent.graph_json), []
        for _ in range(links):
            try:
                child, record = mutate(child, rng)
            except MutationError as e:
                self._add_counts({"proposed": 1, "mutation_failures": 1})
                log.warning("mutation of %s failed: %s", child.name, e)
                return False
            if record.rejection_reasons:  # children rejected before any training
                self._add_counts({f"rejected:{reason}": n for reason, n in record.rejection_reasons.items()})
            chain.append(record)
        record = chain_record(chain)
        structural, fp = child.structural_hash(), fingerprint(child)
        existing = self._known(structural, fp)
        if existing is not None and reexamine:
            return self._reexamine(existing, step, rng)
        if existing is not None:
            self._add_counts({"proposed": 1, "duplicates": 1})
            return False
        mutation = {**record.to_dict(), "step": step, "parent": parent.name, "chain": links}
        arch, created = self.storage.add_architecture(
            self.search.id, name=child.name, graph_json=child.to_json(), structural_hash=structural,
            fingerprint=fp, parent_id=parent.id, mutation=mutation, origin="mutant", stage=str(Stage.filter(1)),
            count={"proposed": 1},
        )
        if created:
            self._counted({"proposed": 1})
        self._enter(arch, Stage.filter(1))
        return True

    def _reexamine(self, arch: ArchitectureRecord, step: int, rng: np.random.Generator) -> bool:
        """A child equal to a known architecture (§3.1): a stopped one is re-examined, a complete one outside
        the top list gets fresh settings on every task, one on the list (or still in flight) is a duplicate."""
        stage = Stage.parse(arch.stage)
        events = {"proposed": 1, "reexamined": 1}
        if stage.kind is StageKind.FILTERED_OUT:
            self._enter(arch, Stage.filter(stage.visit + 1), events)
            return True
        if stage.kind is StageKind.GATED_OUT:  # all its settings are kept: skip the filter, fresh settings only
            self._enter(arch, Stage.on_task(self.config.tasks[0], stage.visit + 1), events)
            return True
        if stage == COMPLETE and not self._in_top(arch.id):
            return self._fresh_settings(arch, f"reexamine#{step}", "reexamine", rng,
                                        {"proposed": 1, "reexamined_complete": 1})
        self._add_counts({"proposed": 1, "duplicates": 1})
        return False

    def _in_top(self, arch_id: int) -> bool:
        top = self.storage.top_k(self.search.id, self.config.top_size, list(self.config.tasks), self.config.reference)
        return any(a.id == arch_id for a, _, _ in top)

    def _fresh_settings(self, arch: ArchitectureRecord, purpose: str, why: str, rng: np.random.Generator,
                        events: Mapping[str, int]) -> bool:
        """``settings_per_task`` settings the cell has not run on every search task, drawn by §3.3 with the
        cell as its own parent (re-evaluations and re-examinations); ``events`` counted with the first one.
        Returns whether anything was queued (a cell that has run every setting of the space gets none)."""
        cell = Cell.from_json(arch.graph_json)
        queued = False
        for task in self.config.tasks:
            pools = self._pools(arch, task, own=True)
            if self._queue_settings(arch, cell, task, self.config.settings_per_task, purpose, why, rng, pools,
                                    events):
                events, queued = {}, True
        return queued

    # ================================================================== running
    def _job(self, ev: EvaluationRecord) -> EvalJob:
        arch = self.storage.get_architecture(ev.architecture_id)
        seed = evaluation_seed(arch.structural_hash, ev.task, ev.hparams_hash)
        return EvalJob(ev.id, arch.graph_json, ev.task, ev.hparams, job_train_config(self.config, ev.task, self.task(ev.task)), seed,
                       self.config.device, self.config.data_dir, self.config.compile_cache_size)

    def _budget_left(self, extra: int = 0) -> bool:
        if self.max_evaluations is None:
            return True
        started = self._counts["evals_done"] + self._counts["evals_failed"] + len(self._submitted) + extra
        return started < self.max_evaluations

    def _batch_with(self, first: EvaluationRecord) -> list[EvaluationRecord]:
        """``first`` plus queued settings that can train with it as one batched model (same cell, task,
        layers and budget, hence the same units), up to ``batch_settings`` and the evaluation budget."""
        group = [first]
        if self.config.batch_settings <= 1 or not self.executor.supports_groups:
            return group
        key = (first.architecture_id, first.task, first.hparams["layers"], first.hparams["params"])
        for eval_id in list(self._queue):
            if len(group) >= self.config.batch_settings or not self._budget_left(len(group)):
                break
            ev = self._evals[eval_id]
            if (ev.architecture_id, ev.task, ev.hparams["layers"], ev.hparams["params"]) == key:
                self._queue.remove(eval_id)
                group.append(ev)
        return group

    def _out_of_time(self) -> bool:
        return self.time_limit is not None and time.monotonic() - self._started >= self.time_limit

    def _fill(self) -> None:
        idle = 0
        while self.executor.in_flight() < self.executor.slots and self._budget_left() and not self._out_of_time():
            self._heartbeat()
            if self._queue:
                group = self._batch_with(self._evals[self._queue.popleft()])
                for ev in group:
                    self.storage.mark_running(ev.id, "driver")
                    self._submitted.add(ev.id)
                    self._counts["evals_queued"] -= 1
                jobs = tuple(self._job(ev) for ev in group)
                self.executor.submit(jobs[0] if len(jobs) == 1 else GroupJob(jobs))
                continue
            if not self._seeds_ready() or idle >= _MAX_IDLE_STEPS:
                return
            idle = 0 if self._step() else idle + 1

    def _score(self, task: str, result: dict[str, Any]) -> float:
        """What the search ranks and divides: the task's :class:`Metric` score of the best validation value
        (positive, higher is better whatever the metric's direction; 0 if the run diverged)."""
        return 0.0 if result.get("diverged") else Metric(self.task(task).metric).score(result.get("valid"))

    def _record(self, outcome: EvalOutcome) -> None:
        ev = self._evals.pop(outcome.evaluation_id, None)
        if ev is None:  # an executor handed the same outcome back twice: the first one counts
            log.warning("ignoring a second outcome for evaluation %d", outcome.evaluation_id)
            return
        self._submitted.discard(outcome.evaluation_id)
        if outcome.ok:
            score = self._score(ev.task, outcome.result)
            self.storage.record_result(ev.id, {**outcome.result, "metric": score, "worker": outcome.worker,
                                               "attempts": outcome.attempts})
            self._counts["evals_done"] += 1
        else:
            log.warning("evaluation %d (%s) failed on %s: %s", ev.id, ev.task, outcome.worker, outcome.error)
            self.storage.record_failure(ev.id, f"{outcome.worker}: {outcome.error}")
            self._counts["evals_failed"] += 1
        self._session_finished += 1
        if not any(e.architecture_id == ev.architecture_id for e in self._evals.values()):
            self._advance(self.storage.get_architecture(ev.architecture_id))

    def _repair(self) -> None:
        """After a restart: advance architectures whose stage has nothing left to run."""
        busy = {e.architecture_id for e in self._evals.values()}
        for arch in self.storage.list_architectures(self.search.id):
            if arch.id not in busy and Stage.parse(arch.stage).in_progress:
                self._advance(arch)

    def progress(self) -> Progress:
        stages = Counter(Stage.parse(a.stage).label for a in self.storage.list_architectures(self.search.id))
        top = self.storage.top_k(self.search.id, 5, list(self.config.tasks), self.config.reference)
        elapsed = time.monotonic() - self._started
        return Progress(
            done=self._counts["evals_done"], failed=self._counts["evals_failed"],
            running=self.executor.in_flight(), queued=len(self._queue), stages=dict(stages),
            top=[(a.name, fit) for a, fit, _ in top], per_minute=60 * self._session_finished / max(elapsed, 1e-9),
            elapsed=elapsed, counters={k: v for k, v in self._counts.items() if not k.startswith("evals_")},
            activity=self.executor.activity(),
        )

    def run(self) -> Progress:
        """Run until ``max_evaluations`` or ``time_limit``; returns the final progress snapshot."""
        for name in (self.config.filter_task, *self.config.tasks):
            self.task(name)  # unknown task or missing data: fail before the database is touched
        last_report = 0.0
        status = SearchStatus.STOPPED
        lost = False
        try:
            self._open()  # takes the lease: from here on this driver is the search's only writer
            self._repair()
            while True:
                self._heartbeat()
                self._fill()
                if self.executor.in_flight() == 0:
                    if not self._budget_left():
                        status = SearchStatus.FINISHED
                        break
                    if self._out_of_time():
                        break
                    if not self._queue:
                        log.warning("stopping with evaluations left: %d steps in a row proposed nothing new "
                                    "(duplicate children, failed mutations, or re-evaluations of cells that have run "
                                    "every setting; counters %s)", _MAX_IDLE_STEPS,
                                    {k: self._counts[k] for k in ("duplicates", "mutation_failures")})
                        break
                for outcome in self.executor.poll(timeout=0.5):
                    self._record(outcome)
                if self.on_progress and time.monotonic() - last_report >= self.progress_every:
                    self.on_progress(self.progress())
                    last_report = time.monotonic()
        except LeaseLostError:
            lost = True  # another driver runs the search now: write nothing more
            log.error("search %r was taken over by another driver; stopping without writing", self.config.name)
            raise
        finally:
            if self.search is not None and not lost:
                try:
                    self._save_state()
                    self.storage.update_search(self.search.id, status=status)
                finally:
                    self.storage.release_lease(self.search.id, self.driver_id)
        return self.progress()
