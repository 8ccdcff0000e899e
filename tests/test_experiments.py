"""experiments/render.py: README sections rewritten from results JSON, deterministically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

RENDER = Path(__file__).resolve().parent.parent / "experiments" / "render.py"
CELLS = ["tanh", "lstm-f", "lstm", "gru", "mut1"]
LEVEL = {"tanh": 0.30, "lstm-f": 0.28, "lstm": 0.62, "gru": 0.66, "mut1": 0.70}


def _table1(scale: str, settings: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    runs = [{"cell": c, "task": t, "setting": s, "metric": float(LEVEL[c] * (1 if t == "arithmetic" else 0.7)
                                                                  + 0.03 * rng.standard_normal()),
             "cpu_seconds": 10.0, "seconds": 20.0}
            for t in ("arithmetic", "xml") for s in range(settings) for c in CELLS]
    start = {"load_average": [3.0, 2.0, 1.0]}
    return {"experiment": "table1", "scale": scale, "settings": settings, "seed": 0, "tasks": ["arithmetic", "xml"],
            "cells": CELLS, "runs": runs, "sessions": [{"start": start, "end": start, "wall_seconds": 7200.0, "runs": 1}]}


def _render(readme: Path, results: Path, benchmarks: Path | None = None) -> str:
    extra = ["--benchmarks", str(benchmarks)] if benchmarks else []
    out = subprocess.run([sys.executable, str(RENDER), "--readme", str(readme), "--results", str(results), *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _render_benchmarks(readme: Path, bench: Path, *sections: str) -> str:
    """A README of the marked ``sections`` only, rendered from the benchmark JSON in ``bench`` (no experiments)."""
    readme.write_text("".join(f"<!-- experiments:{s} -->\n<!-- /experiments:{s} -->\n" for s in sections))
    empty = readme.parent / "empty"
    empty.mkdir(exist_ok=True)
    _render(readme, empty, bench)
    return readme.read_text()


def test_render_fills_marked_sections_and_is_idempotent(tmp_path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "table1_tiny.json").write_text(json.dumps(_table1("tiny", 4, 1)))
    (results / "table1_small.json").write_text(json.dumps(_table1("small", 3, 2)))
    est = {"value": 1.9, "low": 1.4, "high": 2.3}
    sep = {"experiment": "separation", "scale": "tiny", "measurements": [{
        "command": "archsearch baselines --scale tiny", "wall_seconds": 270.0, "cpu_seconds": 480.0,
        "separation": {"arithmetic": {"estimate": est, "paper": 3.03}, "xml": {"estimate": None, "paper": 1.33}},
        "start": {"load_average": [0.5, 0, 0]}, "end": {"load_average": [2.0, 0, 0]}}]}
    (results / "separation_tiny.json").write_text(json.dumps(sep))
    small = {"value": 1.8, "low": 1.7, "high": 1.9}
    newest = {**sep["measurements"][0], "wall_seconds": 1500.0, "separation": {"arithmetic": {"estimate": small},
                                                                               "xml": {"estimate": est}}}
    older = {**newest, "wall_seconds": 1400.0, "separation": {"arithmetic": {"estimate": {**small, "value": 1.6}},
                                                               "xml": {"estimate": est}}}
    (results / "separation_small.json").write_text(json.dumps({**sep, "scale": "small",
                                                               "measurements": [older, newest]}))
    readme = tmp_path / "README.md"
    prose = "# Title\n\nProse stays.\n\n"
    readme.write_text(prose + "<!-- experiments:table1 -->\nold\n<!-- /experiments:table1 -->\n\nmiddle\n\n"
                      "<!-- experiments:separation -->\n<!-- /experiments:separation -->\n\n<!-- other -->\n")
    assert "rewritten" in _render(readme, results)
    text = readme.read_text()
    assert text.startswith(prose) and "\nmiddle\n" in text and text.endswith("<!-- other -->\n") and "old" not in text
    table = text[text.index("**Scale `tiny`**"):text.index("**Scale `small`**")]
    assert "arithmetic 4/4, xml 4/4" in table
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ") and "cell" not in line}
    assert set(rows) == set(CELLS)
    assert "| 0.295 |" in rows["tanh"] and "| 0.892 |" in rows["lstm"]  # the paper's Table 1 beside ours
    assert "(paper 3.03)" in table and "xml" in table and "0.80 wall-hours" not in table and "2.00 wall-hours" in table
    assert "Spearman rank correlation of the cells' bests with Table 1: arithmetic +" in table
    assert "between `tiny` and `small`: arithmetic +" in text
    assert "| `tiny` | – | 1.90 (1.40–2.30) | – | 4.5 min | 8.0 min | 1 | 0.5 → 2.0 |  |" in text
    assert "`archsearch baselines --scale tiny --batch-settings 1`" in text  # made before the option: one by one
    # each scale's newest run against issue 12's targets (experiments/separation.py TARGETS)
    assert ("`tiny`, newest run (–): arithmetic 1.90 (≥ 1.5: met), wall 4.50 min (≤ 5 min: met); 2 of 2 targets "
            "met. Runs with the scale as it is now (the same training config): 1, arithmetic 1.90, xml –, wall 4.5 min") in text
    assert ("`small`, newest run (–): arithmetic 1.80 (≥ 2: **not met**), xml 1.90 (≥ 1.25: met), wall 25.00 min "
            "(≤ 20 min: **not met**); 1 of 3 targets met. Runs with the scale as it is now (the same training "
            "config): 2, arithmetic 1.60–1.80, xml 1.90, wall 23.3–25.0 min (0 within 20 min") in text
    assert "unchanged" in _render(readme, results) and readme.read_text() == text


def test_render_without_results_says_so(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- experiments:table1 -->\n<!-- /experiments:table1 -->\n")
    (tmp_path / "empty").mkdir()
    _render(readme, tmp_path / "empty")
    assert "No Table 1 results yet" in readme.read_text()


def test_render_evolution_and_calibration_sections(tmp_path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    curve = [None] * 10 + [1.0] * 20 + [1.04] * 10
    evo = {"experiment": "evolution_vs_random", "preset": "quick", "seeds": [0], "budget": 40, "fresh_settings": 6,
           "sessions": [], "runs": [], "searches": {
               "evolution-s0": {"evaluations": 40, "best_fitness_curve": curve, "cpu_seconds": 7200.0,
                                "counters": {"proposed": 9, "filtered_out": 2, "completed": 3},
                                "top_mutant": {"name": "lstm~ab", "fitness": 1.04}, "reevaluated": {"fitness": 0.97}},
               "random-s0": {"evaluations": 25, "best_fitness_curve": curve[:25], "cpu_seconds": 3600.0,
                             "top_mutant": None}},
           "lost": [{"strategy": "evolution", "seed": 1, "evaluations": 12, "best_fitness_curve": curve[:12],
                     "cpu_seconds": 1800.0}]}
    (results / "evolution_vs_random_quick.json").write_text(json.dumps(evo))
    config = {"max_epochs": 40, "epoch_positions": 35000, "batch_size": 20, "unroll": 35, "param_scale": 0.1,
              "arithmetic_max_digits": 1, "arithmetic_distractor_mean": 3.0}
    runs = [{"cell": c, "hparams": {"lr": 0.5}, "cpu_seconds": 20.0, "history": [{"valid": LEVEL[c]}]}
            for c in ("tanh", "lstm-f", "lstm", "gru")]
    (results / "calibrate_a.json").write_text(json.dumps({"name": "a", "task": "arithmetic", "config": config,
                                                          "runs": runs}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- experiments:evolution -->\n<!-- /experiments:evolution -->\n"
                      "<!-- experiments:calibration -->\n<!-- /experiments:calibration -->\n")
    _render(readme, results)
    text = readme.read_text()
    assert "| evolution-s0 | 40 | – / 1.000 / 1.000 / 1.040 | 1.040 (0.970) | 9 / 2 / 3 | 2.00 |" in text
    assert "| random-s0 | 25 | – / 1.000 / – / – | – | 0 / 0 / 0 | 1.00 |" in text
    assert ("Restarted from nothing after their databases were lost (not counted above): evolution-s1 after 12 "
            "evaluations, best fitness 1.000, 0.50 CPU hours.") in text
    assert "| a | arithmetic | ≤ 1 digit, 3 distractors/gap | 0.1 | 2,000 | 0.5 | 0.300 | 0.280 | 0.620 | 0.660 | 2.07 |" in text


def test_render_soak_section_from_benchmark_json(tmp_path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    conditions = {"host": "vm", "cpus": 2, "torch": "2.x", "load_before": [1.44, 0, 0], "load_after": [3.0, 0, 0],
                  "workers": 1, "cache_size": 16, "preset": "quick", "seeds": ["lstm", "gru"], "wall_s": 805.6,
                  "evaluations": 500, "architectures": 65}
    summary = {"warmup_evaluations": 125, "first_third_median_mb": 616.3, "last_third_median_mb": 680.0,
               "change": 0.1034, "peak_mb": 717.4, "flat": False}
    (bench / "soak_500.json").write_text(json.dumps({"conditions": conditions, "summary": summary, "samples": []}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- experiments:soak -->\n<!-- /experiments:soak -->\n")
    (tmp_path / "empty").mkdir()
    _render(readme, tmp_path / "empty", bench)
    text = readme.read_text()
    assert "| lstm gru | 500 (65) | 13.4 min | 1.4 → 3.0 | 125 | 616.3 → 680.0 MB (+10.3%) | 717.4 MB | **no** |" in text
    _render(readme, tmp_path / "empty", tmp_path / "empty")
    assert "No soak yet" in readme.read_text()


def test_render_speed_sections_from_benchmark_json(tmp_path) -> None:
    """Issue 15's tables: each seed over its PyTorch reference (a 3-layer nn.LSTM for the 3-layer seeds), and the
    filter's minibatches and seconds over the passing runs."""
    bench = tmp_path / "bench"
    bench.mkdir()
    ms = {"nn.LSTM": 2.0, "nn.GRU": 4.0, "nn.LSTM x3": 10.0, "lstm": 5.0, "gru": 4.4, "gf-lstm": 30.0,
          "lstm (autograd)": 6.25, "gru (torch-ops)": 5.5}  # --extras autograd torch-ops, for one cell each
    (bench / "cell_speed.json").write_text(json.dumps({
        "date": "2026-12-03T09:43:51+00:00", "torch": "2.x", "device": "CPU", "batch": 20, "unroll": 35, "repeats": 7,
        "steps": 2, "cells": ["lstm", "gru", "gf-lstm"], "runs": [{"hidden": 64, "threads": 1, "load_average_before": 0.96,
                                                                   "ms_per_step": ms}]}))
    runs = [{"cell": "lstm", "seed": s, "passed": s != 2, "minibatches": 1000 + 100 * s, "seconds": 10.0 + s}
            for s in range(4)]
    (bench / "memorize_filter.json").write_text(json.dumps({
        "date": "2026-12-03T09:41:29+00:00", "torch": "2.x", "threads": 1, "scale": "small", "runs": runs,
        "hparams": {"lr": 0.5, "init_scale": 2.0, "max_grad_norm": 10.0, "layers": 1, "params": 25000},
        "load_average_before": 1.2, "load_average_after": 1.1,
        "summary": {"lstm": {"passed": 3, "runs": 4, "median_seconds_to_pass": 11.0}}}))
    window = {"hidden": 64, "load_average_before": 1.5, "max_abs_diff_float64": {"per-step": 1e-14, "vectorized": 3e-14},
              "ms_per_step": {"nn.LSTM": 4.0, "compiled": 8.0, "per-step": 8.0, "vectorized": 6.0}}
    (bench / "lstm_window_function.json").write_text(json.dumps({"measurements": [
        {"date": "2026-12-03T10:05:00+00:00", "torch": "2.x", "threads": 1, "runs": [window]}]}))
    ab = [{"mode": "autograd", "evaluations": 10, "wall_seconds": 240.0}, {"mode": "generated", "evaluations": 12,
                                                                          "wall_seconds": 240.0}]
    native = [{"mode": "autograd", "evaluations": 10, "wall_seconds": 240.0}, {"mode": "native", "evaluations": 15,
                                                                          "wall_seconds": 240.0}]
    (bench / "quick_search_ab.json").write_text(json.dumps({"measurements": [  # before --modes, then with it
        {"date": "2026-12-03T12:30:00+00:00", "minutes": 4, "load_average_before": 0.2, "runs": ab,
         "evaluations_per_minute": {"autograd": 2.5, "generated": 3.0}},
        {"date": "2026-12-03T16:30:00+00:00", "minutes": 4, "load_average_before": 0.3, "runs": native,
         "modes": ["autograd", "native"], "evaluations_per_minute": {"autograd": 2.5, "native": 3.75}}]}))
    batched = [{"date": f"2026-12-0{day}T18:00:00+00:00", "torch": "2.x", "device": "CPU", "native": state,
                "load_average_before": 1.0, "load_average_after": 2.0, "note": note,
                "rows": [{"cell": "lstm", "threads": 1, "units": 50, "sequential_per_minute": 2.0, "k": 5,
                          "batched_per_minute": rate}]}
               for day, state, note, rate in ((1, "on", "", 3.0), (2, "off (x)", "old", 4.0), (3, "on", "new", 5.0))]
    (bench / "batched.json").write_text(json.dumps({"measurements": batched}))
    readme = tmp_path / "README.md"
    text = _render_benchmarks(readme, bench, "batched", "quick_search_ab", "cell_speed", "memorize_filter",
                              "window_function")
    assert "| lstm / nn.LSTM | gru / nn.GRU | gf-lstm / nn.LSTM x3 |" in text
    assert "| gf-lstm ms | lstm: compiled / autograd | gru: compiled / torch ops |" in text
    assert "| 64 | 1 | 1.0 | 2.50x | 1.10x | 3.00x | 5.00 | 4.40 | 30.00 | 0.80 | 0.80 |" in text
    assert "| lstm | 3/4 | 1,000–1,300 | 10.0–13.0 | 11.0 |" in text  # the failed seed 2 is not a time to pass
    assert "| 2026-12-03 10:05 | 64 | 1.5 | 4.00 | 8.00 | 8.00 | 6.00 | 1.00 | 0.75 | 1.50 | 3e-14 |" in text
    assert "| 2026-12-03 12:30 | 4 | 0.2 | autograd → generated | 10 / 4.0 | 12 / 4.0 | 2.50 | 3.00 | 1.20x |" in text
    assert "| 2026-12-03 16:30 | 4 | 0.3 | autograd → native | 10 / 4.0 | 15 / 4.0 | 2.50 | 3.75 | 1.50x |" in text
    assert "2026-12-01" not in text  # the newest two measurements only
    assert ("**2026-12-02 18:00 UTC**, CPU, native elementwise stages off (x), load average 1.0 → 2.0, torch 2.x: "
            "old.") in text
    assert "| lstm | 1 | 50 | 2.0 | 5 | 4.0 | 2.00x |" in text and "| lstm | 1 | 50 | 2.0 | 5 | 5.0 | 2.50x |" in text
    _render(readme, tmp_path / "empty", tmp_path / "empty")
    assert "No cell-speed run yet" in readme.read_text() and "No filter benchmark yet" in readme.read_text()
    assert "No batched-training measurement yet" in readme.read_text()
    assert "No window-function run yet" in readme.read_text() and "No paired quick-search run" in readme.read_text()


def test_cell_speed_keeps_every_run_and_marks_its_targets(tmp_path) -> None:
    """Each run of benchmarks/cell_speed.py adds a line to the file's history (an older file without one becomes
    its first line); the README shows every line with the ratios within issue 15's targets in bold, and the
    latest run's tally."""
    sys.path.insert(0, str(RENDER.parent.parent / "benchmarks"))
    from cell_speed import TARGETS, with_history

    def record(date: str, hm: float, lstm200: float) -> dict:
        runs = [{"hidden": 64, "threads": 1, "load_average_before": 0.1,
                 "ms_per_step": {"nn.LSTM": 2.0, "nn.LSTM x3": 10.0, "lstm": 2.8, "hm-lstm": 10.0 * hm}},
                {"hidden": 200, "threads": 1, "load_average_before": 0.1,
                 "ms_per_step": {"nn.LSTM": 10.0, "nn.LSTM x3": 30.0, "lstm": 10.0 * lstm200, "hm-lstm": 90.0}}]
        return {"date": date, "torch": "2.x", "device": "CPU", "batch": 20, "unroll": 35, "repeats": 7, "steps": 2,
                "cells": ["lstm", "hm-lstm"], "runs": runs, "code": f"c{date[11:13]}"}

    old = record("2026-12-03T09:00:00+00:00", 2.6, 1.1)  # a file written before the history existed
    new = with_history(record("2026-12-03T10:00:00+00:00", 2.4, 1.3), old)
    assert [h["code"] for h in new["history"]] == ["c09", "c10"]
    assert new["targets"]["hm-lstm"] == {"64": TARGETS["hm-lstm"][64]}
    assert [h["code"] for h in with_history(new, new)["history"]] == ["c09", "c10", "c10"]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "cell_speed.json").write_text(json.dumps(new))
    text = _render_benchmarks(tmp_path / "README.md", bench, "cell_speed")
    assert "| lstm H=64 (≤ 1.5x) | lstm H=200 (≤ 1.2x) | gf-lstm H=64 (≤ 2.5x) | hm-lstm H=64 (≤ 2.5x) |" in text
    assert "| 2026-12-03 09:00 | c09 | 2.x | **1.40x** | **1.10x** | – | 2.60x |" in text
    assert "| 2026-12-03 10:00 | c10 | 2.x | **1.40x** | 1.30x | – | **2.40x** |" in text
    assert "The latest run meets 2 of the 3 targets it measured." in text


def test_evolution_replay_agrees_with_the_leaderboard(tmp_path) -> None:
    """The experiment's replay of a search (best fitness after each evaluation) ends where the leaderboard is."""
    sys.path.insert(0, str(RENDER.parent))
    from evolution_vs_random import replay
    from test_search_rules import CannedExecutor, config

    from archsearch.search import SearchDriver
    from archsearch.storage import open_storage

    url = f"sqlite:///{tmp_path}/e.db"
    SearchDriver(open_storage(url), config(name="e"), CannedExecutor(), max_evaluations=150).run()
    status = replay(url, "e")
    storage = open_storage(url, read_only=True)
    record = storage.get_search("e")
    top = storage.top_k(record.id, 100, list(record.config["tasks"]), "gru")
    curve = [v for v in status["best_fitness_curve"] if v is not None]
    assert status["evaluations"] == 150 and len(status["best_fitness_curve"]) == 150
    assert curve == sorted(curve) and curve[-1] == max(f for _, f, _ in top)
    mutants = [(f, a.name) for a, f, _ in top if a.origin == "mutant"]
    assert status["top_mutant"]["fitness"] >= max(mutants)[0] - 1e-12


def test_evolution_restarts_a_search_whose_database_is_gone(tmp_path, monkeypatch) -> None:
    """A new checkout without an unfinished search's database: that search starts over, its partial entry is
    kept under 'lost'; a finished search (all it needs is in the JSON) and one whose database is there stay."""
    sys.path.insert(0, str(RENDER.parent))
    import evolution_vs_random

    monkeypatch.setattr(evolution_vs_random, "RESULTS", tmp_path)
    (tmp_path / "dbs").mkdir()
    (tmp_path / "dbs" / "evo_medium_random_s0.db").write_bytes(b"")
    entry = {"evaluations": 30, "cpu_seconds": 60.0, "best_fitness_curve": [1.0] * 30}
    data = {"budget": 40, "searches": {
        "evolution-s0": {**entry, "strategy": "evolution", "seed": 0},
        "random-s0": {**entry, "strategy": "random", "seed": 0},
        "random-s1": {**entry, "evaluations": 40, "strategy": "random", "seed": 1}}}
    evolution_vs_random.forget_lost(data, "medium")
    assert set(data["searches"]) == {"random-s0", "random-s1"}
    assert [(e["strategy"], e["seed"], e["evaluations"]) for e in data["lost"]] == [("evolution", 0, 30)]


def test_evolution_checkpoint_leaves_every_row_in_the_database_file(tmp_path) -> None:
    """After ``checkpoint`` the ``.db`` file alone (what gets committed, without its ``-wal``) holds every row
    written in WAL mode, even while a writer still has the database open."""
    import shutil
    import sqlite3

    sys.path.insert(0, str(RENDER.parent))
    from evolution_vs_random import checkpoint

    db = tmp_path / "search.db"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE e (x INTEGER)")
    writer.executemany("INSERT INTO e VALUES (?)", [(i,) for i in range(500)])
    writer.commit()

    def rows_in_file_alone() -> int:
        copy = tmp_path / "copy" / "search.db"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(db, copy)
        with sqlite3.connect(copy) as reader:
            return reader.execute("SELECT count(*) FROM sqlite_master WHERE name = 'e'").fetchone()[0] and \
                reader.execute("SELECT count(*) FROM e").fetchone()[0]

    assert rows_in_file_alone() == 0
    checkpoint(db)
    assert rows_in_file_alone() == 500
    writer.close()


def test_evolution_reevaluates_as_the_search_trained(tmp_path, monkeypatch) -> None:
    """The re-evaluation trains each task with the config the search stored when it started, not with what its
    scale means after a recalibration; the GRU re-evaluated against itself (same settings and seeds) ties."""
    from dataclasses import replace

    sys.path.insert(0, str(RENDER.parent))
    from evolution_vs_random import reevaluate, replay
    from test_search_rules import CannedExecutor, config

    from archsearch.search import SearchDriver
    from archsearch.search_spaces import seed
    from archsearch.storage import open_storage
    from archsearch.train import SCALES

    url = f"sqlite:///{tmp_path}/e.db"
    SearchDriver(open_storage(url), config(name="e"), CannedExecutor(), max_evaluations=20).run()
    monkeypatch.setitem(SCALES, "ci", replace(SCALES["ci"], arithmetic_max_digits=3, max_epochs=1))
    status = replay(url, "e")
    assert set(status["train_configs"]) == {"arithmetic", "xml"}
    arithmetic = status["train_configs"]["arithmetic"]
    assert arithmetic["arithmetic_max_digits"] == 8 and arithmetic["max_epochs"] == 2  # as stored, not as now
    import archsearch.baselines as baselines

    trained, run_jobs = [], baselines.run_jobs
    monkeypatch.setattr(baselines, "run_jobs", lambda jobs, *a, **k: run_jobs(trained.extend(jobs) or jobs, *a, **k))
    again = reevaluate(seed("gru").to_json(), "ci", 1, 5, 1, status["train_configs"])
    assert again["fitness"] == 1.0 and set(again["ratios"]) == {"arithmetic", "xml"}
    from archsearch.tasks import get_task
    from archsearch.train import task_config

    configs = {job["task"]: task_config(job["scale"], get_task(job["task"])).with_overrides(**job["train_overrides"])
               for job in trained}
    assert configs["arithmetic"].arithmetic_max_digits == 8 and configs["xml"].max_epochs == 2  # as stored


def test_table1_resumes_in_chunks_and_only_runs_the_tasks_asked(tmp_path) -> None:
    """Two sessions of table1.py at `ci`: the first runs only arithmetic (and stops at its chunk), the second
    completes the file without training a stored run again."""
    script = RENDER.parent / "table1.py"
    out = tmp_path / "t1.json"
    base = [sys.executable, str(script), "--scale", "ci", "--settings", "1", "--tasks", "arithmetic", "xml",
            "--cells", "tanh", "gru", "--jobs", "1", "--out", str(out)]

    def run(*extra: str) -> dict:
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(out.read_text())

    first = run("--only", "arithmetic", "--max-runs", "5")
    assert sorted((r["task"], r["cell"]) for r in first["runs"]) == [("arithmetic", "gru"), ("arithmetic", "tanh")]
    second = run()
    assert sorted((r["task"], r["cell"]) for r in second["runs"]) == [
        ("arithmetic", "gru"), ("arithmetic", "tanh"), ("xml", "gru"), ("xml", "tanh")]
    assert second["runs"][:2] == first["runs"] and [s["runs"] for s in second["sessions"]] == [2, 2]


def test_a_results_file_has_one_writer(tmp_path) -> None:
    """A second table1.py on the same results file is refused (both would rewrite the whole file, each dropping
    the other's runs); once the first writer is gone, the file can be written again."""
    sys.path.insert(0, str(RENDER.parent))
    import _common

    out = tmp_path / "t1.json"
    command = [sys.executable, str(RENDER.parent / "table1.py"), "--scale", "ci", "--settings", "1", "--tasks",
               "arithmetic", "--cells", "tanh", "--jobs", "1", "--out", str(out)]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); import _common; "
                               "_common.load(__import__('pathlib').Path(sys.argv[2]), {}, False); print('held', flush=True); "
                               "time.sleep(60)", str(RENDER.parent), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "another process is writing it" in refused.stderr
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(out.read_text())["runs"]) == 1
    assert len(_common.load(out, {}, False)["runs"]) == 1  # and this process may claim it now


def test_render_quick_run_says_when_and_on_what_it_ran(tmp_path) -> None:
    """The main job's numbers carry their date, torch and code, so a stale measurement reads as one."""
    results = tmp_path / "results"
    results.mkdir()
    cells = [{"name": "gru", "origin": "seed", "stage": "complete", "best": {"arithmetic": 0.9, "xml": 0.6}},
             {"name": "gru~1", "origin": "mutant", "stage": "gated_out:arithmetic:1", "best": {"arithmetic": 0.6}}]
    doc = {"command": "archsearch search --preset quick", "evaluations": 12, "config": {"tasks": ["arithmetic", "xml"]},
           "conditions": {"time": "2026-12-04 05:00:00 UTC", "torch": "2.13.0+cpu", "code": "abc1234",
                          "load_average": [0.4, 0, 0]},
           "timing": {"wall_seconds": 600.0, "user_seconds": 900.0, "system_seconds": 60.0, "max_rss_kb": 1.2e6},
           "counters": {"proposed": 3, "filtered_out": 1, "gated_out:arithmetic": 1, "completed": 1,
                        "source:task:random": 2},
           "normalizers": {"arithmetic": 0.9, "xml": 0.6}, "cells": cells,
           "leaderboard": [{"name": "gru", "fitness": 1.0, "scores": {"arithmetic": 1.0, "xml": 1.0}}]}
    (results / "quick_run.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- experiments:quick_run -->\n<!-- /experiments:quick_run -->\n")
    _render(readme, results, tmp_path / "empty")
    text = readme.read_text()
    assert ("Measured 2026-12-04 05:00 (torch 2.13.0+cpu, code abc1234, load average 0.4 at the start): "
            "`archsearch search --preset quick` took **10.0 min** wall (16.0 min of CPU") in text
    assert "| gru | 1.000 | 1.000 | 1.000 |" in text
