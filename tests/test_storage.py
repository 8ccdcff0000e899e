"""Tests of the leaderboard storage on real SQLite databases (files in tmp_path, and in memory)."""

from __future__ import annotations

import json
import math
import pickle
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from archsearch.errors import StorageError
from postgres_server import postgres_server  # noqa: F401 (the fixture)

from archsearch.storage import (
    LeaderboardStorage,
    hparams_hash,
    normalized_fitness,
    open_storage,
)

TASKS = ("arithmetic", "xml")


BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]


def backend_url(backend: str, tmp_path, request) -> str:
    """A fresh, empty database of ``backend``."""
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'lb.db'}"
    if backend == "sqlite-memory":
        return "sqlite://"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture(params=BACKENDS)
def storage_url(request, tmp_path) -> str:
    """A fresh, empty database of each back-end in turn."""
    return backend_url(request.param, tmp_path, request)


# The storage contract: every test that takes this fixture runs on each back-end.
@pytest.fixture
def storage(storage_url):
    st = open_storage(storage_url)
    yield st
    st.close()


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'lb.db'}"


def _arch(st, search_id, name, structural_hash=None, *, stage="complete", origin="seed", parent_id=None, **kw):
    record, created = st.add_architecture(
        search_id, name=name, graph_json=json.dumps({"cell": name}), structural_hash=structural_hash or f"h-{name}",
        fingerprint=kw.get("fingerprint"), parent_id=parent_id, mutation=kw.get("mutation"), origin=origin,
        stage=stage,
    )  # fmt: skip
    return record


def _result(metric, *, diverged=False, **extra):
    return {"metric": metric, "valid": metric, "test": metric, "epochs": 3, "seconds": 1.5,
            "params": 1000, "diverged": diverged, **extra}  # fmt: skip


def _done(st, arch_id, task, lr, metric, *, diverged=False):
    ev = st.add_evaluation(arch_id, task, {"lr": lr, "init": 1.0}, "search")
    st.mark_running(ev.id, "w0")
    return st.record_result(ev.id, _result(metric, diverged=diverged))


# ------------------------------------------------------------- round trips


def test_search_round_trip(storage):
    s = storage.create_search("s1", {"tasks": list(TASKS), "budget": 10}, seed=1234)
    config = {"tasks": list(TASKS), "budget": 10}
    assert (s.name, s.config, s.seed, s.status, s.state, s.finished) == ("s1", config, 1234, "running", {}, None)
    assert storage.get_search("s1") == s
    assert storage.get_search("nope") is None
    state = {"rng": [3, [1, 2, 3], None], "step": 17}
    updated = storage.update_search(s.id, status="stopped", state=state)
    assert updated.state == state and updated.status == "stopped" and updated.finished is not None
    assert storage.get_search("s1") == updated
    assert storage.update_search(s.id, status="running").finished is None
    assert [r.name for r in storage.list_searches()] == ["s1"]
    with pytest.raises(StorageError, match="already exists"):
        storage.create_search("s1", {}, 1)
    with pytest.raises(StorageError, match="search status"):
        storage.update_search(s.id, status="paused")
    with pytest.raises(StorageError, match="no search with id 99"):
        storage.update_search(99, status="finished")


def test_architecture_round_trip(storage):
    sid = storage.create_search("s", {}, 0).id
    gru = _arch(storage, sid, "gru", stage="new")
    mutation = {"transforms": [{"kind": "replace_activation", "node": "n3", "to": "relu"}], "p": 0.25}
    child = _arch(storage, sid, "m1", "h-m1", origin="mutant", parent_id=gru.id, stage="filter",
                  mutation=mutation, fingerprint="fp-1")  # fmt: skip
    assert storage.get_architecture(child.id) == child
    assert (child.parent_id, child.mutation, child.origin, child.fingerprint) == (gru.id, mutation, "mutant", "fp-1")
    assert json.loads(child.graph_json) == {"cell": "m1"}
    assert storage.find_architecture(sid, structural_hash="h-m1") == child
    assert storage.find_architecture(sid, fingerprint="fp-1") == child
    assert storage.find_architecture(sid, name="gru") == gru
    assert storage.find_architecture(sid, name="gru", fingerprint="fp-1") is None
    storage.set_stage(child.id, "task:arithmetic")
    assert storage.get_architecture(child.id).stage == "task:arithmetic"
    assert storage.list_architectures(sid, stage="task:arithmetic") == [storage.get_architecture(child.id)]
    assert [a.name for a in storage.list_architectures(sid)] == ["gru", "m1"]
    with pytest.raises(StorageError, match="no architecture with id 999"):
        storage.get_architecture(999)
    with pytest.raises(StorageError, match="needs a structural_hash"):
        storage.find_architecture(sid)


def test_architecture_errors_write_nothing(storage):
    sid = storage.create_search("s", {}, 0).id
    _arch(storage, sid, "gru")
    with pytest.raises(StorageError, match="no architecture with id 77"):
        _arch(storage, sid, "m1", parent_id=77)
    with pytest.raises(StorageError, match="already used"):
        _arch(storage, sid, "gru", "another-hash")
    with pytest.raises(StorageError, match="no search with id 5"):
        _arch(storage, 5, "x")
    with pytest.raises(StorageError, match="origin"):
        _arch(storage, sid, "m2", origin="alien")
    with pytest.raises(StorageError, match="limit is 128"):
        _arch(storage, sid, "m" * 200)
    assert [a.name for a in storage.list_architectures(sid)] == ["gru"]


def test_same_structural_hash_returns_existing_row(storage):
    sid = storage.create_search("s", {}, 0).id
    first, created = storage.add_architecture(
        sid, name="m1", graph_json="{}", structural_hash="same", fingerprint=None, parent_id=None,
        mutation=None, origin="mutant", stage="new",
    )  # fmt: skip
    again, created_again = storage.add_architecture(
        sid, name="m2", graph_json='{"other": 1}', structural_hash="same", fingerprint="f", parent_id=None,
        mutation={"x": 1}, origin="mutant", stage="filter",
    )  # fmt: skip
    assert created and not created_again
    assert again == first
    _arch(storage, sid, "m3", "other")
    assert _arch(storage, sid, "m3", "same") == first  # the hash wins over a name in use
    assert len(storage.list_architectures(sid)) == 2
    other_sid = storage.create_search("t", {}, 0).id  # the hash is unique per search only
    assert storage.add_architecture(
        other_sid, name="m1", graph_json="{}", structural_hash="same", fingerprint=None, parent_id=None,
        mutation=None, origin="mutant", stage="new",
    )[1]  # fmt: skip


def test_evaluation_round_trip(storage):
    sid = storage.create_search("s", {}, 0).id
    arch = _arch(storage, sid, "gru")
    hp = {"lr": 0.5, "init_scale": 1.4, "max_norm": 5, "layers": 2, "budget": 250_000}
    ev = storage.add_evaluation(arch.id, "xml", hp, "init")
    assert (ev.status, ev.hparams, ev.purpose, ev.attempts) == ("queued", hp, "init", 0)
    assert ev.hparams_hash == hparams_hash(hp)
    assert (ev.metric, ev.result, ev.worker, ev.finished, ev.diverged) == (None, None, None, None, False)
    running = storage.mark_running(ev.id, "ray:node-1")
    assert (running.status, running.worker, running.attempts) == ("running", "ray:node-1", 1)
    assert storage.mark_running(ev.id, "ray:node-2").attempts == 2  # re-dispatched after a worker died
    result = _result(0.42, curve=[0.1, 0.3, 0.42], lr_final=float("nan"))
    done = storage.record_result(ev.id, result)
    assert (done.status, done.metric, done.valid, done.test, done.epochs, done.seconds, done.params) == (
        "done", 0.42, 0.42, 0.42, 3, 1.5, 1000)  # fmt: skip
    assert done.result == {**result, "lr_final": None}  # strict JSON: NaN is stored as null
    assert done.finished is not None and done.error is None
    assert storage.evaluations(architecture_id=arch.id) == [done]
    with pytest.raises(StorageError, match="already done"):
        storage.record_result(ev.id, result)
    with pytest.raises(StorageError, match="already done"):
        storage.mark_running(ev.id, "w")

    failing = storage.add_evaluation(arch.id, "xml", {**hp, "lr": 5}, "search")
    failed = storage.record_failure(failing.id, "CompileError: boom\n" + "x" * 50_000)
    assert failed.status == "failed" and failed.error.startswith("CompileError: boom") and len(failed.error) == 20_000
    with pytest.raises(StorageError, match="lacks"):
        storage.record_result(storage.add_evaluation(arch.id, "xml", {"lr": 9}, "search").id, {"metric": 1})
    assert [e.status for e in storage.evaluations(search_id=sid, task="xml")] == ["done", "failed", "queued"]
    assert storage.evaluations(search_id=sid, task="arithmetic") == []
    assert storage.evaluations(status="failed") == [failed]


def test_same_setting_is_never_recorded_twice(storage):
    sid = storage.create_search("s", {}, 0).id
    arch = _arch(storage, sid, "gru")
    ev = storage.add_evaluation(arch.id, "xml", {"lr": 0.1, "init": 0.3}, "search")
    assert storage.add_evaluation(arch.id, "xml", {"init": 0.3, "lr": 0.1}, "reeval") is None  # key order irrelevant
    storage.record_result(ev.id, _result(0.3))
    assert storage.add_evaluation(arch.id, "xml", {"lr": 0.1, "init": 0.3}, "search") is None
    assert storage.add_evaluation(arch.id, "arithmetic", {"lr": 0.1, "init": 0.3}, "search") is not None
    assert len(storage.evaluations(architecture_id=arch.id, task="xml")) == 1
    with pytest.raises(StorageError, match="no architecture with id 404"):
        storage.add_evaluation(404, "xml", {}, "search")


def test_requeue_running(storage):
    sid = storage.create_search("s", {}, 0).id
    other = storage.create_search("t", {}, 0).id
    arch, other_arch = _arch(storage, sid, "gru"), _arch(storage, other, "gru")
    evs = [storage.add_evaluation(arch.id, "xml", {"lr": lr}, "search") for lr in (1, 2, 3, 4)]
    for ev in evs[:3]:
        storage.mark_running(ev.id, "w")
    storage.record_result(evs[0].id, _result(0.5))
    untouched = storage.mark_running(storage.add_evaluation(other_arch.id, "xml", {"lr": 1}, "search").id, "w")
    assert storage.requeue_running(sid) == 2
    assert [e.status for e in storage.evaluations(search_id=sid)] == ["done", "queued", "queued", "queued"]
    assert [e.worker for e in storage.evaluations(search_id=sid)][1:] == [None, None, None]
    assert storage.evaluations(search_id=other) == [untouched]
    assert storage.requeue_running(sid) == 0


# --------------------------------------------------- derived queries


def _populate_leaderboard(st):
    sid = st.create_search("s", {"tasks": list(TASKS)}, 0).id
    gru, lstm = _arch(st, sid, "gru"), _arch(st, sid, "lstm")
    m1 = _arch(st, sid, "m1", origin="mutant", parent_id=gru.id)
    m2 = _arch(st, sid, "m2", origin="mutant", parent_id=gru.id, stage="task:xml")  # not complete
    m3 = _arch(st, sid, "m3", origin="mutant", parent_id=gru.id)  # complete, but no xml result
    for lr, metric in ((0.1, 0.8), (0.2, 0.9)):
        _done(st, gru.id, "arithmetic", lr, metric)
    _done(st, gru.id, "arithmetic", 0.3, 0.99, diverged=True)  # diverged counts as 0
    _done(st, gru.id, "xml", 0.1, 0.4)
    _done(st, gru.id, "xml", 0.2, 0.5)
    st.record_failure(st.add_evaluation(gru.id, "xml", {"lr": 9}, "search").id, "worker died")
    st.add_evaluation(gru.id, "xml", {"lr": 8}, "search")  # queued: no score yet
    _done(st, lstm.id, "arithmetic", 0.1, 0.45)
    _done(st, lstm.id, "xml", 0.1, 0.6)
    _done(st, m1.id, "arithmetic", 0.1, 0.99)
    _done(st, m1.id, "xml", 0.1, 0.55)
    _done(st, m1.id, "xml", 0.2, float("nan"))  # a NaN metric is stored as None and scores 0
    _done(st, m2.id, "arithmetic", 0.1, 1.0)
    _done(st, m2.id, "xml", 0.1, 1.0)
    _done(st, m3.id, "arithmetic", 0.1, 1.0)
    return sid, gru, lstm, m1, m2, m3


def test_best_scores_normalizers_fitness(storage):
    sid, gru, lstm, m1, m2, m3 = _populate_leaderboard(storage)
    assert storage.best_scores(gru.id) == {"arithmetic": 0.9, "xml": 0.5}
    assert storage.best_scores(m3.id) == {"arithmetic": 1.0}
    all_best = storage.all_best_scores(sid)
    assert all_best[m1.id] == {"arithmetic": 0.99, "xml": 0.55}
    assert set(all_best) == {gru.id, lstm.id, m1.id, m2.id, m3.id}
    # The SQL GROUP BY agrees with the base class's plain-Python derivation.
    assert all_best == LeaderboardStorage.all_best_scores(storage, sid)
    assert storage.best_scores(m1.id) == LeaderboardStorage.best_scores(storage, m1.id)
    norms = storage.normalizers(sid)
    assert norms == {"arithmetic": 0.9, "xml": 0.5}
    assert storage.normalizers(sid, reference="tanh") == {}
    assert storage.fitness(gru.id, TASKS, norms) == 1.0
    assert storage.fitness(lstm.id, TASKS, norms) == pytest.approx(0.5)
    assert storage.fitness(m1.id, TASKS, norms) == pytest.approx(1.1)
    assert storage.fitness(m3.id, TASKS, norms) is None
    with pytest.raises(StorageError, match="normalizer for task 'ptb'"):
        storage.fitness(gru.id, ("ptb",), norms)


def test_frozen_normalizers_replace_the_live_ones(storage):
    sid, gru, lstm, m1, m2, m3 = _populate_leaderboard(storage)
    assert storage.frozen_normalizers(sid) is None
    storage.freeze_normalizers(sid, {"arithmetic": 0.8, "xml": 0.5})
    storage.freeze_normalizers(sid, {"arithmetic": 0.8, "xml": 0.5})  # the same again: no-op
    _done(storage, gru.id, "arithmetic", 0.77, 0.95)  # the reference improves; the normalizers do not move
    assert storage.normalizers(sid) == {"arithmetic": 0.8, "xml": 0.5}
    assert [(a.name, round(f, 9)) for a, f, _ in storage.top_k(sid, 2, TASKS)] == [("m1", 1.1), ("gru", 1.0)]
    assert dict(storage.top_k(sid, 3, TASKS)[1][2]) == pytest.approx({"arithmetic": 0.95 / 0.8, "xml": 1.0})
    with pytest.raises(StorageError, match="already has fixed normalizers"):
        storage.freeze_normalizers(sid, {"arithmetic": 0.95, "xml": 0.5})
    with pytest.raises(StorageError, match="positive finite"):
        storage.freeze_normalizers(sid, {"arithmetic": -1.0})
    assert storage.get_search("s").normalizers == {"arithmetic": 0.8, "xml": 0.5}


def test_top_k(storage):
    sid, gru, lstm, m1, m2, m3 = _populate_leaderboard(storage)
    top = storage.top_k(sid, 10, TASKS)
    assert [(a.name, round(f, 9)) for a, f, _ in top] == [("m1", 1.1), ("gru", 1.0), ("lstm", 0.5)]
    assert top[1][2] == {"arithmetic": 1.0, "xml": 1.0}
    assert top[0][2] == pytest.approx({"arithmetic": 1.1, "xml": 1.1})
    assert [a.name for a, _, _ in storage.top_k(sid, 2, TASKS)] == ["m1", "gru"]
    assert [a.name for a, _, _ in storage.top_k(sid, 10, ("arithmetic",))] == ["m3", "m1", "gru", "lstm"]
    assert storage.top_k(sid, 10, TASKS, reference="tanh") == []  # no normalizers yet


def test_normalized_fitness_and_hparams_hash():
    assert normalized_fitness({"a": 0.5, "b": 2.0}, ("a", "b"), {"a": 1.0, "b": 1.0}) == (0.5, {"a": 0.5, "b": 2.0})
    assert normalized_fitness({"a": 0.5}, ("a", "b"), {"a": 1.0, "b": 1.0})[0] is None
    with pytest.raises(StorageError, match="normalizer"):
        normalized_fitness({"a": 1.0}, ("a",), {"a": 0.0})
    assert hparams_hash({"lr": 1, "x": [1, 2]}) == hparams_hash({"x": [1, 2], "lr": 1})
    assert hparams_hash({"lr": 1}) != hparams_hash({"lr": 1.0})  # floats as-is
    assert len(hparams_hash({})) == 64
    with pytest.raises(StorageError, match="cannot hash"):
        hparams_hash({"lr": math.nan})


def test_json_values_are_strict(storage):
    sid = storage.create_search("s", {"nested": [1.5, {"x": math.inf}]}, 0).id
    assert storage.get_search("s").config == {"nested": [1.5, {"x": None}]}
    with pytest.raises(StorageError, match="cannot store search state as JSON"):
        storage.update_search(sid, state={"rng": object()})
    with pytest.raises(StorageError, match="cannot store search state as JSON"):
        storage.update_search(sid, state={"nan": math.nan, "rng": object()})
    assert storage.get_search("s").state == {}


# ------------------------------------------------------ opening files


def test_schema_revision_from_a_newer_archsearch(tmp_path, db_url):
    open_storage(db_url).close()
    with sqlite3.connect(tmp_path / "lb.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    for read_only in (False, True):
        with pytest.raises(StorageError, match="has schema 0999, unknown to this archsearch.*upgrade archsearch"):
            open_storage(db_url, read_only=read_only)


def test_non_archsearch_files_are_left_untouched(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.execute("INSERT INTO people VALUES ('ada')")
    conn.close()
    for path, message in ((text, "not a database"), (other, "not an archsearch database")):
        before = path.read_bytes()
        for read_only in (False, True):
            with pytest.raises(StorageError, match=message):
                open_storage(f"sqlite:///{path}", read_only=read_only)
        assert path.read_bytes() == before
    with sqlite3.connect(other) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["people"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("nosuchdialect://host/db", "cannot open database"),
        ("not a url", "cannot open database"),
        ("sqlite:////no/such/directory/x.db", "directory /no/such/directory does not exist"),
    ],
)
def test_unopenable_urls(url, message):
    with pytest.raises(StorageError, match=message) as info:
        open_storage(url)
    assert "\n" not in str(info.value)


def test_read_only_never_creates(tmp_path, db_url):
    with pytest.raises(StorageError, match="never creates"):
        open_storage(db_url, read_only=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match="in-memory"):
        open_storage("sqlite://", read_only=True)
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StorageError, match="empty"):
        open_storage(f"sqlite:///{tmp_path / 'empty.db'}", read_only=True)


def test_read_only_refuses_writes_and_sees_data(db_url):
    writer = open_storage(db_url)
    sid = writer.create_search("s", {}, 0).id
    reader = open_storage(db_url, read_only=True)
    assert reader.read_only and reader.get_search("s").id == sid
    with pytest.raises(StorageError, match="read-only"):
        reader.create_search("t", {}, 0)
    with pytest.raises(StorageError, match="read-only"):
        reader.requeue_running(sid)
    _arch(writer, sid, "gru")
    assert [a.name for a in reader.list_architectures(sid)] == ["gru"]  # sees later commits
    writer.close()
    reader.close()


def test_pickle_round_trip(db_url):
    st = open_storage(db_url)
    sid = st.create_search("s", {"k": 1}, 3).id
    clone = pickle.loads(pickle.dumps(st))
    assert clone.get_search("s").id == sid
    _arch(clone, sid, "gru")
    assert [a.name for a in st.list_architectures(sid)] == ["gru"]
    reader = pickle.loads(pickle.dumps(open_storage(db_url, read_only=True)))
    assert reader.read_only and reader.get_search("s").config == {"k": 1}


# ------------------------------------------------------ processes


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_import_loads_no_heavy_modules():
    proc = _run_python(
        """
        import json, sys
        import archsearch.storage
        print(json.dumps([m for m in ("torch", "ray", "sqlalchemy") if m in sys.modules]))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


WRITER = """
import sys, time
from archsearch.storage import open_storage
st = open_storage(sys.argv[1])
sid = st.get_search("s").id
arch = st.find_architecture(sid, name="gru").id
end, i = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    ev = st.add_evaluation(arch, "xml", {"lr": i}, "search")
    st.mark_running(ev.id, "w")
    st.record_result(ev.id, {"metric": i / 1e4, "valid": 0, "test": 0, "epochs": 1, "seconds": 0.1,
                             "params": 1, "diverged": False})
    i += 1
print(i)
"""

READER = """
import json, sys, time
from archsearch.storage import open_storage
st = open_storage(sys.argv[1], read_only=True)
sid = st.get_search("s").id
end, counts = time.monotonic() + float(sys.argv[2]), []
while time.monotonic() < end:
    counts.append(len(st.evaluations(search_id=sid, status="done")))
    st.top_k(sid, 100, ["xml"])
print(json.dumps(counts))
"""


def test_reader_process_reads_while_writer_process_writes(tmp_path, db_url):
    st = open_storage(db_url)
    sid = st.create_search("s", {}, 0).id
    _arch(st, sid, "gru")
    st.close()
    seconds = "2.5"
    script = lambda code: [sys.executable, "-c", code, db_url, seconds]  # noqa: E731
    writer = subprocess.Popen(script(WRITER), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = subprocess.Popen(script(READER), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w_out, w_err = writer.communicate(timeout=60)
    r_out, r_err = reader.communicate(timeout=60)
    assert writer.returncode == 0 and reader.returncode == 0, w_err + r_err
    assert "locked" not in w_err + r_err
    counts = json.loads(r_out)
    assert counts == sorted(counts) and counts[-1] > counts[0], counts[:5]
    final = open_storage(db_url, read_only=True)
    assert len(final.evaluations(search_id=sid)) == int(w_out)


# ------------------------------------------------------------- concurrent writers (the unique keys hold)
@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_concurrent_writers_never_duplicate_a_key(backend, tmp_path, request):
    import threading

    url = backend_url(backend, tmp_path, request)
    with open_storage(url) as st:
        sid = st.create_search("s", {"tasks": list(TASKS)}, 0).id
    writers, barrier, outcomes = 6, threading.Barrier(6), []

    def write(k: int) -> None:
        with open_storage(url) as st:
            barrier.wait()
            arch, created = st.add_architecture(
                sid, name="gru", graph_json=json.dumps({"cell": "gru"}), structural_hash="h-gru", fingerprint=None,
                parent_id=None, mutation=None, origin="seed", stage="complete",
            )  # fmt: skip
            barrier.wait()
            ev = st.add_evaluation(arch.id, "xml", {"lr": 1.0, "init": 1.0}, "search")  # None: already there
            outcomes.append((created, arch.id, None if ev is None else ev.id))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == writers
    assert sum(created for created, *_ in outcomes) == 1, outcomes
    assert len({arch_id for _, arch_id, *_ in outcomes}) == 1
    with open_storage(url, read_only=True) as st:
        assert len(st.list_architectures(sid)) == 1
        assert len(st.evaluations(search_id=sid)) == 1
    assert sum(ev_id is not None for *_, ev_id in outcomes) == 1, "not exactly one writer queued the setting"


def test_one_hash_identifies_a_setting():
    from archsearch.train import HyperParams

    hp = HyperParams(lr=0.5, init_scale=1.4, max_grad_norm=5.0, layers=2, params=250_000)
    assert hp.key() == hparams_hash(hp.to_dict()) == hparams_hash(HyperParams.from_dict(hp.to_dict()).to_dict())
