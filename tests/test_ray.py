"""The Ray executor against a real Ray (no mocks): local Ray, multi-node local clusters, driver kills.

Every test keeps Ray small (1-2 CPUs) and shuts it down afterwards. The non-slow tests
(import checks, slot arithmetic, a local-Ray smoke test, batched groups as one Ray task: a
search against the in-process executor and a group whose worker dies; each well under a
minute on a loaded 2-core machine) run in CI; the searches, node kills and driver kills are ``slow``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from archsearch.executors import EvalJob, EvalOutcome, GroupJob, InProcessExecutor  # noqa: E402
from archsearch.search import SearchConfig, SearchDriver, job_train_config, preset  # noqa: E402
from archsearch.storage import RESULT_KEYS, open_storage  # noqa: E402

P = 20 * 35  # one batch of 20 sequences of 35 steps
# A training run of a second or two: enough to exercise the whole path, not to learn much.
MICRO = dict(epoch_positions=2 * P, corpus_positions=2 * P, valid_positions=P, test_positions=P,
             eval_corpus_positions=P, max_epochs=1, patience=1, decay_epochs=1, param_scale=0.005,
             music_max_epochs=1)


def micro_config(name: str = "t", **changes) -> SearchConfig:
    base = preset("quick").with_overrides(
        name=name, settings_per_task=1, init_settings_per_task=1, seeds=("lstm", "gru"), reference="gru",
        train_overrides=MICRO, filter_overrides=MICRO, filter_threshold=0.0,
    )
    return base.with_overrides(**changes)


def ray_executor(**kwargs):
    from archsearch.executors import RayExecutor

    kwargs.setdefault("init_kwargs", {"num_cpus": 1})
    return RayExecutor(**kwargs)


@pytest.fixture
def no_ray():
    """Leave no Ray running, whatever the test did."""
    assert not ray.is_initialized()
    yield
    if ray.is_initialized():
        ray.shutdown()


def job(eval_id: int, task: str = "arithmetic", data_dir: str | None = None, **train) -> EvalJob:
    from archsearch.search_spaces import seed

    config = micro_config()  # the arithmetic training config for every task: ptb needs no files to build it
    hp = {"lr": 0.5, "init_scale": 0.1, "max_grad_norm": 5.0, "layers": 1, "params": 100_000}
    return EvalJob(eval_id, seed("lstm").to_json(), task, hp, {**job_train_config(config, "arithmetic"), **train}, seed=1,
                   data_dir=data_dir)


def drain(executor, n: int, timeout: float = 300) -> list[EvalOutcome]:
    outcomes: list[EvalOutcome] = []
    end = time.monotonic() + timeout
    while len(outcomes) < n and time.monotonic() < end:
        outcomes += executor.poll(1.0)
    assert len(outcomes) == n, f"only {len(outcomes)} of {n} outcomes within {timeout} s"
    return outcomes


def evaluations(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(
            "SELECT e.*, a.name AS arch FROM evaluations e JOIN architectures a ON a.id = e.architecture_id")]


# ====================================================================== fast
def test_import_starts_no_ray():
    code = ("import sys, archsearch.executors as e; assert 'ray' not in sys.modules; "
            "cls = e.RayExecutor; import ray; assert not ray.is_initialized(); print(cls.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RayExecutor"


def test_cluster_slots():
    from archsearch.executors import RayExecutor

    slots = RayExecutor.cluster_slots
    assert slots({"CPU": 16.0, "GPU": 4.0}, 1, 0.25) == 16
    assert slots({"CPU": 32.0, "GPU": 4.0}, 1, 0.25) == 16
    assert slots({"CPU": 32.0, "GPU": 3.0}, 1, 0.3) == 10
    assert slots({"CPU": 2.0}, 1, 0) == 2
    assert slots({"CPU": 0.0}, 1, 0) == 1  # a head without workers still gets demand for the autoscaler
    with pytest.raises(ValueError):
        RayExecutor(num_cpus=0, num_gpus=0)


def test_ray_smoke_errors_and_data_shipping(no_ray, tmp_path):
    """One local Ray: a good job, a job whose training raises, data shipped once with ray.put."""
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    words = "the cat sat on a mat <unk> and the dog ran".split()
    for split in ("train", "valid", "test"):
        (ptb / f"ptb.{split}.txt").write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(40)) + "\n")
    with ray_executor(slots=1) as ex:
        assert ex.slots == 1
        ex.submit(job(1))
        ex.submit(job(2, task="ptb", data_dir=str(tmp_path / "missing")))  # no such folder anywhere
        ex.submit(job(3, task="ptb", data_dir=str(ptb)))
        first = {o.evaluation_id: o for o in drain(ex, 3)}
        assert first[1].ok and set(RESULT_KEYS) <= set(first[1].result)
        assert not first[2].ok and "ptb: missing" in first[2].error
        assert first[3].ok, first[3].error
        # The corpus went to the object store at the first submit: workers manage without the folder.
        for f in ptb.iterdir():
            f.unlink()
        ptb.rmdir()
        ex.submit(job(4, task="ptb", data_dir=str(ptb)))
        (fourth,) = drain(ex, 1)
        assert fourth.ok, fourth.error
        assert fourth.result["metric"] == pytest.approx(first[3].result["metric"])
        activity = ex.activity()
        assert activity["workers"] == 1 and activity["retries"] == 0 and activity["nodes"]
        assert all(o.meta["node_id"] for o in (first[1], fourth))
    assert not ray.is_initialized()  # it started this Ray, so it stopped it


# ====================================================================== fast: groups
def _done_metrics(db: Path) -> dict[tuple, tuple[float, int]]:
    """(architecture, task, hparams) -> (metric, batched) of every finished evaluation."""
    storage = open_storage(f"sqlite:///{db}", read_only=True)
    names = {a.id: a.name for a in storage.list_architectures(1)}
    return {(names[e.architecture_id], e.task, e.hparams_hash): (e.metric, e.result.get("batched", 1))
            for e in storage.evaluations(status="done")}


def test_batched_search_on_ray_matches_in_process(no_ray, tmp_path):
    """batch_settings=3: groups go to Ray as one task each and give the in-process executor's numbers."""
    config = micro_config(tasks=("arithmetic", "xml"), p_reevaluate=0.0, init_settings_per_task=3, batch_settings=3)
    runs = {}
    for kind in ("inprocess", "ray"):
        db = tmp_path / f"{kind}.db"
        executor = InProcessExecutor(1, torch_threads=1) if kind == "inprocess" else ray_executor(slots=1)
        assert executor.supports_groups
        with executor:
            final = SearchDriver(open_storage(f"sqlite:///{db}"), config, executor, max_evaluations=12).run()
        assert final.done == 12 and final.failed == 0
        runs[kind] = _done_metrics(db)
    a, b = runs["inprocess"], runs["ray"]
    assert set(a) == set(b) and len(b) == 12
    assert any(batched > 1 for _, batched in b.values()), "no group was trained batched on Ray"
    for k, (metric, batched) in b.items():
        assert batched == a[k][1], k  # the same groups
        assert metric == pytest.approx(a[k][0], rel=1e-5, abs=1e-7), k


def _die_once_per_task(job: EvalJob, worker: str) -> EvalOutcome:
    """Kill the worker at the first job of the first attempt (a marker file remembers), succeed afterwards."""
    marker = Path(job.data_dir) / "died"
    if not marker.exists():
        marker.write_text(worker)
        os._exit(1)
    return EvalOutcome(job.evaluation_id, result={"metric": float(job.evaluation_id)}, worker=worker)


def test_group_worker_death_is_retried_then_every_evaluation_reported(no_ray, tmp_path):
    """A group is one task: a dead worker re-runs it whole; with no retries left, each evaluation fails."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=1, include_dashboard=False)  # one Ray for both executors: they leave it running
    group = GroupJob(tuple(job(i, data_dir=str(tmp_path)) for i in (11, 12, 13)))
    with ray_executor(slots=1, max_retries=1, job_fn=_die_once_per_task, ship_data=False) as ex:
        ex.submit(group)
        assert ex.in_flight() == 1  # one slot for the whole group
        outcomes = drain(ex, 3)
        assert [o.evaluation_id for o in outcomes] == [11, 12, 13]
        assert all(o.ok and o.attempts == 2 for o in outcomes)
        assert [o.result["metric"] for o in outcomes] == [11.0, 12.0, 13.0]
        assert ex.in_flight() == 0 and ex.activity()["retries"] == 3
    with ray_executor(slots=1, max_retries=0, job_fn=_die_always) as ex:
        ex.submit(GroupJob(tuple(job(i) for i in (21, 22, 23))))
        outcomes = drain(ex, 3)
        assert sorted(o.evaluation_id for o in outcomes) == [21, 22, 23]
        for o in outcomes:
            assert not o.ok and o.attempts == 1 and o.meta["lost"]
            assert "WorkerCrashedError" in o.error or "died" in o.error.lower()
        assert ex.activity()["lost"] == 3
    assert ray.is_initialized()


# ====================================================================== slow: retries, searches
def _die_once(job: EvalJob, worker: str) -> EvalOutcome:
    """Kill the worker process on the first attempt (a marker file remembers), succeed afterwards."""
    marker = Path(job.data_dir) / f"started-{job.evaluation_id}"
    if not marker.exists():
        marker.write_text(worker)
        os._exit(1)
    return EvalOutcome(job.evaluation_id, result={"metric": 1.0}, worker=worker)


def _die_always(job: EvalJob, worker: str) -> EvalOutcome:
    os._exit(1)


@pytest.mark.slow
def test_worker_death_is_retried_then_reported(no_ray, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    with ray_executor(slots=1, max_retries=1, job_fn=_die_once, ship_data=False) as ex:
        ex.submit(job(1, data_dir=str(tmp_path)))
        (o,) = drain(ex, 1)
        assert o.ok and o.attempts == 2
        assert ex.activity()["retries"] == 1
    with ray_executor(slots=1, max_retries=1, job_fn=_die_always) as ex:
        ex.submit(job(2))
        (o,) = drain(ex, 1)
        assert not o.ok and o.attempts == 2
        assert "WorkerCrashedError" in o.error or "died" in o.error.lower()
        assert ex.activity()["lost"] == 1


def _db_summary(db: Path) -> dict:
    rows = evaluations(db)
    with sqlite3.connect(db) as con:
        tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'"))
        stages = Counter(r[0] for r in con.execute("SELECT stage FROM architectures"))
    return {"tables": tables, "rows": rows, "stages": stages}


@pytest.mark.slow
def test_search_on_ray_gives_the_same_database(no_ray, tmp_path):
    """The same small search, in-process and on Ray: same tables, same evaluations, same results."""
    config = micro_config()
    dbs = {}
    for kind in ("inprocess", "ray"):
        db = tmp_path / f"{kind}.db"
        storage = open_storage(f"sqlite:///{db}")
        executor = InProcessExecutor(1, torch_threads=1) if kind == "inprocess" else ray_executor(slots=1)
        with executor:
            final = SearchDriver(storage, config, executor, max_evaluations=7).run()
        assert final.done + final.failed == 7
        dbs[kind] = _db_summary(db)
    a, b = dbs["inprocess"], dbs["ray"]
    assert a["tables"] == b["tables"] and a["stages"] == b["stages"]
    key = lambda r: (r["arch"], r["task"], r["hparams_hash"], r["purpose"])  # noqa: E731
    assert sorted(map(key, a["rows"])) == sorted(map(key, b["rows"]))
    by_key = {key(r): r for r in a["rows"]}
    for r in b["rows"]:
        twin = by_key[key(r)]
        assert r["status"] == twin["status"] and r["params"] == twin["params"]
        if r["status"] == "done":  # same seed, same single thread: the same training
            assert r["metric"] == pytest.approx(twin["metric"], rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_failing_training_is_recorded_and_search_goes_on(no_ray, tmp_path):
    """A music task whose pickle is corrupt: its evaluations fail on the workers, the rest carry on."""
    data = tmp_path / "music"
    data.mkdir()
    (data / "JSB Chorales.pickle").write_bytes(b"this is not a pickle")
    config = micro_config(tasks=("arithmetic", "jsb"), init_settings_per_task=2, data_dir=str(data))
    db = tmp_path / "s.db"
    with ray_executor(slots=1) as ex:
        final = SearchDriver(open_storage(f"sqlite:///{db}"), config, ex, max_evaluations=8).run()
    rows = evaluations(db)
    assert final.done == 4 and final.failed == 4
    for r in rows:
        if r["task"] == "jsb":
            assert r["status"] == "failed" and "TaskError" in r["error"] and "pickle" in r["error"].lower()
        else:
            assert r["status"] == "done" and r["error"] is None
    # failures did not stop it: arithmetic evaluations finished after the first failure
    first_failure = min(r["finished"] for r in rows if r["status"] == "failed")
    assert any(r["finished"] > first_failure for r in rows if r["status"] == "done")


@pytest.mark.slow
def test_killing_a_worker_node_retries_the_evaluation(no_ray, tmp_path):
    """Two-node local cluster: the node running an evaluation dies; it reruns elsewhere, recorded once."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        # Connect first: with every node on 127.0.0.1 the driver would attach to any node's raylet;
        # this way it sits on the head, as on a real cluster (the tracker actor lives there too).
        ray.init(address=cluster.address)
        victim = cluster.add_node(num_cpus=1)
        # longer trainings than MICRO, so there is time to kill the node while one runs
        slow = {**MICRO, "max_epochs": 6, "epoch_positions": 6 * P, "corpus_positions": 6 * P}
        config = micro_config(train_overrides=slow, filter_overrides=slow)
        storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
        killed: dict[str, int] = {}

        def watch(progress) -> None:
            if killed:
                return
            for node, info in progress.activity["nodes"].items():
                if info["running"] and node.endswith(victim.node_id[:8]):
                    killed["eval"] = info["running"][0]
                    cluster.add_node(num_cpus=1)  # where the retry goes
                    cluster.remove_node(victim, allow_graceful=False)

        with ray_executor(slots=1, max_retries=2) as ex:
            driver = SearchDriver(storage, config, ex, max_evaluations=3, on_progress=watch, progress_every=0.2)
            final = driver.run()
            retries = ex.activity()["retries"]
        assert ray.is_initialized()  # it joined a cluster it did not start: it must leave it alone
        assert killed, "no evaluation was seen running on the victim node"
        assert retries >= 1
        rows = evaluations(tmp_path / "s.db")
        assert final.done == 3 and final.failed == 0
        victim_row = [r for r in rows if r["id"] == killed["eval"]]
        assert len(victim_row) == 1 and victim_row[0]["status"] == "done"
        assert len({(r["architecture_id"], r["task"], r["hparams_hash"]) for r in rows}) == len(rows)
    finally:
        ray.shutdown()
        cluster.shutdown()


DRIVER_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO)
    sys.path.insert(0, {tests!r})
    from test_ray import micro_config
    from archsearch.executors import RayExecutor
    from archsearch.search import SearchDriver
    from archsearch.storage import open_storage

    db, address, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with RayExecutor(address=address, slots=2) as ex:
        final = SearchDriver(open_storage("sqlite:///" + db), micro_config(), ex, max_evaluations=n).run()
    print(json.dumps({{"done": final.done, "failed": final.failed}}))
""")


@pytest.mark.slow
def test_killed_driver_resumes_without_loss_or_duplicates(no_ray, tmp_path):
    from ray.cluster_utils import Cluster

    script = tmp_path / "drive.py"
    script.write_text(DRIVER_SCRIPT.format(tests=str(Path(__file__).parent)))
    db = tmp_path / "s.db"
    n = 10
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        cmd = [sys.executable, str(script), str(db), cluster.address, str(n)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 300
        while time.monotonic() < end:  # kill -9 once some are done and some are running
            time.sleep(0.5)
            rows = evaluations(db) if db.exists() else []
            status = Counter(r["status"] for r in rows)
            if status["done"] >= 3 and status["running"] >= 1:
                break
            assert proc.poll() is None, proc.stdout.read()
        else:
            pytest.fail("the driver never had finished and running evaluations at once")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        interrupted = {r["id"] for r in evaluations(db) if r["status"] == "running"}
        assert interrupted
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        rows = evaluations(db)
        status = Counter(r["status"] for r in rows)
        assert status["done"] + status["failed"] == n  # reached max_evaluations, not more
        assert status["running"] == 0
        keys = Counter((r["architecture_id"], r["task"], r["hparams_hash"]) for r in rows)
        assert max(keys.values()) == 1  # nothing evaluated twice under two ids
        for r in rows:
            if r["id"] in interrupted:  # re-queued; run once more by the new driver unless the budget ran out
                assert r["status"] == "queued" or r["attempts"] == 2, r
            elif r["status"] in ("done", "failed"):
                assert r["attempts"] == 1, r
        assert any(r["attempts"] == 2 and r["status"] == "done" for r in rows)
        with sqlite3.connect(db) as con:
            (search_status,) = con.execute("SELECT status FROM searches").fetchone()
        assert search_status == "finished"
    finally:
        cluster.shutdown()
