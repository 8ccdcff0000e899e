"""What the report shows, read from the database once and turned into plain records.

Everything here is a query over the stored architectures and evaluations (the
database is opened read-only), so the report can be rebuilt while a search runs.
No plotting and no HTML here.
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import StorageError
from archsearch.storage import (
    COMPLETE_STAGE,
    DEFAULT_REFERENCE,
    ArchitectureRecord,
    EvaluationRecord,
    SearchRecord,
    evaluation_score,
    normalized_fitness,
    open_storage,
)

HPARAM_KEYS = ("lr", "init_scale", "max_grad_norm", "layers")  # the x axes of the hyper-parameter view
_MAX_TIMELINE_POINTS = 400  # fitness is recomputed at most this many times along the run


@dataclass(frozen=True)
class TopRow:
    """One line of the top-N table."""

    rank: int
    arch: ArchitectureRecord
    fitness: float
    scores: dict[str, float]  # best / reference best, per search task
    evaluations: int  # done evaluations of this architecture
    parent: str | None


@dataclass
class ReportData:
    """The search (if any) and every record the report needs."""

    url: str
    generated: datetime.datetime
    searches: list[str]
    search: SearchRecord | None = None
    archs: dict[int, ArchitectureRecord] = field(default_factory=dict)
    evals: list[EvaluationRecord] = field(default_factory=list)
    top: list[TopRow] = field(default_factory=list)
    top_list_mutants: int = 0  # mutants on the search's top list (top_size long)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.search.config) if self.search else {}

    @property
    def tasks(self) -> list[str]:
        return list(self.config.get("tasks", []))

    @property
    def reference(self) -> str:
        return str(self.config.get("reference", DEFAULT_REFERENCE))

    @property
    def strategy(self) -> str:
        """``evolution`` or ``random`` (searches made before strategies existed are evolution)."""
        return str(self.config.get("strategy", "evolution"))

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.search.counters) if self.search else {}

    @property
    def mutants(self) -> int:
        return sum(a.origin == "mutant" for a in self.archs.values())

    def by_name(self, name: str) -> ArchitectureRecord | None:
        return next((a for a in self.archs.values() if a.name == name), None)


def load(storage_url: str, search_name: str | None = None, top: int = 10) -> ReportData:
    """Read one search (default: the most recent) read-only.

    Raises:
        StorageError: The database cannot be opened, or has no search called ``search_name``.
    """
    storage = open_storage(storage_url, read_only=True)
    try:
        searches = storage.list_searches()
        data = ReportData(url=str(getattr(storage, "url", storage_url)), generated=_now(),
                          searches=[s.name for s in searches])
        if not searches:
            return data
        data.search = _pick(searches, search_name, storage_url)
        data.archs = {a.id: a for a in storage.list_architectures(data.search.id)}
        data.evals = storage.evaluations(search_id=data.search.id)
        if data.tasks:
            top_size = int(data.config.get("top_size", 100))
            ranked = storage.top_k(data.search.id, max(top, top_size), data.tasks, data.reference)
            data.top_list_mutants = sum(a.origin == "mutant" for a, _, _ in ranked[:top_size])
            data.top = _top_rows(data, ranked[:top])
        return data
    finally:
        storage.close()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _pick(searches: list[SearchRecord], name: str | None, url: str) -> SearchRecord:
    if name is None:
        return max(searches, key=lambda s: (s.created, s.id))
    for s in searches:
        if s.name == name:
            return s
    raise StorageError(f"no search named {name!r} in {url}; searches: {', '.join(s.name for s in searches)}")


def _top_rows(data: ReportData, ranked: list[tuple[ArchitectureRecord, float, dict[str, float]]]) -> list[TopRow]:
    done = Counter(e.architecture_id for e in data.evals if e.status == "done")
    rows = []
    for rank, (arch, fit, scores) in enumerate(ranked, 1):
        parent = data.archs.get(arch.parent_id) if arch.parent_id is not None else None
        rows.append(TopRow(rank, arch, fit, scores, done[arch.id], parent.name if parent else None))
    return rows


# ---------------------------------------------------------------- per-cell facts
def lineage(data: ReportData, arch: ArchitectureRecord) -> list[ArchitectureRecord]:
    """``arch`` and its ancestors back to a seed, newest first."""
    chain = [arch]
    seen = {arch.id}
    while chain[-1].parent_id is not None and chain[-1].parent_id in data.archs:
        parent = data.archs[chain[-1].parent_id]
        if parent.id in seen:  # a corrupt parent loop: stop rather than spin
            break
        seen.add(parent.id)
        chain.append(parent)
    return chain


def describe_mutation(mutation: dict[str, Any] | None) -> list[str]:
    """The transforms of a stored mutation record, one readable line each."""
    if not mutation:
        return []
    from archsearch.mutation import MutationRecord

    try:
        return MutationRecord.from_dict(mutation).describe().splitlines()
    except (KeyError, TypeError, ValueError) as e:  # a record from another version: show it raw
        return [f"(unreadable mutation record: {e})"]


def best_settings(data: ReportData, arch_id: int) -> dict[str, EvaluationRecord]:
    """The best done evaluation per task (diverged runs score 0)."""
    best: dict[str, EvaluationRecord] = {}
    for ev in data.evals:
        if ev.architecture_id != arch_id or ev.status != "done":
            continue
        old = best.get(ev.task)
        if old is None or evaluation_score(ev.diverged, ev.metric) > evaluation_score(old.diverged, old.metric):
            best[ev.task] = ev
    return best


# ---------------------------------------------------------------- fitness over time
@dataclass
class Timeline:
    """Fitness recomputed along the run, after each (sampled) finished evaluation."""

    evaluations: list[int] = field(default_factory=list)  # finished evaluations so far
    minutes: list[float] = field(default_factory=list)  # since the search was created
    best: list[float | None] = field(default_factory=list)
    top10: list[float | None] = field(default_factory=list)  # mean fitness of the ten fittest
    per_task: dict[str, list[float | None]] = field(default_factory=dict)  # best normalized score per task
    # every architecture on the list: when it got its last task score, and its fitness now
    arrivals: list[tuple[str, int, float, float]] = field(default_factory=list)  # (name, evals, minutes, fitness)


def timeline(data: ReportData) -> Timeline:
    """Replay the finished evaluations in order and recompute fitness after each.

    Normalizers are the search's frozen ones (the reference's best when initialization ended), as on the
    leaderboard; before a search has frozen them, the reference's best scores so far. An architecture counts
    once it is (now) complete and has a score on every task.
    """
    tl = Timeline(per_task={t: [] for t in data.tasks})
    if not data.search or not data.tasks:
        return tl
    finished = sorted((e for e in data.evals if e.finished is not None and e.status in ("done", "failed")),
                      key=lambda e: (e.finished, e.id))
    reference = data.by_name(data.reference)
    complete = {a.id for a in data.archs.values() if a.stage == COMPLETE_STAGE}
    best: dict[int, dict[str, float]] = {}
    arrived: set[int] = set()
    stride = max(1, math.ceil(len(finished) / _MAX_TIMELINE_POINTS))
    for i, ev in enumerate(finished, 1):
        if ev.status == "done" and ev.task in tl.per_task:
            scores = best.setdefault(ev.architecture_id, {})
            score = evaluation_score(ev.diverged, ev.metric)
            scores[ev.task] = max(score, scores.get(ev.task, score))
            if ev.architecture_id in complete and len(scores) == len(data.tasks) and ev.architecture_id not in arrived:
                arrived.add(ev.architecture_id)
                tl.arrivals.append((data.archs[ev.architecture_id].name, i, _minutes(data, ev), math.nan))
        if i % stride and i != len(finished):
            continue
        _sample(data, tl, best, complete, _normalizers(data, best, reference), i, _minutes(data, ev))
    _fill_arrival_fitness(data, tl, best, reference)
    return tl


def _minutes(data: ReportData, ev: EvaluationRecord) -> float:
    assert data.search is not None and ev.finished is not None
    return max(0.0, (ev.finished - data.search.created).total_seconds() / 60)


def _normalizers(data: ReportData, best: dict[int, dict[str, float]],
                 reference: ArchitectureRecord | None) -> dict[str, float]:
    """The search's frozen normalizers, or (before it froze them) the reference's best scores in ``best``."""
    assert data.search is not None
    if data.search.normalizers is not None:
        return data.search.normalizers
    return best.get(reference.id, {}) if reference else {}


def _fill_arrival_fitness(data: ReportData, tl: Timeline, best: dict, reference: ArchitectureRecord | None) -> None:
    """Give each arrival its fitness under the final normalizers (drop those without one)."""
    norms = _normalizers(data, best, reference)
    if not all(norms.get(t, 0.0) > 0 for t in data.tasks):
        tl.arrivals = []
        return
    ids = {a.name: a.id for a in data.archs.values()}
    tl.arrivals = [(n, i, m, normalized_fitness(best[ids[n]], data.tasks, norms)[0] or 0.0)
                   for n, i, m, _ in tl.arrivals]


def _sample(data: ReportData, tl: Timeline, best: dict[int, dict[str, float]], complete: set[int],
            norms: dict[str, float], index: int, minutes: float) -> None:
    tl.evaluations.append(index)
    tl.minutes.append(round(minutes, 3))
    if not all(norms.get(t, 0.0) > 0 for t in data.tasks):
        tl.best.append(None)
        tl.top10.append(None)
        for t in data.tasks:
            tl.per_task[t].append(None)
        return
    fits = sorted((normalized_fitness(s, data.tasks, norms)[0] for a, s in best.items()
                   if a in complete and all(t in s for t in data.tasks)), reverse=True)
    tl.best.append(fits[0] if fits else None)
    tl.top10.append(sum(fits[:10]) / len(fits[:10]) if fits else None)
    for t in data.tasks:
        tl.per_task[t].append(max((s[t] / norms[t] for s in best.values() if t in s), default=None))


# ---------------------------------------------------------------- funnel
@dataclass(frozen=True)
class FunnelRow:
    label: str
    count: int
    note: str = ""
    level: int = 0  # indentation: 1 for what was taken away at this step


def funnel(data: ReportData) -> list[FunnelRow]:
    """Candidates proposed → duplicates skipped → filtered out → stopped at each gate → top list.

    Counts of events come from the driver's counters (a re-examined architecture
    passes the filter or a gate again and is counted again); the last rows are
    current stages of the architectures.
    """
    from archsearch.search import Stage

    c = Counter(data.counters)
    new = c["proposed"] - c["mutation_failures"] - c["duplicates"] - c["reexamined"] - c["reexamined_complete"]
    in_flight = sum(Stage.parse(a.stage).in_progress for a in data.archs.values() if a.origin == "mutant")
    rows = [
        FunnelRow("candidates proposed (mutation steps)", c["proposed"]),
        FunnelRow("mutation failed (no valid child)", c["mutation_failures"], level=1),
        FunnelRow("duplicates skipped (evolution: on the list or in flight; random search: any known cell)",
                  c["duplicates"], level=1),
        FunnelRow("known but stopped earlier: re-examined", c["reexamined"], level=1),
        FunnelRow("known, complete, off the list: fresh settings", c["reexamined_complete"], level=1),
        FunnelRow("new children", new, f"{data.mutants} mutants stored"),
        FunnelRow(f"filtered out ({data.config.get('filter_task', 'memorize')})", c["filtered_out"], level=1),
        FunnelRow("passed the filter", c["passed_filter"]),
    ]
    for task in data.tasks:  # the gate follows every task, the last included
        rows.append(FunnelRow(f"stopped at the {task} gate", c[f"gated_out:{task}"], level=1))
    rows += [
        FunnelRow("completed every task", c["completed"]),
        FunnelRow("still in the pipeline now", in_flight, "filter or task stages", level=1),
        FunnelRow(f"on the top-{data.config.get('top_size', 100)} list now", data.top_list_mutants, "mutants"),
    ]
    return rows


# ---------------------------------------------------------------- hyper-parameters
@dataclass(frozen=True)
class HParamPoint:
    cell: str
    rank: int
    task: str
    hparams: dict[str, Any]
    score: float
    diverged: bool


def hparam_points(data: ReportData) -> list[HParamPoint]:
    """Every done evaluation of the top cells on the search tasks."""
    ranks = {row.arch.id: row.rank for row in data.top}
    points = []
    for ev in data.evals:
        if ev.status == "done" and ev.architecture_id in ranks and ev.task in data.tasks:
            points.append(HParamPoint(data.archs[ev.architecture_id].name, ranks[ev.architecture_id], ev.task,
                                      dict(ev.hparams), evaluation_score(ev.diverged, ev.metric), ev.diverged))
    return points


# ---------------------------------------------------------------- run facts
@dataclass
class RunFacts:
    status_counts: dict[str, int]
    workers: dict[str, int]  # worker -> finished evaluations
    per_minute: float | None
    span_minutes: float | None
    failures: list[tuple[EvaluationRecord, str]]  # (evaluation, architecture name)
    purposes: dict[str, int]
    stages: dict[str, int]


def run_facts(data: ReportData) -> RunFacts:
    """Totals, workers, throughput and failures of the search."""
    status = Counter(e.status for e in data.evals)
    workers = Counter(e.worker or "?" for e in data.evals if e.status in ("done", "failed"))
    finished = [e.finished for e in data.evals if e.finished is not None]
    span = per_minute = None
    if finished and data.search:
        span = (max(finished) - data.search.created).total_seconds() / 60
        per_minute = len(finished) / span if span > 0 else None
    failures = [(e, data.archs[e.architecture_id].name) for e in data.evals if e.status == "failed"]
    from archsearch.search import Stage

    purposes = Counter(e.purpose.partition("#")[0] for e in data.evals)  # init, filter, task:<name>, reeval, ...
    stages = Counter(Stage.parse(a.stage).label for a in data.archs.values())
    return RunFacts(dict(status), dict(workers), per_minute, span, failures, dict(purposes), dict(stages))
