"""The SQLAlchemy implementation of :class:`LeaderboardStorage` (SQLite, PostgreSQL, ...).

Opening (URLs, SQLite pragmas, schema check) lives in :mod:`archsearch.storage._engine`;
this module turns domain actions into short transactions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import case, func, literal, or_, select, true, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from archsearch.errors import LeaseHeldError, LeaseLostError, SearchExistsError, StorageError
from archsearch.storage._base import LeaderboardStorage
from archsearch.storage._checks import NewArchitecture, TrainerResult
from archsearch.storage._engine import error_text, open_engine, prepare_schema
from archsearch.storage._lease import DriverId, Lease, holder_gone
from archsearch.storage._models import ArchitectureModel, EvaluationModel, SearchModel
from archsearch.storage._records import (
    ArchitectureRecord,
    EvalStatus,
    EvaluationRecord,
    SearchRecord,
    SearchStatus,
    from_json,
    to_json,
    utcnow,
)

_logger = logging.getLogger(__name__)

_OPEN_STATUSES = ("queued", "running")  # evaluations that may still get an outcome


# ------------------------------------------------------------------ records


def _search_record(row: SearchModel) -> SearchRecord:
    return SearchRecord(
        id=row.id, name=row.name, config=from_json(row.config), seed=row.seed, status=row.status,
        state=from_json(row.state), created=row.created, finished=row.finished,
        normalizers=None if row.normalizers is None else from_json(row.normalizers),
        counters=from_json(row.counters) or {}, lease=_lease_of(row),
    )  # fmt: skip


def _lease_of(row: SearchModel) -> Lease | None:
    if row.lease_token is None:
        return None
    holder = DriverId(host=row.lease_host or "?", machine=row.lease_machine or "", pid=row.lease_pid or 0,
                      token=row.lease_token)
    return Lease(holder=holder, since=row.lease_since or row.created, heartbeat=row.lease_heartbeat or row.created)


def _lease_values(driver: DriverId | None, since: Any = None, heartbeat: Any = None) -> dict[str, Any]:
    """Column values of a lease held by ``driver`` (all None: no lease)."""
    if driver is None:
        return dict(lease_token=None, lease_host=None, lease_machine=None, lease_pid=None, lease_since=None,
                    lease_heartbeat=None)
    return dict(lease_token=driver.token, lease_host=driver.host, lease_machine=driver.machine,
                lease_pid=driver.pid, lease_since=since, lease_heartbeat=heartbeat)


def _bump(row: SearchModel, count: Mapping[str, int]) -> None:
    """Add ``count`` to the search row's counters (in the caller's transaction)."""
    if not count:
        return
    counters = from_json(row.counters) or {}
    for key, value in count.items():
        counters[key] = counters.get(key, 0) + value
    row.counters = to_json(counters, "counters")


def _architecture_record(row: ArchitectureModel) -> ArchitectureRecord:
    return ArchitectureRecord(
        id=row.id, search_id=row.search_id, name=row.name, graph_json=row.graph_json,
        structural_hash=row.structural_hash, fingerprint=row.fingerprint, parent_id=row.parent_id,
        mutation=from_json(row.mutation), origin=row.origin, stage=row.stage, created=row.created,
    )  # fmt: skip


def _evaluation_record(row: EvaluationModel) -> EvaluationRecord:
    return EvaluationRecord(
        id=row.id, architecture_id=row.architecture_id, task=row.task, hparams=from_json(row.hparams),
        hparams_hash=row.hparams_hash, purpose=row.purpose, status=row.status, metric=row.metric,
        valid=row.valid, test=row.test, result=from_json(row.result), epochs=row.epochs,
        seconds=row.seconds, params=row.params, diverged=bool(row.diverged), worker=row.worker,
        error=row.error, attempts=row.attempts, created=row.created, finished=row.finished,
    )  # fmt: skip


_EVALUATION_COLUMNS = [getattr(EvaluationModel, f.name) for f in dataclasses.fields(EvaluationRecord)]
_HPARAMS, _RESULT, _DIVERGED = (
    [f.name for f in dataclasses.fields(EvaluationRecord)].index(k) for k in ("hparams", "result", "diverged")
)


def _evaluation_from_values(values: Sequence[Any]) -> EvaluationRecord:
    """A record from the values of ``_EVALUATION_COLUMNS`` (the fast path for long lists)."""
    fields = list(values)
    fields[_HPARAMS], fields[_RESULT] = from_json(fields[_HPARAMS]), from_json(fields[_RESULT])
    fields[_DIVERGED] = bool(fields[_DIVERGED])
    return EvaluationRecord(*fields)


class SQLStorage(LeaderboardStorage):
    """Leaderboard storage in any SQLAlchemy database.

    Args:
        url: An SQLAlchemy URL, e.g. ``sqlite:///archsearch.db`` or
            ``postgresql+psycopg2://user@host/db``.
        read_only: Open without creating or writing anything; writing methods raise.

    Raises:
        StorageError: The database cannot be opened, is not an archsearch database, or
            has another schema version.

    The checks of what storage accepts run in :class:`LeaderboardStorage`; this class
    implements its hooks and keeps the checks that need the database.
    """

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self._url = url
        self._read_only = read_only
        self._fence: tuple[int, str] | None = None  # (search id, lease token) every write checks
        self._engine, self._display = open_engine(url, read_only)
        self._sessionmaker = sessionmaker(bind=self._engine, expire_on_commit=False)
        # An in-memory SQLite database is one connection: threads take turns with it.
        self._one_connection = threading.RLock() if isinstance(self._engine.pool, StaticPool) else None
        try:
            prepare_schema(self._engine, self._display, read_only)
        except BaseException:
            self._engine.dispose()
            raise

    # ----------------------------------------------------------- connection

    @property
    def url(self) -> str:
        """The URL this storage was opened with (password hidden)."""
        return self._display

    @property
    def read_only(self) -> bool:
        """Whether writing methods are refused."""
        return self._read_only

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error, always close."""
        with self._one_connection or contextlib.nullcontext():
            session = self._sessionmaker()
            try:
                yield session
                session.commit()
            except SQLAlchemyError as e:
                session.rollback()
                raise StorageError(f"database error on {self._display}: {error_text(e)}") from e
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """A writing transaction; while this storage holds a lease, it first checks the lease is still its own.

        The check locks the search row (``FOR UPDATE`` on PostgreSQL; SQLite writers are serialized by
        ``BEGIN IMMEDIATE``), so a take-over cannot slip in between the check and the write.
        """
        with self._session() as session:
            if self._fence is not None:
                search_id, token = self._fence
                stmt = select(SearchModel).where(SearchModel.id == search_id).with_for_update()
                row = session.scalars(stmt).one_or_none()
                if row is None or row.lease_token != token:
                    raise LeaseLostError(_lost_message(row))
            yield session

    def close(self) -> None:
        """Close pooled connections; the storage reconnects if used again."""
        self._engine.dispose()

    def __getstate__(self) -> dict[str, Any]:
        # Only the URL travels; an in-memory database ('sqlite://') arrives empty.
        return {"url": self._url, "read_only": self._read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], read_only=state["read_only"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SQLStorage({self._display!r}, read_only={self._read_only})"

    # ------------------------------------------------------------- searches

    def _insert_search(self, name: str, config_json: str, seed: int, driver: DriverId | None) -> SearchRecord:
        now = utcnow()
        row = SearchModel(
            name=name, config=config_json, seed=seed, status="running",
            state=to_json({}, "search state"), created=now, finished=None, counters="{}",
            **_lease_values(driver, since=now, heartbeat=now),
        )  # fmt: skip
        exists = SearchExistsError(f"a search named {name!r} already exists; resume it or pick another name")
        with self._write() as session:
            if SearchModel.find_by_name(session, name) is not None:
                raise exists
            session.add(row)
            try:
                session.flush()
            except IntegrityError as e:  # created by another writer meanwhile (PostgreSQL)
                raise exists from e
            record = _search_record(row)
        if driver is not None:
            self._fence = (record.id, driver.token)
        return record

    def get_search(self, name: str) -> SearchRecord | None:
        with self._session() as session:
            row = SearchModel.find_by_name(session, name)
            return None if row is None else _search_record(row)

    def list_searches(self) -> list[SearchRecord]:
        with self._session() as session:
            return [_search_record(r) for r in session.scalars(select(SearchModel).order_by(SearchModel.id))]

    def _update_search(self, search_id: int, status: SearchStatus | None, state_json: str | None) -> SearchRecord:
        with self._write() as session:
            row = SearchModel.find_or_raise_by_id(session, search_id)
            if status is not None:
                row.status = status.value
                row.finished = None if status is SearchStatus.RUNNING else utcnow()
            if state_json is not None:
                row.state = state_json
            session.flush()
            return _search_record(row)

    def _freeze_normalizers(self, search_id: int, values: dict[str, float]) -> SearchRecord:
        with self._write() as session:
            row = SearchModel.find_or_raise_by_id(session, search_id)
            if row.normalizers is not None and from_json(row.normalizers) != values:
                raise StorageError(f"search {row.name!r} already has fixed normalizers {row.normalizers}")
            row.normalizers = to_json(values, "normalizers")
            session.flush()
            return _search_record(row)

    def frozen_normalizers(self, search_id: int) -> dict[str, float] | None:
        with self._session() as session:
            row = SearchModel.find_or_raise_by_id(session, search_id)
            return None if row.normalizers is None else from_json(row.normalizers)

    def _add_counts(self, search_id: int, counts: dict[str, int]) -> None:
        with self._write() as session:
            _bump(SearchModel.find_or_raise_by_id(session, search_id), counts)

    # ---------------------------------------------------------------- lease

    def _acquire_lease(self, search_id: int, driver: DriverId, timeout_s: float, take_over: bool) -> Lease | None:
        now = utcnow()
        with self._session() as session:
            row = session.scalars(select(SearchModel).where(SearchModel.id == search_id).with_for_update()).first()
            if row is None:
                raise StorageError(f"no search with id {search_id} in this database")
            current = _lease_of(row)
            other = current if current is not None and current.holder.token != driver.token else None
            if other is not None and not take_over and not holder_gone(other, driver, now, timeout_s):
                raise LeaseHeldError(
                    f"search {row.name!r} is being run by another driver ({other.describe(now)}); it is taken "
                    f"over automatically once that process has ended (same machine) or its heartbeat is "
                    f"{timeout_s:.0f} s old; --take-over takes it now"
                )
            held = SearchModel.lease_token.is_(None) if current is None else SearchModel.lease_token == current.holder.token
            since = current.since if current is not None and other is None else now
            stmt = (
                update(SearchModel).where(SearchModel.id == search_id, held)
                .values(**_lease_values(driver, since=since, heartbeat=now))
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if session.execute(stmt).rowcount != 1:
                raise LeaseHeldError(f"another driver took search {row.name!r} at the same moment")
        if other is not None:
            _logger.warning("took over search %d from %s", search_id, other.describe(now))
        self._fence = (search_id, driver.token)
        return other

    def _renew_lease(self, search_id: int, driver: DriverId) -> None:
        stmt = (
            update(SearchModel).where(SearchModel.id == search_id, SearchModel.lease_token == driver.token)
            .values(lease_heartbeat=utcnow()).execution_options(synchronize_session=False)
        )  # fmt: skip
        with self._session() as session:
            if session.execute(stmt).rowcount == 1:
                return
            row = session.get(SearchModel, search_id)
            message = _lost_message(row)
        raise LeaseLostError(message)

    def _release_lease(self, search_id: int, driver: DriverId) -> bool:
        stmt = (
            update(SearchModel).where(SearchModel.id == search_id, SearchModel.lease_token == driver.token)
            .values(**_lease_values(None)).execution_options(synchronize_session=False)
        )  # fmt: skip
        with self._session() as session:
            released = session.execute(stmt).rowcount == 1
        if self._fence == (search_id, driver.token):
            self._fence = None
        return released

    # -------------------------------------------------------- architectures

    def _insert_architecture(self, new: NewArchitecture, count: dict[str, int]) -> tuple[ArchitectureRecord, bool]:
        search_id, structural_hash = new.search_id, new.structural_hash
        row = ArchitectureModel(
            search_id=search_id, name=new.name, graph_json=new.graph_json, structural_hash=structural_hash,
            fingerprint=new.fingerprint, parent_id=new.parent_id, origin=new.origin, stage=new.stage,
            created=utcnow(), mutation=new.mutation_json,
        )  # fmt: skip
        with self._write() as session:
            self._check_parents(session, row)
            existing = ArchitectureModel.find_by_hash(session, search_id, structural_hash)
            if existing is not None:
                return _architecture_record(existing), False
            self._check_name_free(session, row)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # another writer inserted the same graph meanwhile
                session.rollback()
                _logger.debug("architecture %s of search %d was inserted concurrently", structural_hash, search_id)
                existing = ArchitectureModel.find_by_hash(session, search_id, structural_hash)
                if existing is None:
                    raise
                return _architecture_record(existing), False
            _bump(SearchModel.find_or_raise_by_id(session, search_id), count)
            return _architecture_record(row), True

    @staticmethod
    def _check_parents(session: Session, row: ArchitectureModel) -> None:
        """Clear errors for an unknown search or parent (instead of a foreign-key error)."""
        SearchModel.find_or_raise_by_id(session, row.search_id)
        if row.parent_id is not None:
            parent = ArchitectureModel.find_or_raise_by_id(session, row.parent_id)
            if parent.search_id != row.search_id:
                raise StorageError(f"parent architecture {row.parent_id} belongs to another search")

    @staticmethod
    def _check_name_free(session: Session, row: ArchitectureModel) -> None:
        """A clear error if another graph of the search already has this name."""
        stmt = select(ArchitectureModel).where(
            ArchitectureModel.search_id == row.search_id, ArchitectureModel.name == row.name
        )
        named = session.scalars(stmt).one_or_none()
        if named is not None and named.structural_hash != row.structural_hash:
            raise StorageError(
                f"architecture name {row.name!r} is already used in search {row.search_id} "
                f"by another graph (id {named.id})"
            )

    def _find_architecture(self, search_id: int, keys: dict[str, str]) -> ArchitectureRecord | None:
        stmt = select(ArchitectureModel).where(ArchitectureModel.search_id == search_id)
        for key, value in keys.items():
            stmt = stmt.where(getattr(ArchitectureModel, key) == value)
        with self._session() as session:
            row = session.scalars(stmt.order_by(ArchitectureModel.id).limit(1)).first()
            return None if row is None else _architecture_record(row)

    def get_architecture(self, architecture_id: int) -> ArchitectureRecord:
        with self._session() as session:
            return _architecture_record(ArchitectureModel.find_or_raise_by_id(session, architecture_id))

    def _set_stage(self, architecture_id: int, stage: str, count: dict[str, int]) -> None:
        with self._write() as session:
            row = ArchitectureModel.find_or_raise_by_id(session, architecture_id)
            row.stage = stage
            if count:
                _bump(SearchModel.find_or_raise_by_id(session, row.search_id), count)

    def list_architectures(self, search_id: int, stage: str | None = None) -> list[ArchitectureRecord]:
        stmt = select(ArchitectureModel).where(ArchitectureModel.search_id == search_id)
        if stage is not None:
            stmt = stmt.where(ArchitectureModel.stage == stage)
        with self._session() as session:
            return [_architecture_record(r) for r in session.scalars(stmt.order_by(ArchitectureModel.id))]

    # ---------------------------------------------------------- evaluations

    def _insert_evaluation(
        self, architecture_id: int, task: str, hparams_json: str, key: str, purpose: str, count: dict[str, int]
    ) -> EvaluationRecord | None:
        row = EvaluationModel(
            architecture_id=architecture_id, task=task, hparams=hparams_json,
            hparams_hash=key, purpose=purpose, status="queued", diverged=False, attempts=0, created=utcnow(),
        )  # fmt: skip
        with self._write() as session:
            arch = ArchitectureModel.find_or_raise_by_id(session, architecture_id)
            if EvaluationModel.find_by_key(session, architecture_id, task, key) is not None:
                return None
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # the unique key rejected a concurrent duplicate
                session.rollback()
                _logger.debug("evaluation (%d, %s, %s) was inserted concurrently", architecture_id, task, key)
                if EvaluationModel.find_by_key(session, architecture_id, task, key) is None:
                    raise
                return None
            if count:
                _bump(SearchModel.find_or_raise_by_id(session, arch.search_id), count)
            return _evaluation_record(row)

    def _open_evaluation(self, session: Session, evaluation_id: int) -> EvaluationModel:
        """The evaluation, which must still be queued or running."""
        row = EvaluationModel.find_or_raise_by_id(session, evaluation_id)
        if row.status not in _OPEN_STATUSES:
            raise StorageError(
                f"evaluation {evaluation_id} is already {row.status}; an outcome is never recorded twice"
            )
        return row

    def _mark_running(self, evaluation_id: int, worker: str) -> EvaluationRecord:
        with self._write() as session:
            row = self._open_evaluation(session, evaluation_id)
            row.status, row.worker, row.attempts = "running", worker, row.attempts + 1
            session.flush()
            return _evaluation_record(row)

    def _record_result(self, evaluation_id: int, result: TrainerResult) -> EvaluationRecord:
        with self._write() as session:
            row = self._open_evaluation(session, evaluation_id)
            row.metric, row.valid, row.test = result.metric, result.valid, result.test
            row.epochs, row.seconds, row.params = result.epochs, result.seconds, result.params
            row.diverged = result.diverged
            row.result, row.status, row.error, row.finished = result.result_json, "done", None, utcnow()
            session.flush()
            return _evaluation_record(row)

    def _record_failure(self, evaluation_id: int, error: str) -> EvaluationRecord:
        with self._write() as session:
            row = self._open_evaluation(session, evaluation_id)
            row.status, row.error, row.finished = "failed", error, utcnow()
            session.flush()
            return _evaluation_record(row)

    def _requeue_running(self, search_id: int) -> int:
        archs = select(ArchitectureModel.id).where(ArchitectureModel.search_id == search_id)
        stmt = (
            update(EvaluationModel)
            .where(EvaluationModel.status == "running", EvaluationModel.architecture_id.in_(archs))
            .values(status="queued", worker=None)
            .execution_options(synchronize_session=False)
        )
        with self._write() as session:
            count = session.execute(stmt).rowcount
        if count:
            _logger.info("re-queued %d running evaluations of search %d", count, search_id)
        return count

    def _evaluations(
        self, search_id: int | None, architecture_id: int | None, task: str | None, status: EvalStatus | None
    ) -> list[EvaluationRecord]:
        # Plain tuples, not ORM objects: several times faster for a search's 100k evaluations.
        stmt = _filter_evaluations(select(*_EVALUATION_COLUMNS), search_id, architecture_id, task, status)
        with self._session() as session:
            return [_evaluation_from_values(r) for r in session.execute(stmt.order_by(EvaluationModel.id))]

    # ------------------------------------------ derived queries, in SQL

    def best_scores(self, architecture_id: int) -> dict[str, float]:
        return self._grouped_best(None, architecture_id).get(architecture_id, {})

    def all_best_scores(self, search_id: int) -> dict[int, dict[str, float]]:
        return self._grouped_best(search_id, None)

    def _grouped_best(self, search_id: int | None, architecture_id: int | None) -> dict[int, dict[str, float]]:
        """max(score) per (architecture, task) over done evaluations, in one GROUP BY."""
        e = EvaluationModel
        score = case((or_(e.diverged == true(), e.metric.is_(None)), literal(0.0)), else_=e.metric)
        stmt = select(e.architecture_id, e.task, func.max(score))
        stmt = _filter_evaluations(stmt, search_id, architecture_id, None, EvalStatus.DONE)
        best: dict[int, dict[str, float]] = {}
        with self._session() as session:
            for arch_id, task, value in session.execute(stmt.group_by(e.architecture_id, e.task)):
                best.setdefault(arch_id, {})[task] = float(value)
        return best


def _lost_message(row: SearchModel | None) -> str:
    """Why a driver's lease is gone, naming the new holder if there is one."""
    if row is None:
        return "the search this driver ran was deleted; it stopped without writing further"
    lease = _lease_of(row)
    holder = "nobody holds it now" if lease is None else f"now held by {lease.describe(utcnow())}"
    return (f"this driver lost the lease of search {row.name!r} ({holder}): another driver took it over; "
            "it stopped without writing further")


def _filter_evaluations(
    stmt: Any, search_id: int | None, architecture_id: int | None, task: str | None, status: EvalStatus | None
) -> Any:
    """``stmt`` (a select over evaluations) restricted to the given filters."""
    e = EvaluationModel
    if search_id is not None:
        stmt = stmt.join(ArchitectureModel, ArchitectureModel.id == e.architecture_id)
        stmt = stmt.where(ArchitectureModel.search_id == search_id)
    status_value = None if status is None else status.value
    for column, value in ((e.architecture_id, architecture_id), (e.task, task), (e.status, status_value)):
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt
