"""One driver per search (the lease), and counters that never drift from the rows, on real SQLite files."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from archsearch.cli import main as cli_main
from archsearch.errors import LeaseHeldError, LeaseLostError, SearchConfigError
from archsearch.executors import InProcessExecutor
from archsearch.search import SearchDriver
from archsearch.storage import DriverId, LeaderboardStorage, open_storage
from test_search import _check_bookkeeping, _driver, _statuses, tiny_config
from test_storage import postgres_server, storage, storage_url  # noqa: F401 (the contract fixtures)

SEARCH = {"tasks": ["arithmetic"]}


def _other_host(token: str = "f" * 32) -> DriverId:
    return DriverId(host="elsewhere", machine="elsewhere pid:[1]", pid=os.getpid(), token=token)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age_heartbeat(url: str, seconds: float) -> None:
    """Set every lease's heartbeat ``seconds`` into the past (what a driver that stopped beating leaves)."""
    from sqlalchemy import create_engine, text

    old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(seconds=seconds)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE searches SET lease_heartbeat = :old"), {"old": old})
    engine.dispose()


@dataclasses.dataclass
class LeaseDB:
    """A search with one architecture in the contract fixture's database, and more storage objects on it."""

    storage: LeaderboardStorage
    url: str
    search_id: int
    arch_id: int
    opened: list[LeaderboardStorage]

    def open(self, *, read_only: bool = False) -> LeaderboardStorage:
        """Another storage object on this database (another driver, or a reader).

        An in-memory database lives in its one storage object: its drivers share that object
        (threads, as in the race below) and no other object can see, lose or fence its lease.
        """
        if self.url == "sqlite://":
            return self.storage
        self.opened.append(open_storage(self.url, read_only=read_only))
        return self.opened[-1]


@pytest.fixture
def db(storage, storage_url):
    """The lease contract runs on every back-end of the storage contract fixture (test_storage.storage)."""
    url = storage_url
    sid = storage.create_search("s", SEARCH, 0).id
    arch, _ = storage.add_architecture(sid, name="a", graph_json="{}", structural_hash="h", fingerprint=None,
                                       parent_id=None, mutation=None, origin="seed", stage="init")
    lease_db = LeaseDB(storage, url, sid, arch.id, [])
    yield lease_db
    for st in lease_db.opened:
        st.close()


# ------------------------------------------------------------------ storage


def test_a_second_driver_is_refused_with_the_holder_named(db):
    first, second = db.open(), db.open()
    me, other = DriverId.current(), DriverId.current()
    assert first.acquire_lease(db.search_id, me) is None
    with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()} on host {me.host}, since .* UTC, last heartbeat"):
        second.acquire_lease(db.search_id, other)
    first.set_stage(db.arch_id, "complete")  # the holder writes on
    lease = first.get_search("s").lease
    assert lease.holder == me and lease.since <= lease.heartbeat
    first.renew_lease(db.search_id, me)
    assert first.get_search("s").lease.heartbeat >= lease.heartbeat


def test_a_holder_whose_process_ended_on_this_machine_is_taken_over_at_once(db):
    me = DriverId.current()
    dead = DriverId(host=me.host, machine=me.machine, pid=_dead_pid(), token="d" * 32)
    db.open().acquire_lease(db.search_id, dead)
    taken = db.open().acquire_lease(db.search_id, me)  # its heartbeat is fresh: only the pid says it is gone
    assert taken.holder == dead
    assert db.open(read_only=True).get_search("s").lease.holder == me


def test_a_holder_elsewhere_is_taken_over_only_when_its_heartbeat_is_stale(db):
    elsewhere = db.open()
    elsewhere.acquire_lease(db.search_id, _other_host())
    with pytest.raises(LeaseHeldError, match="pid .* on host elsewhere"):
        db.open().acquire_lease(db.search_id, DriverId.current(), timeout_s=60)
    time.sleep(0.2)  # the holder's heartbeat, stored in the database, is now 0.2 s old
    me, mine = DriverId.current(), db.open()
    assert mine.acquire_lease(db.search_id, me, timeout_s=0.1).holder.host == "elsewhere"
    assert db.open(read_only=True).get_search("s").lease.holder == me
    with pytest.raises(LeaseLostError, match="now held by pid"):
        elsewhere.renew_lease(db.search_id, _other_host())
    mine.set_stage(db.arch_id, "complete")


def test_a_stale_heartbeat_of_the_default_timeout_is_taken_over(db):
    if db.url == "sqlite://":
        pytest.skip("the heartbeat is aged by a second connection, which an in-memory database cannot have")
    db.open().acquire_lease(db.search_id, _other_host())
    _age_heartbeat(db.url, 59)
    with pytest.raises(LeaseHeldError, match="last heartbeat 59 s ago"):
        db.open().acquire_lease(db.search_id, DriverId.current())
    _age_heartbeat(db.url, 61)
    assert db.open().acquire_lease(db.search_id, DriverId.current()).holder.host == "elsewhere"


def test_take_over_fences_every_write_of_the_loser(db):
    loser, winner = db.open(), db.open()
    sid, arch_id = db.search_id, db.arch_id
    old, new = DriverId.current(), DriverId.current()
    loser.acquire_lease(sid, old)
    ev = loser.add_evaluation(arch_id, "arithmetic", {"lr": 1}, "init")
    loser.mark_running(ev.id, "w")
    assert winner.acquire_lease(sid, new, take_over=True).holder == old
    if loser is winner:  # in memory, the one storage object now writes for the winner
        loser.set_stage(arch_id, "complete")
        with pytest.raises(LeaseLostError, match=f"now held by pid {os.getpid()}"):
            loser.renew_lease(sid, old)
        assert not loser.release_lease(sid, old) and loser.get_search("s").lease.holder == new
        return
    reader = db.open(read_only=True)
    before = reader.evaluations(), reader.list_architectures(sid)
    writes = [
        lambda: loser.add_evaluation(arch_id, "arithmetic", {"lr": 2}, "init"),
        lambda: loser.add_architecture(sid, name="b", graph_json="{}", structural_hash="h2", fingerprint=None,
                                       parent_id=arch_id, mutation=None, origin="mutant", stage="new"),
        lambda: loser.set_stage(arch_id, "complete"),
        lambda: loser.mark_running(ev.id, "w2"),
        lambda: loser.record_result(ev.id, {"metric": 1, "valid": 1, "test": 1, "epochs": 1, "seconds": 1,
                                            "params": 1, "diverged": False}),
        lambda: loser.record_failure(ev.id, "late"),
        lambda: loser.update_search(sid, status="stopped"),
        lambda: loser.freeze_normalizers(sid, {"arithmetic": 1.0}),
        lambda: loser.add_counts(sid, {"proposed": 1}),
        lambda: loser.requeue_running(sid),
        lambda: loser.renew_lease(sid, old),
    ]
    for write in writes:
        with pytest.raises(LeaseLostError, match=f"now held by pid {os.getpid()}"):
            write()
    assert (reader.evaluations(), reader.list_architectures(sid)) == before
    search = reader.get_search("s")
    assert search.status == "running" and search.counters == {} and search.normalizers is None
    assert not loser.release_lease(sid, old)  # releasing what it no longer holds changes nothing
    assert reader.get_search("s").lease.holder == new
    winner.set_stage(arch_id, "complete")


def test_a_released_lease_is_free(db):
    storage, me = db.open(), DriverId.current()
    storage.acquire_lease(db.search_id, me)
    assert storage.release_lease(db.search_id, me)
    assert storage.get_search("s").lease is None
    storage.set_stage(db.arch_id, "complete")  # no lease, no fence
    assert db.open().acquire_lease(db.search_id, DriverId.current()) is None


def test_counters_change_only_with_their_rows(db):
    storage, sid, arch_id = db.open(), db.search_id, db.arch_id
    added = dict(name="b", graph_json="{}", structural_hash="h2", fingerprint=None, parent_id=arch_id,
                 mutation=None, origin="mutant", stage="filter#1", count={"proposed": 1})
    assert storage.add_architecture(sid, **added)[1]
    assert not storage.add_architecture(sid, **added)[1]  # a known graph: nothing added, nothing counted
    assert storage.add_evaluation(arch_id, "arithmetic", {"lr": 1}, "x", {"source:x:random": 1}) is not None
    assert storage.add_evaluation(arch_id, "arithmetic", {"lr": 1}, "x", {"source:x:random": 1}) is None
    storage.set_stage(arch_id, "filtered_out#1", {"filtered_out": 1})
    storage.add_counts(sid, {"proposed": 2, "duplicates": 2})
    assert storage.get_search("s").counters == {"proposed": 3, "duplicates": 2, "source:x:random": 1,
                                                "filtered_out": 1}


def test_of_two_drivers_racing_for_a_free_lease_exactly_one_wins(db):
    storages = [db.open(), db.open()]  # in memory: one object shared by the two threads
    sid = db.search_id
    for _ in range(10):
        drivers = [DriverId.current(), DriverId.current()]
        barrier, outcomes = threading.Barrier(2), [None, None]

        def race(i: int) -> None:
            barrier.wait()
            try:
                storages[i].acquire_lease(sid, drivers[i])
                outcomes[i] = "won"
            except LeaseHeldError:
                outcomes[i] = "refused"
            except Exception as e:  # noqa: BLE001 (any other outcome fails the test below)
                outcomes[i] = f"{type(e).__name__}: {e}"

        threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["refused", "won"], outcomes
        winner = outcomes.index("won")
        assert storages[winner].get_search("s").lease.holder == drivers[winner]
        assert storages[winner].release_lease(sid, drivers[winner])


# ------------------------------------------------------------------ the driver


def _tiny_run(url: str, n: int, **kwargs) -> None:
    with InProcessExecutor(1) as executor:
        SearchDriver(open_storage(url), tiny_config(), executor, max_evaluations=n, **kwargs).run()


def test_a_live_driver_elsewhere_refuses_the_search_until_its_heartbeat_is_stale(tmp_path):
    url = f"sqlite:///{tmp_path}/d.db"
    storage = open_storage(url)
    sid = storage.create_search("t", tiny_config().to_dict(), 3, driver=_other_host()).id
    with pytest.raises(LeaseHeldError, match="on host elsewhere"):
        _tiny_run(url, 2)
    reader = open_storage(url, read_only=True)
    assert reader.evaluations() == [] and reader.list_architectures(sid) == []  # refused before any write
    _age_heartbeat(url, tiny_config().lease_timeout + 1)
    _tiny_run(url, 2)
    search = reader.get_search("t")
    assert search.status == "finished" and search.lease is None  # released on a clean exit
    assert len([e for e in reader.evaluations() if e.status == "done"]) == 2


def test_a_contradicting_config_is_refused_before_the_lease_is_taken(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    open_storage(url).create_search("t", tiny_config(tasks=("xml",)).to_dict(), 3)
    with pytest.raises(SearchConfigError):
        _tiny_run(url, 2)
    assert open_storage(url, read_only=True).get_search("t").lease is None


CLI = """
import sys
sys.path.insert(0, {tests!r})
from archsearch.cli import main
from archsearch.search._config import PRESETS
from test_search import tiny_config
PRESETS["quick"] = tiny_config(name="quick")  # the real command line, with trainings of a second or two
sys.exit(main(sys.argv[1:]))
"""


def _cli_search(url: str, *extra: str) -> subprocess.Popen:
    """``archsearch search`` in a new process (the quick preset replaced by the tests' tiny search)."""
    code = CLI.format(tests=os.path.dirname(__file__))
    args = ["search", "--db", url, "--preset", "quick", "--workers", "1", "--no-live"]
    return subprocess.Popen([sys.executable, "-c", code, *args, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, procs, timeout: float = 300.0) -> None:
    """Poll the database (not the clock) until ``predicate()``; fail if a process ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for a database state"
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("archsearch: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_two_searches_started_together_exactly_one_runs_then_kill_9_and_resume(tmp_path):
    url = f"sqlite:///{tmp_path}/two.db"
    procs = [_cli_search(url, "--max-evaluations", "1000", "--time-limit", "600") for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither driver was refused"
            time.sleep(0.05)
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        assert loser.returncode == 1 and winner.poll() is None, "exactly one driver must proceed"
        line = _one_error_line(loser.communicate()[1])
        assert f"is being run by another driver (pid {winner.pid} on host" in line and "--take-over" in line
        _wait_for(lambda: _statuses(url)["running"] > 0, [winner])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate()
    # kill -9 left the lease to a dead process on this machine: a new driver takes it at once
    done = sum(_statuses(url)[s] for s in ("done", "failed"))
    resumed = _cli_search(url, "--max-evaluations", str(done + 1))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    search = open_storage(url, read_only=True).get_search("quick")
    assert search.status == "finished" and search.lease is None
    _check_bookkeeping(url)


def _rows(path) -> list:
    with sqlite3.connect(path) as conn:
        rows = [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("searches", "architectures", "evaluations")]
    conn.close()
    return rows


def test_take_over_runs_the_search_and_the_old_driver_stops_without_writing(tmp_path):
    url = f"sqlite:///{tmp_path}/take.db"
    old = _cli_search(url, "--max-evaluations", "1000", "--time-limit", "600")
    try:
        _wait_for(lambda: _statuses(url)["running"] > 0, [old])
        refused = _cli_search(url)
        _, err = refused.communicate(timeout=300)
        assert refused.returncode == 1 and f"(pid {old.pid} on host" in _one_error_line(err)
        new = _cli_search(url, "--max-evaluations", str(sum(_statuses(url).values()) + 2), "--take-over")
        _, err = new.communicate(timeout=600)
        assert new.returncode == 0, err[-2000:]
        after_new = _rows(tmp_path / "take.db")
        _, err = old.communicate(timeout=300)  # its next write finds the lease gone
    finally:
        if old.poll() is None:
            old.kill()
            old.communicate()
    assert old.returncode == 1 and "lost the lease of search 'quick'" in _one_error_line(err)
    assert _rows(tmp_path / "take.db") == after_new, "the old driver wrote after the take-over"
    _check_bookkeeping(url)
    search = open_storage(url, read_only=True).get_search("quick")
    assert search.status == "finished" and search.lease is None  # the old driver did not mark it stopped


# ------------------------------------------------------------------ counters


def counters_from_rows(url: str, tasks: tuple[str, ...]) -> dict[str, int]:
    """The driver's event counters as the architecture and evaluation rows say they must be."""
    storage = open_storage(url, read_only=True)
    search = storage.list_searches()[0]
    archs = {a.id: a for a in storage.list_architectures(search.id)}
    evals = storage.evaluations(search_id=search.id)
    purposes = collections.defaultdict(set)
    for e in evals:
        purposes[e.architecture_id].add(e.purpose)
    counts: collections.Counter = collections.Counter()
    counts["new children"] = sum(a.origin == "mutant" for a in archs.values())
    for kind, prefix in (("reevaluations", "reeval#"), ("reexamined_complete", "reexamine#")):
        counts[kind] = len({(e.architecture_id, e.purpose) for e in evals if e.purpose.startswith(prefix)})
    for arch_id, used in purposes.items():
        stage = archs[arch_id].stage
        for purpose in used:
            base, _, visit = purpose.partition("#")
            if base not in ("filter", *(f"task:{t}" for t in tasks)):
                continue  # not a pipeline stage
            v = int(visit)
            # a visit after the first starts with the filter (was filtered out) or the first task (was gated out)
            counts["reexamined"] += v > 1 and (base == "filter" or (base == f"task:{tasks[0]}" and f"filter#{v}" not in used))
            if stage == purpose:
                continue  # still undecided
            if base == "filter":
                counts["passed_filter" if f"task:{tasks[0]}#{v}" in used else "filtered_out"] += 1
                continue
            task = base[5:]
            if task != tasks[-1] and f"task:{tasks[tasks.index(task) + 1]}#{v}" in used:
                continue  # passed this gate
            later_visit = any(p.partition("#")[2].isdigit() and int(p.partition("#")[2]) > v for p in used
                              if p.startswith(("filter#", "task:")))
            completed = task == tasks[-1] and stage == "complete" and not later_visit
            counts["completed" if completed else f"gated_out:{task}"] += 1
    counts["sources"] = len(evals)
    return {k: v for k, v in counts.items() if v}


def counters_as_stored(url: str) -> dict[str, int]:
    c = collections.Counter(open_storage(url, read_only=True).list_searches()[0].counters)
    derived = {k: v for k, v in c.items()
               if not k.startswith(("source:", "rejected:", "proposed", "mutation_failures", "duplicates"))}
    derived["new children"] = (c["proposed"] - c["mutation_failures"] - c["duplicates"] - c["reexamined"]
                               - c["reexamined_complete"])
    derived["sources"] = sum(v for k, v in c.items() if k.startswith("source:"))
    return {k: v for k, v in derived.items() if v}


def test_counters_equal_the_rows_after_kill_9_and_resume(tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    proc = _driver(url, 30)
    try:
        def mutants_and_running() -> bool:
            if not _statuses(url)["running"]:
                return False
            storage = open_storage(url, read_only=True)
            return sum(a.origin == "mutant" for a in storage.list_architectures(1)) >= 3

        _wait_for(mutants_and_running, [proc])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    resumed = _driver(url, 30)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-2000:]
    tasks = tiny_config().tasks
    assert counters_as_stored(url) == counters_from_rows(url, tasks)
    assert counters_as_stored(url)["new children"] >= 3


def test_a_version_1_database_is_refused_in_one_line_then_upgrades_with_its_counters(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine, text

    from archsearch.storage import _migrate

    path = tmp_path / "v1.db"
    engine = create_engine(f"sqlite:///{path}")
    state = {"step": 9, "counters": {"proposed": 9, "duplicates": 2, "filtered_out": 3}}
    with engine.begin() as conn:  # schema 1 as archsearch 0.1.0 wrote it: counters inside the state
        command.upgrade(_migrate._config(conn), "0001")
        conn.execute(text("INSERT INTO searches (name, config, seed, status, state, created) "
                          "VALUES ('quick', '{}', 0, 'stopped', :state, '2026-01-01 00:00:00')"),
                     {"state": json.dumps(state)})
    engine.dispose()
    before = path.read_bytes()
    out = subprocess.run([sys.executable, "-m", "archsearch.cli", "search", "--db", f"sqlite:///{path}",
                          "--max-evaluations", "1", "--no-live"], capture_output=True, text=True)
    assert out.returncode == 1 and "archsearch db upgrade" in _one_error_line(out.stderr)
    assert path.read_bytes() == before
    assert cli_main(["db", "upgrade", "--db", f"sqlite:///{path}"]) == 0
    (search,) = open_storage(f"sqlite:///{path}", read_only=True).list_searches()
    assert search.counters == state["counters"] and search.state == {"step": 9} and search.lease is None
