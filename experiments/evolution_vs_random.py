"""Evolution versus random search at an equal evaluation budget (issue 12).

    python experiments/evolution_vs_random.py --preset quick --seeds 0 1 --budget 240 --chunk-minutes 60

Runs ``archsearch search --strategy S --seed N`` for each strategy and seed into its own database under
``experiments/results/dbs/`` (committed with the JSON: they are what a later session resumes), each up to ``--budget`` evaluations, giving every unfinished search
an equal share of ``--chunk-minutes`` per invocation; rerun the command to continue (the searches resume).
After each chunk it writes ``experiments/results/evolution_vs_random_<preset>.json``:

* per search, the best fitness on the leaderboard after each evaluation (replayed from the database in the
  order evaluations finished, with the search's frozen normalizers), and the CPU time spent;
* once a search has spent its budget, its top cell *re-evaluated*: the top mutant and the GRU trained on
  ``--fresh-settings`` new settings per task (new draws and new training seeds), its fitness being
  min over tasks of (its best / the GRU's best on those same settings), so a lucky draw does not count.

``experiments/render.py`` shows the result in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

from _common import RESULTS, conditions, load, save

STRATEGIES = ("evolution", "random")


def _db(preset: str, strategy: str, seed: int) -> Path:
    return RESULTS / "dbs" / f"evo_{preset}_{strategy}_s{seed}.db"


def _url(preset: str, strategy: str, seed: int) -> str:
    return f"sqlite:///{_db(preset, strategy, seed)}"


def forget_lost(data: dict, preset: str) -> None:
    """Unfinished searches whose database is gone (a checkout without it) restart from nothing: their partial
    entry moves to ``data["lost"]`` (its CPU time still counts in what the experiment cost), never mixed with
    the new run's evaluations."""
    for name, entry in list(data["searches"].items()):
        unfinished = entry.get("evaluations", 0) < data["budget"]
        if unfinished and not _db(preset, entry["strategy"], entry["seed"]).exists():
            data.setdefault("lost", []).append({**entry, "lost_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
            del data["searches"][name]
            print(f"{name}: its database is gone; restarting it (the partial run is kept under 'lost')", flush=True)


def checkpoint(db: Path) -> None:
    """Fold the database's write-ahead log into the file, so that the committed ``.db`` alone holds every
    evaluation (its ``-wal`` file is not committed)."""
    if db.exists():
        with closing(sqlite3.connect(db)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _search_name(strategy: str, seed: int) -> str:
    return f"{strategy}-s{seed}"


def run_chunk(preset: str, strategy: str, seed: int, budget: int, seconds: float, workers: int) -> float:
    """Run (or resume) one search for at most ``seconds``; the CPU seconds it took."""
    (RESULTS / "dbs").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "archsearch", "search", "--preset", preset, "--strategy", strategy,
               "--seed", str(seed), "--name", _search_name(strategy, seed), "--db", _url(preset, strategy, seed),
               "--max-evaluations", str(budget), "--time-limit", str(max(1, int(seconds))), "--no-live",
               "--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    checkpoint(_db(preset, strategy, seed))
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def replay(url: str, name: str) -> dict:
    """The search's evaluations in finishing order and the best leaderboard fitness after each one."""
    from archsearch.search import SearchConfig, stored_train_config
    from archsearch.storage import evaluation_score, normalized_fitness, open_storage

    storage = open_storage(url, read_only=True)
    record = storage.get_search(name)
    config = SearchConfig.from_dict(record.config)
    done = sorted((e for e in storage.evaluations(search_id=record.id) if e.status == "done"),
                  key=lambda e: (e.finished, e.id))
    norms = record.normalizers or {}
    best: dict[int, dict[str, float]] = {}
    curve, top, top_id = [], None, None
    for ev in done:
        scores = best.setdefault(ev.architecture_id, {})
        scores[ev.task] = max(evaluation_score(ev.diverged, ev.metric), scores.get(ev.task, 0.0))
        fitness = normalized_fitness(scores, config.tasks, norms)[0] if norms else None
        if fitness is not None and (top is None or fitness > top):
            top, top_id = fitness, ev.architecture_id
        curve.append(top)
    mutants = [(normalized_fitness(best.get(a.id, {}), config.tasks, norms)[0], a)
               for a in storage.list_architectures(record.id) if a.origin == "mutant"] if norms else []
    ranked = sorted(((f, a) for f, a in mutants if f is not None), key=lambda t: -t[0])
    status = {"evaluations": len(done), "best_fitness_curve": curve, "status": record.status,
              "top": None if top_id is None else storage.get_architecture(top_id).name,
              "top_mutant": None if not ranked else {"name": ranked[0][1].name, "fitness": ranked[0][0],
                                                       "graph_json": ranked[0][1].graph_json},
              "counters": record.counters, "tasks": list(config.tasks), "scale": config.scale,
              "train_overrides": dict(config.train_overrides),
              "train_configs": {t: _plain(asdict(stored_train_config(record.config, t))) for t in config.tasks}}
    storage.close()
    return status


def _plain(config: dict) -> dict:
    return json.loads(json.dumps(config, default=lambda v: v.value))  # enums as their values


def reevaluate(graph_json: str, scale: str, settings: int, seed: int, jobs: int,
               train_configs: dict[str, dict]) -> dict:
    """The cell and the GRU on the same fresh settings and seeds, each task trained as the search trained it
    (``train_configs``: task -> the TrainConfig stored when the search started, whatever its scale means today):
    fitness = min over tasks of best / GRU best."""
    from archsearch.baselines import make_jobs, run_jobs
    from archsearch.cli._train import load_task

    tasks = list(train_configs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "top.json"
        path.write_text(graph_json)
        work = [job for t in tasks for job in make_jobs([str(path), "gru"], [load_task(t, None)], settings, seed,
                                                        scale, train_overrides=train_configs[t])]
        runs = list(run_jobs(work, jobs))
    best: dict[str, dict[str, float]] = {}
    for run in runs:
        who = "gru" if run["cell"] == "gru" else "top"
        value = 0.0 if run["diverged"] else float(run["metric"])
        best.setdefault(who, {})[run["task"]] = max(value, best.get(who, {}).get(run["task"], 0.0))
    ratios = {t: best["top"][t] / best["gru"][t] if best["gru"][t] > 0 else None for t in tasks}
    fitness = min((r for r in ratios.values() if r is not None), default=None)
    return {"settings": settings, "seed": seed, "ratios": ratios, "fitness": fitness, "best": best,
            "cpu_seconds": sum(r["cpu_seconds"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--budget", type=int, default=240, help="evaluations per search (default 240)")
    p.add_argument("--chunk-minutes", type=float, default=60.0, help="wall minutes for this invocation")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fresh-settings", type=int, default=6, help="settings per task of the re-evaluation")
    args = p.parse_args(argv)
    out = RESULTS / f"evolution_vs_random_{args.preset}.json"
    header = {"experiment": "evolution_vs_random", "preset": args.preset, "seeds": args.seeds,
              "budget": args.budget, "fresh_settings": args.fresh_settings}
    data = load(out, header, fresh=False)
    data.setdefault("searches", {})
    forget_lost(data, args.preset)
    session = {"start": conditions()}
    data["sessions"].append(session)
    pending = [(s, n) for n in args.seeds for s in STRATEGIES
               if data["searches"].get(_search_name(s, n), {}).get("evaluations", 0) < args.budget]
    share = args.chunk_minutes * 60 / max(1, len(pending))
    for strategy, seed in pending:
        name = _search_name(strategy, seed)
        started = time.perf_counter()
        cpu = run_chunk(args.preset, strategy, seed, args.budget, share, args.workers)
        entry = data["searches"].get(name, {"strategy": strategy, "seed": seed, "cpu_seconds": 0.0,
                                            "wall_seconds": 0.0})
        entry.update(replay(_url(args.preset, strategy, seed), name))
        entry["cpu_seconds"] += cpu
        entry["wall_seconds"] += time.perf_counter() - started
        data["searches"][name] = entry
        save(out, data)
        print(f"{name}: {entry['evaluations']}/{args.budget} evaluations, best fitness "
              f"{entry['best_fitness_curve'][-1] if entry['best_fitness_curve'] else None}", flush=True)
    for name, entry in data["searches"].items():
        if entry["evaluations"] >= args.budget and entry.get("top_mutant") and "reevaluated" not in entry:
            entry["reevaluated"] = reevaluate(entry["top_mutant"]["graph_json"], entry["scale"],
                                              args.fresh_settings, 1000 + entry["seed"], args.workers,
                                              entry.get("train_configs")
                                              or replay(_url(args.preset, entry["strategy"], entry["seed"]),
                                                        name)["train_configs"])
            save(out, data)
            print(f"{name}: top mutant re-evaluated: {entry['reevaluated']['fitness']}", flush=True)
    session["end"] = conditions()
    save(out, data)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
