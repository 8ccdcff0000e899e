"""The storage interface checks what storage accepts once, for every back-end.

``DictStorage`` is a second, real back-end over plain dicts that implements only the
interface's hooks and reads, with the checks that need its data (a row exists, a name is
taken, an outcome is recorded once) and not one check of its input. It must refuse every
bad input exactly as the SQL back-end does, before any of its hooks runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable

import pytest

from archsearch.errors import LeaseHeldError, LeaseLostError, SearchExistsError, StorageError
from archsearch.storage import (
    ArchitectureRecord,
    DriverId,
    EvalStatus,
    EvaluationRecord,
    Lease,
    LeaderboardStorage,
    SearchRecord,
    SearchStatus,
    open_storage,
)
from archsearch.storage._checks import NewArchitecture, TrainerResult
from archsearch.storage._lease import holder_gone
from archsearch.storage._records import from_json, utcnow
from test_storage import TASKS, _populate_leaderboard, postgres_server, storage, storage_url  # noqa: F401 (fixtures)


class DictStorage(LeaderboardStorage):
    """The leaderboard over dicts in memory: hooks and reads only; ``hook_calls`` lists the hooks that ran."""

    def __init__(self, *, read_only: bool = False) -> None:
        self._read_only = read_only
        self.searches: dict[int, SearchRecord] = {}
        self.architectures: dict[int, ArchitectureRecord] = {}
        self.evaluation_rows: dict[int, EvaluationRecord] = {}
        self.hook_calls: list[str] = []
        self._ids = {kind: itertools.count(1) for kind in ("search", "architecture", "evaluation")}
        self._fence: tuple[int, str] | None = None

    @property
    def read_only(self) -> bool:
        return self._read_only

    def _called(self, hook: str) -> None:
        self.hook_calls.append(hook)

    def _search(self, search_id: int) -> SearchRecord:
        if search_id not in self.searches:
            raise StorageError(f"no search with id {search_id} in this database")
        return self.searches[search_id]

    def _write(self) -> None:
        """The lease fence every write passes."""
        if self._fence is not None:
            search_id, token = self._fence
            lease = self.searches[search_id].lease
            if lease is None or lease.holder.token != token:
                raise LeaseLostError(f"this driver lost the lease of search {self.searches[search_id].name!r}")

    def _bump(self, search_id: int, count: dict[str, int]) -> None:
        counters = dict(self._search(search_id).counters)
        for key, value in count.items():
            counters[key] = counters.get(key, 0) + value
        self.searches[search_id] = dataclasses.replace(self.searches[search_id], counters=counters)

    # searches
    def _insert_search(self, name: str, config_json: str, seed: int, driver: DriverId | None) -> SearchRecord:
        self._called("_insert_search")
        self._write()
        if self.get_search(name) is not None:
            raise SearchExistsError(f"a search named {name!r} already exists; resume it or pick another name")
        now = utcnow()
        lease = None if driver is None else Lease(holder=driver, since=now, heartbeat=now)
        record = SearchRecord(id=next(self._ids["search"]), name=name, config=from_json(config_json), seed=seed,
                              status="running", state={}, created=now, finished=None, lease=lease)
        self.searches[record.id] = record
        if driver is not None:
            self._fence = (record.id, driver.token)
        return record

    def get_search(self, name: str) -> SearchRecord | None:
        return next((s for s in self.searches.values() if s.name == name), None)

    def list_searches(self) -> list[SearchRecord]:
        return list(self.searches.values())

    def _update_search(self, search_id: int, status: SearchStatus | None, state_json: str | None) -> SearchRecord:
        self._called("_update_search")
        self._write()
        record = self._search(search_id)
        if status is not None:
            finished = None if status is SearchStatus.RUNNING else utcnow()
            record = dataclasses.replace(record, status=status.value, finished=finished)
        if state_json is not None:
            record = dataclasses.replace(record, state=from_json(state_json))
        self.searches[search_id] = record
        return record

    def _freeze_normalizers(self, search_id: int, normalizers: dict[str, float]) -> SearchRecord:
        self._called("_freeze_normalizers")
        self._write()
        record = self._search(search_id)
        if record.normalizers is not None and record.normalizers != normalizers:
            raise StorageError(f"search {record.name!r} already has fixed normalizers {record.normalizers}")
        self.searches[search_id] = dataclasses.replace(record, normalizers=normalizers)
        return self.searches[search_id]

    def frozen_normalizers(self, search_id: int) -> dict[str, float] | None:
        return self._search(search_id).normalizers

    def _add_counts(self, search_id: int, counts: dict[str, int]) -> None:
        self._called("_add_counts")
        self._write()
        self._bump(search_id, counts)

    # lease
    def _acquire_lease(self, search_id: int, driver: DriverId, timeout_s: float, take_over: bool) -> Lease | None:
        self._called("_acquire_lease")
        record, now = self._search(search_id), utcnow()
        other = record.lease if record.lease is not None and record.lease.holder.token != driver.token else None
        if other is not None and not take_over and not holder_gone(other, driver, now, timeout_s):
            raise LeaseHeldError(f"search {record.name!r} is being run by another driver ({other.describe(now)})")
        since = record.lease.since if record.lease is not None and other is None else now
        self.searches[search_id] = dataclasses.replace(record, lease=Lease(driver, since, now))
        self._fence = (search_id, driver.token)
        return other

    def _renew_lease(self, search_id: int, driver: DriverId) -> None:
        self._called("_renew_lease")
        lease = self._search(search_id).lease
        if lease is None or lease.holder.token != driver.token:
            raise LeaseLostError(f"this driver lost the lease of search {search_id}")
        self.searches[search_id] = dataclasses.replace(self.searches[search_id],
                                                       lease=dataclasses.replace(lease, heartbeat=utcnow()))

    def _release_lease(self, search_id: int, driver: DriverId) -> bool:
        self._called("_release_lease")
        lease = self._search(search_id).lease
        if self._fence == (search_id, driver.token):
            self._fence = None
        if lease is None or lease.holder.token != driver.token:
            return False
        self.searches[search_id] = dataclasses.replace(self.searches[search_id], lease=None)
        return True

    # architectures
    def _insert_architecture(self, new: NewArchitecture, count: dict[str, int]) -> tuple[ArchitectureRecord, bool]:
        self._called("_insert_architecture")
        self._write()
        self._search(new.search_id)
        if new.parent_id is not None and self.get_architecture(new.parent_id).search_id != new.search_id:
            raise StorageError(f"parent architecture {new.parent_id} belongs to another search")
        existing = self._find_architecture(new.search_id, {"structural_hash": new.structural_hash})
        if existing is not None:
            return existing, False
        named = self._find_architecture(new.search_id, {"name": new.name})
        if named is not None:
            raise StorageError(f"architecture name {new.name!r} is already used in search {new.search_id} "
                               f"by another graph (id {named.id})")
        fields = {f.name: getattr(new, f.name) for f in dataclasses.fields(new) if f.name != "mutation_json"}
        record = ArchitectureRecord(id=next(self._ids["architecture"]), mutation=from_json(new.mutation_json),
                                    created=utcnow(), **fields)
        self.architectures[record.id] = record
        self._bump(new.search_id, count)
        return record, True

    def _find_architecture(self, search_id: int, keys: dict[str, str]) -> ArchitectureRecord | None:
        return next((a for a in self.architectures.values()
                     if a.search_id == search_id and all(getattr(a, k) == v for k, v in keys.items())), None)

    def get_architecture(self, architecture_id: int) -> ArchitectureRecord:
        if architecture_id not in self.architectures:
            raise StorageError(f"no architecture with id {architecture_id} in this database")
        return self.architectures[architecture_id]

    def _set_stage(self, architecture_id: int, stage: str, count: dict[str, int]) -> None:
        self._called("_set_stage")
        self._write()
        record = self.get_architecture(architecture_id)
        self.architectures[architecture_id] = dataclasses.replace(record, stage=stage)
        self._bump(record.search_id, count)

    def list_architectures(self, search_id: int, stage: str | None = None) -> list[ArchitectureRecord]:
        return [a for a in self.architectures.values() if a.search_id == search_id and stage in (None, a.stage)]

    # evaluations
    def _insert_evaluation(
        self, architecture_id: int, task: str, hparams_json: str, key: str, purpose: str, count: dict[str, int]
    ) -> EvaluationRecord | None:
        self._called("_insert_evaluation")
        self._write()
        arch = self.get_architecture(architecture_id)
        if any((e.architecture_id, e.task, e.hparams_hash) == (architecture_id, task, key)
               for e in self.evaluation_rows.values()):
            return None
        record = EvaluationRecord(
            id=next(self._ids["evaluation"]), architecture_id=architecture_id, task=task,
            hparams=from_json(hparams_json), hparams_hash=key, purpose=purpose, status="queued", metric=None,
            valid=None, test=None, result=None, epochs=None, seconds=None, params=None, diverged=False, worker=None,
            error=None, attempts=0, created=utcnow(), finished=None,
        )  # fmt: skip
        self.evaluation_rows[record.id] = record
        self._bump(arch.search_id, count)
        return record

    def _outcome(self, evaluation_id: int, **changes: Any) -> EvaluationRecord:
        self._write()
        if evaluation_id not in self.evaluation_rows:
            raise StorageError(f"no evaluation with id {evaluation_id} in this database")
        record = self.evaluation_rows[evaluation_id]
        if record.status not in ("queued", "running"):
            raise StorageError(f"evaluation {evaluation_id} is already {record.status}; an outcome is never "
                               "recorded twice")
        changes = {k: v(record) if callable(v) else v for k, v in changes.items()}
        self.evaluation_rows[evaluation_id] = dataclasses.replace(record, **changes)
        return self.evaluation_rows[evaluation_id]

    def _mark_running(self, evaluation_id: int, worker: str) -> EvaluationRecord:
        self._called("_mark_running")
        return self._outcome(evaluation_id, status="running", worker=worker, attempts=lambda r: r.attempts + 1)

    def _record_result(self, evaluation_id: int, result: TrainerResult) -> EvaluationRecord:
        self._called("_record_result")
        numbers = {k: getattr(result, k) for k in ("metric", "valid", "test", "epochs", "seconds", "params")}
        return self._outcome(evaluation_id, status="done", diverged=result.diverged,
                             result=from_json(result.result_json), finished=utcnow(), **numbers)

    def _record_failure(self, evaluation_id: int, error: str) -> EvaluationRecord:
        self._called("_record_failure")
        return self._outcome(evaluation_id, status="failed", error=error, finished=utcnow())

    def _requeue_running(self, search_id: int) -> int:
        self._called("_requeue_running")
        self._write()
        running = [e for e in self._evaluations(search_id, None, None, EvalStatus.RUNNING)]
        for e in running:
            self.evaluation_rows[e.id] = dataclasses.replace(e, status="queued", worker=None)
        return len(running)

    def _evaluations(
        self, search_id: int | None, architecture_id: int | None, task: str | None, status: EvalStatus | None
    ) -> list[EvaluationRecord]:
        return [e for e in self.evaluation_rows.values()
                if search_id in (None, self.architectures[e.architecture_id].search_id)
                and architecture_id in (None, e.architecture_id) and task in (None, e.task)
                and (status is None or e.status == status.value)]


# ------------------------------------------------------------------ the refusals

def _arch(st: LeaderboardStorage, sid: int, **changes: Any) -> Any:
    args = dict(name="m1", graph_json="{}", structural_hash="h1", fingerprint=None, parent_id=None, mutation=None,
                origin="mutant", stage="new")
    return st.add_architecture(sid, **{**args, **changes})


def _result(**changes: Any) -> dict[str, Any]:
    return {"metric": 0.5, "valid": 0.5, "test": 0.5, "epochs": 1, "seconds": 1.0, "params": 10, "diverged": False,
            **changes}


BAD_INPUT: list[tuple[str, Callable[[LeaderboardStorage, int, int, int], Any]]] = [
    ("search name too long", lambda st, s, a, e: st.create_search("s" * 129, {}, 0)),
    ("search name not text", lambda st, s, a, e: st.create_search(7, {}, 0)),
    ("config not JSON", lambda st, s, a, e: st.create_search("t", {"f": {1, 2j}}, 0)),
    ("seed not an integer", lambda st, s, a, e: st.create_search("t", {}, "7")),
    ("seed a float", lambda st, s, a, e: st.create_search("t", {}, 7.5)),
    ("driver host too long", lambda st, s, a, e: st.create_search(
        "t", {}, 0, driver=DriverId(host="h" * 300, machine="m", pid=1, token="a" * 32))),
    ("unknown search status", lambda st, s, a, e: st.update_search(s, status="paused")),
    ("state not JSON", lambda st, s, a, e: st.update_search(s, state={"rng": 2j})),
    ("negative normalizer", lambda st, s, a, e: st.freeze_normalizers(s, {"xml": -1.0})),
    ("no normalizers", lambda st, s, a, e: st.freeze_normalizers(s, {})),
    ("infinite normalizer", lambda st, s, a, e: st.freeze_normalizers(s, {"xml": math.inf})),
    ("normalizer not a number", lambda st, s, a, e: st.freeze_normalizers(s, {"xml": "high"})),
    ("count not an integer", lambda st, s, a, e: st.add_counts(s, {"proposed": 1.5})),
    ("counts not a mapping", lambda st, s, a, e: st.add_counts(s, [("proposed", 1)])),
    ("driver token too long", lambda st, s, a, e: st.acquire_lease(
        s, DriverId(host="h", machine="m", pid=1, token="a" * 33))),
    ("empty driver token", lambda st, s, a, e: st.acquire_lease(s, DriverId(host="h", machine="m", pid=1, token=""))),
    ("architecture name too long", lambda st, s, a, e: _arch(st, s, name="m" * 200)),
    ("structural hash too long", lambda st, s, a, e: _arch(st, s, structural_hash="h" * 129)),
    ("fingerprint too long", lambda st, s, a, e: _arch(st, s, fingerprint="f" * 129)),
    ("stage too long", lambda st, s, a, e: _arch(st, s, stage="x" * 65)),
    ("unknown origin", lambda st, s, a, e: _arch(st, s, origin="alien")),
    ("graph not a JSON string", lambda st, s, a, e: _arch(st, s, graph_json={"cell": 1})),
    ("mutation not JSON", lambda st, s, a, e: _arch(st, s, mutation={"p": 2j})),
    ("architecture count not an integer", lambda st, s, a, e: _arch(st, s, count={"proposed": "1"})),
    ("find without a key", lambda st, s, a, e: st.find_architecture(s)),
    ("set_stage too long", lambda st, s, a, e: st.set_stage(a, "x" * 65)),
    ("set_stage count not an integer", lambda st, s, a, e: st.set_stage(a, "done", {"completed": None})),
    ("task name too long", lambda st, s, a, e: st.add_evaluation(a, "t" * 65, {"lr": 1}, "search")),
    ("purpose too long", lambda st, s, a, e: st.add_evaluation(a, "xml", {"lr": 1}, "p" * 33)),
    ("hyper-parameters with NaN", lambda st, s, a, e: st.add_evaluation(a, "xml", {"lr": math.nan}, "search")),
    ("hyper-parameters not a mapping", lambda st, s, a, e: st.add_evaluation(a, "xml", [0.1], "search")),
    ("worker too long", lambda st, s, a, e: st.mark_running(e, "w" * 257)),
    ("result lacks keys", lambda st, s, a, e: st.record_result(e, {"metric": 1.0})),
    ("result not a mapping", lambda st, s, a, e: st.record_result(e, [1.0])),
    ("metric not a number", lambda st, s, a, e: st.record_result(e, _result(metric="high"))),
    ("epochs not a number", lambda st, s, a, e: st.record_result(e, _result(epochs=[3]))),
    ("result not JSON", lambda st, s, a, e: st.record_result(e, _result(curve=2j))),
    ("unknown evaluation status", lambda st, s, a, e: st.evaluations(status="lost")),
]


def _state(st: LeaderboardStorage, sid: int) -> tuple:
    return st.list_searches(), st.list_architectures(sid), st.evaluations()


def _refusal(call: Callable[[], Any]) -> tuple[type, str]:
    with pytest.raises(StorageError) as info:
        call()
    return type(info.value), str(info.value)


def _seeded(st: LeaderboardStorage) -> tuple[int, int, int]:
    """One search, architecture and queued evaluation (ids 1, 1, 1)."""
    sid = st.create_search("s", {"tasks": list(TASKS)}, 0).id
    arch_id = _arch(st, sid, name="gru", structural_hash="h-gru", origin="seed")[0].id
    return sid, arch_id, st.add_evaluation(arch_id, "xml", {"lr": 0.1}, "search").id


def test_every_back_end_refuses_bad_input_alike_before_its_hooks_run(storage):
    plain = DictStorage()
    ids = _seeded(storage)
    assert _seeded(plain) == ids
    sql_before, dict_before = _state(storage, ids[0]), _state(plain, ids[0])
    plain.hook_calls.clear()
    for what, call in BAD_INPUT:
        sql_error = _refusal(lambda: call(storage, *ids))
        assert _refusal(lambda: call(plain, *ids)) == sql_error, what  # the same error type and words
        assert plain.hook_calls == [], f"{what}: the back-end hook {plain.hook_calls} ran on bad input"
    assert _state(storage, ids[0]) == sql_before
    assert _state(plain, ids[0]) == dict_before


def test_read_only_storage_refuses_every_write_before_its_hooks_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_storage(url) as writer:
        ids = _seeded(writer)
    reader, plain = open_storage(url, read_only=True), DictStorage(read_only=True)
    me = DriverId.current()
    writes: list[Callable[[LeaderboardStorage], Any]] = [
        lambda st: st.create_search("t", {}, 0),
        lambda st: st.update_search(ids[0], status="stopped"),
        lambda st: st.freeze_normalizers(ids[0], {"xml": 1.0}),
        lambda st: st.add_counts(ids[0], {"proposed": 1}),
        lambda st: st.acquire_lease(ids[0], me),
        lambda st: st.renew_lease(ids[0], me),
        lambda st: st.release_lease(ids[0], me),
        lambda st: _arch(st, ids[0]),
        lambda st: st.set_stage(ids[1], "complete"),
        lambda st: st.add_evaluation(ids[1], "xml", {"lr": 2}, "search"),
        lambda st: st.mark_running(ids[2], "w"),
        lambda st: st.record_result(ids[2], _result()),
        lambda st: st.record_failure(ids[2], "boom"),
        lambda st: st.requeue_running(ids[0]),
    ]
    for write in writes:
        for st, where in ((reader, reader.url), (plain, "DictStorage")):
            assert _refusal(lambda: write(st)) == (StorageError, f"{where} was opened read-only; only the search "
                                                                 "driver writes")
    assert plain.hook_calls == []


def test_the_plain_back_end_is_a_working_leaderboard():
    """The dict back-end is no stub: the contract's leaderboard scenario gives the SQL results on it."""
    plain = DictStorage()
    sid, gru, lstm, m1, m2, m3 = _populate_leaderboard(plain)
    assert [(a.name, round(f, 9)) for a, f, _ in plain.top_k(sid, 10, TASKS)] == [("m1", 1.1), ("gru", 1.0),
                                                                                 ("lstm", 0.5)]
    assert plain.best_scores(gru.id) == {"arithmetic": 0.9, "xml": 0.5}
    done = [e for e in plain.evaluations(search_id=sid) if e.architecture_id == m1.id]
    assert [e.metric for e in done] == [0.99, 0.55, None]  # the NaN metric, made None by the interface
    with pytest.raises(StorageError, match="already done"):
        plain.record_result(done[0].id, _result())
    with pytest.raises(StorageError, match="already used"):
        _arch(plain, sid, name="gru", structural_hash="another")
