"""The search loop on a real SQLite file: bookkeeping, §3.3 settings, gates, resume after kill -9."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from archsearch.errors import SearchConfigError
from archsearch.executors import InProcessExecutor
from archsearch.search import SearchConfig, SearchDriver, choose_settings
from archsearch.storage import open_storage
from archsearch.train import HyperParams, sample_hparams

TINY_TRAIN = {"max_epochs": 1, "epoch_positions": 1400, "valid_positions": 700, "test_positions": 700,
              "param_scale": 0.02}


def tiny_config(**changes) -> SearchConfig:
    base = SearchConfig(
        name="t", tasks=("arithmetic", "xml"), seeds=("lstm", "gru"), scale="tiny",
        train_overrides=TINY_TRAIN, filter_overrides={**TINY_TRAIN, "param_scale": 0.1},
        settings_per_task=2, init_settings_per_task=2, filter_threshold=0.0, gate=0.5, p_reevaluate=0.3, seed=3,
    )
    return base.with_overrides(**changes)


def run(url: str, config: SearchConfig, max_evaluations: int) -> None:
    with InProcessExecutor(1) as executor:
        SearchDriver(open_storage(url), config, executor, max_evaluations=max_evaluations).run()


def _check_bookkeeping(url: str) -> list:
    storage = open_storage(url, read_only=True)
    evals = storage.evaluations()
    keys = [(e.architecture_id, e.task, e.hparams_hash) for e in evals]
    assert len(keys) == len(set(keys)), "a setting was recorded twice"
    for e in evals:
        assert e.status in ("done", "failed", "queued"), f"evaluation {e.id} left {e.status}"
        if e.status == "done":
            assert e.metric is not None and e.seconds is not None and e.params
    return evals


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('search')}/s.db"
    run(url, tiny_config(), 30)
    return url


def test_the_loop_records_every_evaluation_once(searched):
    evals = _check_bookkeeping(searched)
    finished = [e for e in evals if e.status in ("done", "failed")]
    assert len(finished) == 30
    storage = open_storage(searched, read_only=True)
    search = storage.get_search("t")
    assert search.status == "finished"
    mutants = [a for a in storage.list_architectures(search.id) if a.origin == "mutant"]
    assert mutants, "the search should have proposed children"
    for a in mutants:
        assert a.mutation["transforms"] and a.parent_id is not None


def test_gru_fitness_is_one_at_the_end_of_initialization(searched):
    storage = open_storage(searched, read_only=True)
    top = storage.top_k(1, 100, ["arithmetic", "xml"], "gru")
    fitness = {arch.name: fit for arch, fit, _ in top}
    gru = storage.find_architecture(1, name="gru")
    init = [e for e in storage.evaluations(architecture_id=gru.id) if e.purpose == "init"]
    frozen = {t: max(e.metric for e in init if e.task == t) for t in ("arithmetic", "xml")}
    assert storage.get_search("t").normalizers == frozen
    best = storage.best_scores(gru.id)  # re-evaluations of the GRU may raise it above 1
    assert fitness["gru"] == min(best[t] / frozen[t] for t in frozen) >= 1.0


def test_seeds_get_their_initial_settings(searched):
    storage = open_storage(searched, read_only=True)
    for name in ("lstm", "gru"):
        arch = storage.find_architecture(1, name=name)
        init = [e for e in storage.evaluations(architecture_id=arch.id) if e.purpose == "init"]
        assert collections.Counter(e.task for e in init) == {"arithmetic": 2, "xml": 2}


def test_a_child_failing_the_filter_is_stored_with_its_setting(tmp_path):
    url = f"sqlite:///{tmp_path}/f.db"
    run(url, tiny_config(filter_threshold=0.99, p_reevaluate=0.0), 14)
    storage = open_storage(url, read_only=True)
    out = storage.list_architectures(1, stage="filtered_out#1")
    assert out, "every child should fail a 0.99 filter at this size"
    for arch in out:
        (ev,) = storage.evaluations(architecture_id=arch.id)
        assert ev.task == "memorize" and ev.purpose == "filter#1" and ev.status == "done"
        assert ev.metric < 0.99 and HyperParams.from_dict(ev.hparams).params == 25000
        assert ev.result["metric"] == ev.metric


def test_gate_stops_children_below_the_reference(tmp_path):
    url = f"sqlite:///{tmp_path}/g.db"
    run(url, tiny_config(gate=1.0, p_reevaluate=0.0, settings_per_task=1), 20)
    storage = open_storage(url, read_only=True)
    stages = collections.Counter(a.stage for a in storage.list_architectures(1))
    gated = [s for s in stages if s.startswith("gated_out:arithmetic")]
    normal = storage.normalizers(1, "gru")
    for arch in storage.list_architectures(1):
        if arch.stage.startswith("gated_out:arithmetic"):
            assert storage.best_scores(arch.id)["arithmetic"] <= normal["arithmetic"]
    assert gated or stages.get("complete", 0) > 2


def test_resume_with_a_contradicting_config_is_refused(searched, tmp_path):
    storage = open_storage(searched)
    before = len(storage.evaluations())
    with pytest.raises(SearchConfigError, match="tasks: stored"):
        SearchDriver(storage, tiny_config(tasks=("xml",)), InProcessExecutor(1), max_evaluations=40).run()
    assert len(storage.evaluations()) == before


# ------------------------------------------------------------------ §3.3 settings
def _pool(rng, n):
    return [sample_hparams(rng, (250_000, 1_000_000)) for _ in range(n)]


def _children(rng, parent, reference, parent_total, children=150):
    """Sources of 20 settings for each of many children, as the search draws them (§3.3)."""
    chosen = []
    for _ in range(children):
        chosen += choose_settings(rng, 20, (250_000, 1_000_000), set(), parent_ranked=parent,
                                  parent_total=parent_total, reference_best=reference)
    return chosen


def test_child_settings_proportions_many_parent_settings():
    rng = np.random.default_rng(0)
    parent = _pool(rng, 500)
    chosen = _children(rng, parent, _pool(rng, 100), parent_total=500)
    sources = collections.Counter(src for _, src in chosen)
    assert abs(sources["parent_best"] / len(chosen) - 0.8) < 0.03, sources
    best100 = {hp.key() for hp in parent[:100]}
    assert all(hp.key() in best100 for hp, src in chosen if src == "parent_best")


def test_child_settings_proportions_few_parent_settings():
    rng = np.random.default_rng(1)
    parent, reference = _pool(rng, 300), _pool(rng, 300)
    chosen = _children(rng, parent, reference, parent_total=300)
    sources = collections.Counter(src for _, src in chosen)
    for src in ("random", "reference_best", "parent_tried"):
        assert abs(sources[src] / len(chosen) - 1 / 3) < 0.03, sources
    ref100 = {hp.key() for hp in reference[:100]}
    assert all(hp.key() in ref100 for hp, src in chosen if src == "reference_best")


def test_settings_never_repeat_a_tried_one():
    rng = np.random.default_rng(2)
    parent = _pool(rng, 50)
    taken = {hp.key() for hp in parent[:40]}
    chosen = choose_settings(rng, 30, (250_000, 1_000_000), taken, parent_ranked=parent, parent_total=50)
    keys = [hp.key() for hp, _ in chosen]
    assert len(keys) == len(set(keys)) and not set(keys) & taken


# ------------------------------------------------------------------ crash and resume
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_search import run, tiny_config
run({url!r}, tiny_config(), {max_evals})
"""


def _driver(url: str, max_evals: int) -> subprocess.Popen:
    code = SCRIPT.format(tests=os.path.dirname(__file__), url=url, max_evals=max_evals)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_while_running(url: str, min_done: int, timeout: float = 300.0) -> bool:
    """Start a driver, SIGKILL it once ``min_done`` evaluations are done and one is running.

    Returns whether the kill left a running evaluation behind (it may finish between the
    last read and the signal); the state is observed in the database, not guessed from a delay.
    """
    proc = _driver(url, 30)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            statuses = _statuses(url)
            if statuses["running"] and statuses["done"] + statuses["failed"] >= min_done:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the driver ended before the state to kill it in was reached"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return _statuses(url)["running"] > 0


def _statuses(url: str) -> collections.Counter:
    path = url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return collections.Counter()
    try:
        return collections.Counter(e.status for e in open_storage(url, read_only=True).evaluations())
    except Exception:  # noqa: BLE001 - the schema may not exist yet while the driver creates it
        return collections.Counter()


def test_kill_9_at_several_points_loses_and_duplicates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    left_running = [_kill_while_running(url, min_done) for min_done in (0, 8, 16)]
    assert any(left_running), "no kill landed while an evaluation was running"
    proc = _driver(url, 30)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    evals = _check_bookkeeping(url)
    assert len([e for e in evals if e.status in ("done", "failed")]) == 30
    assert open_storage(url, read_only=True).get_search("t").status == "finished"
    # an evaluation a kill left running was re-queued and run again: it counts two attempts
    assert any(e.attempts > 1 for e in evals)


def test_leaderboard_reads_while_a_search_writes(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    writer = _driver(url, 30)
    errors, reads = [], 0
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "archsearch.cli", "leaderboard", "--db", url, "--format", "json"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            json.loads(out.stdout)
            reads += 1
        elif reads:  # before the first read the file or the search may not exist yet
            errors.append(out.stderr)
    writer.kill()
    writer.wait()
    assert not [e for e in errors if "locked" in e], errors
    assert reads >= 2 and not errors, errors


# ------------------------------------------------------------------ CLI on the searched database
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "archsearch.cli", *args], capture_output=True, text=True)


def test_leaderboard_formats(searched):
    out = _cli("leaderboard", "--db", searched, "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and {"id", "fitness", "scores", "evaluations"} <= set(rows[0])
    # the normalizers are the GRU's best at the end of initialization, frozen; its re-evaluations can only add rows,
    # so its fitness is 1.0 or above (above when a fresh setting beat the reference ones: README "fixed reference")
    assert {r["name"]: r["fitness"] for r in rows}["gru"] >= 1.0
    csv_out = _cli("leaderboard", "--db", searched, "--format", "csv", "--top", "3")
    assert csv_out.stdout.splitlines()[0].startswith("rank,id,name,parent,fitness,arithmetic,xml")
    table = _cli("leaderboard", "--db", searched, "--equations")
    assert "h_t =" in table.stdout


def test_show_and_export_with_weights_from_the_database(searched, tmp_path):
    storage = open_storage(searched, read_only=True)
    arch = storage.find_architecture(1, name="gru")
    shown = _cli("show", str(arch.id), "--db", searched)
    assert shown.returncode == 0 and "lineage" in shown.stdout and "best setting per task" in shown.stdout
    out = _cli("export", "gru", "--db", searched, "-o", str(tmp_path / "g.py"), "--weights", str(tmp_path / "g.safetensors"))
    assert out.returncode == 0, out.stderr
    from safetensors import safe_open

    with safe_open(str(tmp_path / "g.safetensors"), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    best = max((e for e in storage.evaluations(architecture_id=arch.id, task="arithmetic", status="done")),
               key=lambda e: e.metric)
    assert float(meta["valid"]) == pytest.approx(best.valid, abs=1e-6)  # retraining reproduces the search's run
    assert "layers.0.weight_h" in keys


@pytest.mark.parametrize(
    "args,message",
    [
        (["leaderboard", "--db", "sqlite:////nonexistent/dir/x.db"], "error"),
        (["leaderboard", "--db", "nosuchdialect://x"], "error"),
        (["show", "99999", "--db", "{db}"], "no architecture '99999'"),
    ],
)
def test_bad_input_is_one_clear_line(searched, args, message):
    out = _cli(*[a.replace("{db}", searched) for a in args])
    assert out.returncode == 1
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_not_an_archsearch_file_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"just some text, not a database\n")
    out = _cli("search", "--db", f"sqlite:///{path}", "--max-evaluations", "1", "--no-live")
    assert out.returncode == 1 and "archsearch: error:" in out.stderr
    assert path.read_bytes() == b"just some text, not a database\n"


def test_batched_settings_give_the_same_results_as_one_by_one(tmp_path):
    """With batch_settings=3 the driver trains compatible queued settings as one model: same numbers."""
    one, batched = f"sqlite:///{tmp_path}/one.db", f"sqlite:///{tmp_path}/batched.db"
    run(one, tiny_config(p_reevaluate=0.0, init_settings_per_task=3, batch_settings=1), 12)
    run(batched, tiny_config(p_reevaluate=0.0, init_settings_per_task=3, batch_settings=3), 12)

    def results(url):
        storage = open_storage(url, read_only=True)
        names = {a.id: a.name for a in storage.list_architectures(1)}
        return {(names[e.architecture_id], e.task, e.hparams_hash): e for e in storage.evaluations(status="done")}

    a, b = results(one), results(batched)
    assert all(e.result.get("batched", 1) == 1 for e in a.values()), "batch_settings=1 must train one by one"
    common = set(a) & set(b)
    assert len(common) >= 10
    assert any(b[k].result.get("batched", 1) > 1 for k in common), "no group was trained batched"
    for k in common:
        assert b[k].metric == pytest.approx(a[k].metric, abs=1e-4), k


def test_resume_after_the_scale_was_recalibrated_is_refused(tmp_path, monkeypatch):
    """A search stores how each task trained when it started; if a code update changes what its scale stands
    for, resuming it is refused instead of mixing incomparable evaluations."""
    from dataclasses import replace

    from archsearch.train import SCALES

    url = f"sqlite:///{tmp_path}/r.db"
    run(url, tiny_config(), 8)
    stored = open_storage(url, read_only=True).get_search("t").config["train_configs"]
    assert stored["arithmetic"]["arithmetic_max_digits"] == 1 and "xml_max_tag_length" not in stored["arithmetic"]
    monkeypatch.setitem(SCALES, "tiny", replace(SCALES["tiny"], xml_max_tag_length=6))
    storage = open_storage(url)
    before = len(storage.evaluations())
    with pytest.raises(SearchConfigError, match="xml.xml_max_tag_length: stored 4, now 6"):
        run(url, tiny_config(), 16)
    assert len(storage.evaluations()) == before
    monkeypatch.setitem(SCALES, "tiny", replace(SCALES["tiny"], xml_max_tag_length=4))
    run(url, tiny_config(), 16)  # the scale as it was: resumes
    assert len(storage.evaluations()) > before


def test_a_search_stored_before_a_train_field_existed_resumes(tmp_path):
    """A stored config without some TrainConfig field (a search started by an older version, before the field
    was added with a default that keeps the old behaviour) resumes; the fields it has are still checked."""
    import sqlite3

    path = tmp_path / "o.db"
    run(f"sqlite:///{path}", tiny_config(), 8)
    with sqlite3.connect(path) as db:
        (text,) = db.execute("SELECT config FROM searches").fetchone()
        config = json.loads(text)
        for task in config["train_configs"].values():
            del task["min_units"]
        db.execute("UPDATE searches SET config = ?", (json.dumps(config),))
    run(f"sqlite:///{path}", tiny_config(), 16)
    assert len(open_storage(f"sqlite:///{path}", read_only=True).evaluations()) >= 16


def test_exported_weights_train_with_the_config_the_search_used(searched, tmp_path, monkeypatch):
    """Export retrains the best setting as the search trained it, even after the scale was recalibrated."""
    from dataclasses import replace

    from archsearch.export import retrain_weights
    from archsearch.ir import Cell
    from archsearch.train import SCALES

    storage = open_storage(searched, read_only=True)
    arch = storage.find_architecture(1, name="gru")
    best = max((e for e in storage.evaluations(architecture_id=arch.id, task="arithmetic", status="done")),
               key=lambda e: e.metric)
    monkeypatch.setitem(SCALES, "tiny", replace(SCALES["tiny"], arithmetic_max_digits=3, arithmetic_distractor_mean=0.0))
    info = retrain_weights(Cell.from_json(arch.graph_json), "arithmetic", best.hparams, storage.get_search("t").config,
                           str(tmp_path / "w.safetensors"))
    assert info["valid"] == pytest.approx(best.valid, abs=1e-6)
