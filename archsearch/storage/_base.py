"""The leaderboard storage interface and the queries derived from it.

Rules every backend follows:

* Methods return frozen records (:mod:`archsearch.storage._records`), never ORM objects.
* Each method is one transaction: it either happens completely or not at all.
* Only the search driver writes. Readers (the CLI, a notebook) open the same database
  read-only and may read while the driver writes.
* Natural keys are unique: an architecture's structural hash within its search, and
  (architecture, task, hyper-parameter hash) for evaluations, so a setting can never be
  recorded twice.
* The top-100 list, fitness and GRU normalizers are computed from evaluations here
  (queries), never stored as a second source of truth.
* Every failure of the database is raised as :class:`~archsearch.errors.StorageError`.
* What storage accepts is checked once, here (:mod:`archsearch.storage._checks`): the public
  writing methods check their input, then call a back-end's protected hooks.
* One driver per search: a driver holds the search's lease (:mod:`archsearch.storage._lease`)
  and, while it holds it, every write checks in its own transaction that it still does.
* The driver's event counters change only in the same transaction as the rows they
  count (the ``count`` arguments), so a crash can never leave them behind the rows.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

from archsearch.errors import StorageError
from archsearch.storage._checks import (
    NewArchitecture,
    TrainerResult,
    as_counts,
    as_integer,
    as_normalizers,
    check_choice,
    check_driver,
    check_length,
)
from archsearch.storage._lease import LEASE_TIMEOUT_S, DriverId, Lease
from archsearch.storage._records import (
    COMPLETE_STAGE,
    EVALUATION_STATUSES,
    MAX_ERROR_LENGTH,
    MAX_HASH_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PURPOSE_LENGTH,
    MAX_STAGE_LENGTH,
    MAX_TASK_LENGTH,
    MAX_WORKER_LENGTH,
    ORIGINS,
    SEARCH_STATUSES,
    ArchitectureRecord,
    EvalStatus,
    EvaluationRecord,
    SearchRecord,
    SearchStatus,
    hparams_hash,
    to_json,
)

_logger = logging.getLogger(__name__)

DEFAULT_REFERENCE = "gru"  # the seed whose best scores normalize fitness (paper §3)


def evaluation_score(diverged: bool, metric: float | None) -> float:
    """The score a finished evaluation contributes: its metric, or 0 if it diverged or has none."""
    if diverged or metric is None or not math.isfinite(metric):
        return 0.0
    return float(metric)


def normalized_fitness(
    scores: dict[str, float], tasks: Sequence[str], normalizers: dict[str, float]
) -> tuple[float | None, dict[str, float]]:
    """Fitness = min over ``tasks`` of best score / normalizer (Jozefowicz et al. 2015, §3).

    Args:
        scores: The architecture's best score per task.
        tasks: The tasks that count for fitness.
        normalizers: The reference architecture's best score per task.

    Returns:
        ``(fitness, normalized)``: ``normalized`` maps each task with a score to
        score / normalizer; ``fitness`` is None if some task has no score yet.

    Raises:
        StorageError: A task has no normalizer, or a normalizer is not positive.
    """
    if not tasks:
        raise StorageError("fitness needs at least one task")
    normalized: dict[str, float] = {}
    for task in tasks:
        norm = normalizers.get(task)
        if norm is None or norm <= 0:
            raise StorageError(
                f"no usable normalizer for task {task!r} (got {norm!r}); "
                "the reference architecture must have a positive best score on every task"
            )
        if task in scores:
            normalized[task] = scores[task] / norm
    if len(normalized) < len(tasks):
        return None, normalized
    return min(normalized.values()), normalized


def _best_by_task(evaluations: Iterable[EvaluationRecord]) -> dict[int, dict[str, float]]:
    best: dict[int, dict[str, float]] = {}
    for ev in evaluations:
        if ev.status != "done":
            continue
        per_task = best.setdefault(ev.architecture_id, {})
        score = evaluation_score(ev.diverged, ev.metric)
        per_task[ev.task] = max(score, per_task.get(ev.task, score))
    return best


class LeaderboardStorage(abc.ABC):
    """Where a search keeps its architectures, evaluations and resumable state.

    An instance may be shared by threads (each call opens its own session) and pickled
    (the connection is rebuilt on unpickling). Use :func:`archsearch.storage.open_storage`
    to get one.

    Every public method that writes is defined here once: it refuses writes to a read-only
    storage, checks what storage accepts (lengths, choices, JSON, result keys and numbers)
    and then calls a protected hook (``_insert_architecture``, ...) with checked, typed
    values. A back-end implements the hooks and the reads; it keeps only the checks that
    need its data (a row exists, a name is free, the lease is still held).
    """

    @property
    def url(self) -> str:
        """Where the data lives, as error messages show it."""
        return type(self).__name__

    @property
    def read_only(self) -> bool:
        """Whether writing methods are refused."""
        return False

    def _check_writable(self) -> None:
        if self.read_only:
            raise StorageError(f"{self.url} was opened read-only; only the search driver writes")

    # ---------------------------------------------------------------- searches

    def create_search(
        self, name: str, config: dict[str, Any], seed: int, *, driver: DriverId | None = None
    ) -> SearchRecord:
        """Create a search in status ``'running'``.

        Args:
            name: Unique name of the search.
            config: The resolved search configuration (JSON-able).
            seed: The search's RNG seed.
            driver: If given, the new search starts with its lease held by ``driver``
                (and this storage's writes are fenced by it, as after :meth:`acquire_lease`).

        Raises:
            SearchExistsError: A search with this name exists (perhaps created a moment ago).
            StorageError: A value is invalid, or the database fails.
        """
        self._check_writable()
        check_length(name, MAX_NAME_LENGTH, "search name")
        if driver is not None:
            check_driver(driver)
        return self._insert_search(name, to_json(config, "search config"), as_integer(seed, "seed"), driver)

    @abc.abstractmethod
    def _insert_search(self, name: str, config_json: str, seed: int, driver: DriverId | None) -> SearchRecord:
        """Hook of :meth:`create_search` (checked values); raises SearchExistsError for a taken name."""

    @abc.abstractmethod
    def get_search(self, name: str) -> SearchRecord | None:
        """The search called ``name``, or None.

        Raises:
            StorageError: The database fails.
        """

    @abc.abstractmethod
    def list_searches(self) -> list[SearchRecord]:
        """All searches, oldest first.

        Raises:
            StorageError: The database fails.
        """

    def update_search(
        self, search_id: int, *, status: str | None = None, state: dict[str, Any] | None = None
    ) -> SearchRecord:
        """Change a search's status and/or replace its resumable state.

        Args:
            search_id: The search.
            status: ``'running'``, ``'finished'`` or ``'stopped'``; the two last ones
                set ``finished`` to now, ``'running'`` clears it.
            state: The driver's full resumable state (replaces the stored one).

        Raises:
            StorageError: Unknown search, bad status, or the database fails.
        """
        self._check_writable()
        typed = None if status is None else SearchStatus(check_choice(status, SEARCH_STATUSES, "search status"))
        state_json = None if state is None else to_json(state, "search state")
        return self._update_search(search_id, typed, state_json)

    @abc.abstractmethod
    def _update_search(self, search_id: int, status: SearchStatus | None, state_json: str | None) -> SearchRecord:
        """Hook of :meth:`update_search` (None: leave unchanged)."""

    def freeze_normalizers(self, search_id: int, normalizers: dict[str, float]) -> SearchRecord:
        """Fix the search's normalizers (the reference's best score per task) from now on.

        Every later fitness, gate and leaderboard of the search divides by these numbers, however the
        reference's own results change. Freezing again with the same values is a no-op.

        Raises:
            StorageError: Unknown search, a value that is not a positive finite number, other values
                already frozen, or the database fails.
        """
        self._check_writable()
        return self._freeze_normalizers(search_id, as_normalizers(normalizers))

    @abc.abstractmethod
    def _freeze_normalizers(self, search_id: int, normalizers: dict[str, float]) -> SearchRecord:
        """Hook of :meth:`freeze_normalizers`; refuses other values than those already frozen."""

    @abc.abstractmethod
    def frozen_normalizers(self, search_id: int) -> dict[str, float] | None:
        """The normalizers fixed by :meth:`freeze_normalizers`, or None before that.

        Raises:
            StorageError: Unknown search, or the database fails.
        """

    def add_counts(self, search_id: int, counts: Mapping[str, int]) -> None:
        """Add ``counts`` to the search's event counters (for events that change no row).

        Raises:
            StorageError: Unknown search, a count that is not an integer, the lease was lost,
                or the database fails.
        """
        self._check_writable()
        self._add_counts(search_id, as_counts(counts))

    @abc.abstractmethod
    def _add_counts(self, search_id: int, counts: dict[str, int]) -> None:
        """Hook of :meth:`add_counts`."""

    # ----------------------------------------------------------------- lease

    def acquire_lease(
        self, search_id: int, driver: DriverId, *, timeout_s: float = LEASE_TIMEOUT_S, take_over: bool = False
    ) -> Lease | None:
        """Make ``driver`` the only writer of the search (atomic: of two drivers, one wins).

        A free lease, one already held by ``driver``, or one whose holder is gone
        (:func:`~archsearch.storage._lease.holder_gone`) is taken; ``take_over`` takes
        it from a live holder too. From then on, every write of this storage object
        checks in its transaction that ``driver`` still holds the lease.

        Returns:
            The lease that was taken over from another driver, or None.

        Raises:
            LeaseHeldError: Another live driver holds it (the message names it), or
                another driver took it at the same moment.
            StorageError: Unknown search, or the database fails.
        """
        self._check_writable()
        check_driver(driver)
        return self._acquire_lease(search_id, driver, float(timeout_s), bool(take_over))

    @abc.abstractmethod
    def _acquire_lease(self, search_id: int, driver: DriverId, timeout_s: float, take_over: bool) -> Lease | None:
        """Hook of :meth:`acquire_lease`: one atomic test-and-set, then fence this object's writes."""

    def renew_lease(self, search_id: int, driver: DriverId) -> None:
        """Record a heartbeat of ``driver``, which must still hold the lease.

        Raises:
            LeaseLostError: Another driver holds the lease now (the message names it).
            StorageError: The database fails.
        """
        self._check_writable()
        self._renew_lease(search_id, driver)

    @abc.abstractmethod
    def _renew_lease(self, search_id: int, driver: DriverId) -> None:
        """Hook of :meth:`renew_lease`."""

    def release_lease(self, search_id: int, driver: DriverId) -> bool:
        """Give the lease up if ``driver`` holds it; returns whether it did. Stops fencing writes.

        Raises:
            StorageError: The database fails.
        """
        self._check_writable()
        return self._release_lease(search_id, driver)

    @abc.abstractmethod
    def _release_lease(self, search_id: int, driver: DriverId) -> bool:
        """Hook of :meth:`release_lease`."""

    # ----------------------------------------------------------- architectures

    def add_architecture(
        self,
        search_id: int,
        *,
        name: str,
        graph_json: str,
        structural_hash: str,
        fingerprint: str | None,
        parent_id: int | None,
        mutation: dict[str, Any] | None,
        origin: str,
        stage: str,
        count: Mapping[str, int] | None = None,
    ) -> tuple[ArchitectureRecord, bool]:
        """Add a cell to a search unless one with the same structural hash is there.

        Args:
            search_id: The search.
            name: Unique name within the search (``'gru'``, ``'m42'``).
            graph_json: Canonical JSON of the cell.
            structural_hash: Isomorphism-invariant hash; unique within the search.
            fingerprint: Functional fingerprint, or None if not computed.
            parent_id: The architecture this one was mutated from.
            mutation: The mutation record (transforms applied), JSON-able.
            origin: ``'seed'`` or ``'mutant'``.
            stage: The driver's pipeline stage, e.g. ``'new'``.
            count: Event counters of the search to increase if the cell is added.

        Returns:
            ``(record, created)``; ``created`` is False when an architecture with this
            structural hash already existed, and ``record`` is then that one, unchanged.

        Raises:
            StorageError: Unknown search or parent, the name is taken by another
                graph, a value is invalid, or the database fails.
        """
        self._check_writable()
        check_length(name, MAX_NAME_LENGTH, "architecture name")
        check_length(structural_hash, MAX_HASH_LENGTH, "structural hash")
        check_length(fingerprint, MAX_HASH_LENGTH, "fingerprint")
        check_length(stage, MAX_STAGE_LENGTH, "stage")
        check_choice(origin, ORIGINS, "origin")
        if not isinstance(graph_json, str):
            raise StorageError(f"graph_json must be a JSON string; got {type(graph_json).__name__}")
        new = NewArchitecture(
            search_id=search_id, name=name, graph_json=graph_json, structural_hash=structural_hash,
            fingerprint=fingerprint, parent_id=parent_id, origin=origin, stage=stage,
            mutation_json=None if mutation is None else to_json(mutation, "mutation record"),
        )  # fmt: skip
        return self._insert_architecture(new, as_counts(count))

    @abc.abstractmethod
    def _insert_architecture(self, new: NewArchitecture, count: dict[str, int]) -> tuple[ArchitectureRecord, bool]:
        """Hook of :meth:`add_architecture`: checks the search, the parent and the name, then inserts."""

    def find_architecture(
        self,
        search_id: int,
        *,
        structural_hash: str | None = None,
        fingerprint: str | None = None,
        name: str | None = None,
    ) -> ArchitectureRecord | None:
        """The oldest architecture of the search matching all given keys, or None.

        Raises:
            StorageError: No key given, or the database fails.
        """
        keys = {"structural_hash": structural_hash, "fingerprint": fingerprint, "name": name}
        given = {k: v for k, v in keys.items() if v is not None}
        if not given:
            raise StorageError("find_architecture needs a structural_hash, fingerprint or name")
        return self._find_architecture(search_id, given)

    @abc.abstractmethod
    def _find_architecture(self, search_id: int, keys: dict[str, str]) -> ArchitectureRecord | None:
        """Hook of :meth:`find_architecture`; ``keys`` maps column names to the values they must have."""

    @abc.abstractmethod
    def get_architecture(self, architecture_id: int) -> ArchitectureRecord:
        """The architecture with this id.

        Raises:
            StorageError: Unknown id, or the database fails.
        """

    def set_stage(self, architecture_id: int, stage: str, count: Mapping[str, int] | None = None) -> None:
        """Move an architecture to another pipeline stage (``'complete'`` puts it on the list).

        ``count``: event counters of its search to increase in the same transaction.

        Raises:
            StorageError: Unknown id, stage too long, or the database fails.
        """
        self._check_writable()
        check_length(stage, MAX_STAGE_LENGTH, "stage")
        self._set_stage(architecture_id, stage, as_counts(count))

    @abc.abstractmethod
    def _set_stage(self, architecture_id: int, stage: str, count: dict[str, int]) -> None:
        """Hook of :meth:`set_stage`."""

    @abc.abstractmethod
    def list_architectures(self, search_id: int, stage: str | None = None) -> list[ArchitectureRecord]:
        """The search's architectures (only those in ``stage`` if given), oldest first.

        Raises:
            StorageError: The database fails.
        """

    # ------------------------------------------------------------- evaluations

    def add_evaluation(
        self,
        architecture_id: int,
        task: str,
        hparams: dict[str, Any],
        purpose: str,
        count: Mapping[str, int] | None = None,
    ) -> EvaluationRecord | None:
        """Queue an evaluation of an architecture on a task with one hyper-parameter setting.

        Args:
            architecture_id: The architecture.
            task: The task name.
            hparams: The setting (JSON-able); identified by :func:`hparams_hash`.
            purpose: Why it runs, e.g. ``'filter'``, ``'search'``, ``'reeval'``, ``'init'``.
            count: Event counters of the search to increase if the evaluation is queued.

        Returns:
            The queued record, or None if this (architecture, task, setting) already
            exists in any status: a setting is never evaluated twice.

        Raises:
            StorageError: Unknown architecture, a value is invalid, or the database fails.
        """
        self._check_writable()
        check_length(task, MAX_TASK_LENGTH, "task name")
        check_length(purpose, MAX_PURPOSE_LENGTH, "purpose")
        if not isinstance(hparams, Mapping):
            raise StorageError(f"hyper-parameters must be a mapping; got {type(hparams).__name__}")
        key = hparams_hash(hparams)
        hparams_json = to_json(hparams, "hyper-parameters")
        return self._insert_evaluation(architecture_id, task, hparams_json, key, purpose, as_counts(count))

    @abc.abstractmethod
    def _insert_evaluation(
        self, architecture_id: int, task: str, hparams_json: str, key: str, purpose: str, count: dict[str, int]
    ) -> EvaluationRecord | None:
        """Hook of :meth:`add_evaluation`; ``key`` is the setting's :func:`hparams_hash`. None if it exists."""

    def mark_running(self, evaluation_id: int, worker: str) -> EvaluationRecord:
        """Mark a queued (or re-dispatched running) evaluation as running; counts an attempt.

        Raises:
            StorageError: Unknown id, the evaluation is already done or failed, or
                the database fails.
        """
        self._check_writable()
        check_length(worker, MAX_WORKER_LENGTH, "worker")
        return self._mark_running(evaluation_id, worker)

    @abc.abstractmethod
    def _mark_running(self, evaluation_id: int, worker: str) -> EvaluationRecord:
        """Hook of :meth:`mark_running`; refuses an evaluation that is done or failed."""

    def record_result(self, evaluation_id: int, result: dict[str, Any]) -> EvaluationRecord:
        """Store a trainer's result and mark the evaluation done.

        Args:
            evaluation_id: The evaluation.
            result: The trainer's result record; needs at least ``metric`` (higher is
                better), ``valid``, ``test``, ``epochs``, ``seconds``, ``params`` and
                ``diverged``. Non-finite numbers are stored as None.

        Raises:
            StorageError: Unknown id, missing keys, the evaluation is already done or
                failed (never recorded twice), or the database fails.
        """
        self._check_writable()
        return self._record_result(evaluation_id, TrainerResult.check(evaluation_id, result))

    @abc.abstractmethod
    def _record_result(self, evaluation_id: int, result: TrainerResult) -> EvaluationRecord:
        """Hook of :meth:`record_result`; refuses an evaluation that is done or failed."""

    def record_failure(self, evaluation_id: int, error: str) -> EvaluationRecord:
        """Mark an evaluation failed with an error message (truncated to ``MAX_ERROR_LENGTH``).

        Raises:
            StorageError: Unknown id, the evaluation is already done or failed, or
                the database fails.
        """
        self._check_writable()
        return self._record_failure(evaluation_id, str(error)[:MAX_ERROR_LENGTH])

    @abc.abstractmethod
    def _record_failure(self, evaluation_id: int, error: str) -> EvaluationRecord:
        """Hook of :meth:`record_failure`; refuses an evaluation that is done or failed."""

    def requeue_running(self, search_id: int) -> int:
        """Put the search's running evaluations back in the queue (resume after a crash).

        Returns:
            How many evaluations were re-queued.

        Raises:
            StorageError: The database fails.
        """
        self._check_writable()
        return self._requeue_running(search_id)

    @abc.abstractmethod
    def _requeue_running(self, search_id: int) -> int:
        """Hook of :meth:`requeue_running`."""

    def evaluations(
        self,
        *,
        search_id: int | None = None,
        architecture_id: int | None = None,
        task: str | None = None,
        status: str | None = None,
    ) -> list[EvaluationRecord]:
        """Evaluations matching all given filters, oldest first.

        Raises:
            StorageError: An unknown status, or the database fails.
        """
        typed = None if status is None else EvalStatus(check_choice(status, EVALUATION_STATUSES, "evaluation status"))
        return self._evaluations(search_id, architecture_id, task, typed)

    @abc.abstractmethod
    def _evaluations(
        self, search_id: int | None, architecture_id: int | None, task: str | None, status: EvalStatus | None
    ) -> list[EvaluationRecord]:
        """Hook of :meth:`evaluations` (None: no filter)."""

    # ------------------------------------------------------- derived queries

    def best_scores(self, architecture_id: int) -> dict[str, float]:
        """The best score per task over the architecture's done evaluations.

        A diverged evaluation (or one without a metric) scores 0.

        Raises:
            StorageError: The database fails.
        """
        evals = self.evaluations(architecture_id=architecture_id, status="done")
        return _best_by_task(evals).get(architecture_id, {})

    def all_best_scores(self, search_id: int) -> dict[int, dict[str, float]]:
        """:meth:`best_scores` of every architecture of a search that has a done evaluation.

        Raises:
            StorageError: The database fails.
        """
        return _best_by_task(self.evaluations(search_id=search_id, status="done"))

    def normalizers(self, search_id: int, reference: str = DEFAULT_REFERENCE) -> dict[str, float]:
        """The search's frozen normalizers (:meth:`freeze_normalizers`) once fixed; before that, the live best
        score per task of the architecture named ``reference`` (empty if absent).

        Raises:
            StorageError: The database fails.
        """
        frozen = self.frozen_normalizers(search_id)
        if frozen is not None:
            return frozen
        ref = self.find_architecture(search_id, name=reference)
        return {} if ref is None else self.best_scores(ref.id)

    def fitness(self, architecture_id: int, tasks: Sequence[str], normalizers: dict[str, float]) -> float | None:
        """min over ``tasks`` of best score / normalizer; None if a task has no result yet.

        Raises:
            StorageError: A task has no positive normalizer, or the database fails.
        """
        return normalized_fitness(self.best_scores(architecture_id), tasks, normalizers)[0]

    def top_k(
        self, search_id: int, k: int, tasks: Sequence[str], reference: str = DEFAULT_REFERENCE
    ) -> list[tuple[ArchitectureRecord, float, dict[str, float]]]:
        """The ``k`` fittest architectures in stage ``'complete'``, best first.

        Ties go to the older architecture. Empty while the reference has no positive
        best score on every task (e.g. during initialization).

        Returns:
            ``(architecture, fitness, normalized score per task)`` tuples.

        Raises:
            StorageError: The database fails.
        """
        norms = self.normalizers(search_id, reference)
        if not all(norms.get(t, 0.0) > 0 for t in tasks):
            _logger.debug("top_k: reference %r has no positive score on every task of %s", reference, tasks)
            return []
        scores = self.all_best_scores(search_id)
        ranked = []
        for arch in self.list_architectures(search_id, stage=COMPLETE_STAGE):
            fit, normalized = normalized_fitness(scores.get(arch.id, {}), tasks, norms)
            if fit is not None:
                ranked.append((arch, fit, normalized))
        ranked.sort(key=lambda item: (-item[1], item[0].id))
        return ranked[: max(k, 0)]

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release connections; the object stays usable (it reconnects on demand)."""

    def __enter__(self) -> "LeaderboardStorage":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
