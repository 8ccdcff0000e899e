"""Rewrite the README's experiment sections from the JSON in ``experiments/results/``.

    python experiments/render.py [--readme README.md] [--results experiments/results]

A section is the text between ``<!-- experiments:NAME -->`` and ``<!-- /experiments:NAME -->``; only those
lines change, so the README's prose stays as written and every number inside a section comes from a JSON file.
Sections: ``table1`` (Table 1 per scale with bootstrap intervals, separation, Spearman rank correlations with
the paper and between scales, cost), ``separation`` (every timed separation benchmark per scale, newest first) and
``read_path`` (``benchmarks/results/read_path.json``: the read-only commands before and after issue 17) and
``soak`` (``benchmarks/results/soak*.json``: memory over one long search process), ``cell_speed`` and
``memorize_filter`` and ``window_function`` (``benchmarks/results/cell_speed.json``, ``memorize_filter.json`` and
``lstm_window_function.json``: issue 15's speed tables).
Rendering is deterministic: the same JSON gives the same README.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from archsearch.baselines import PAPER_TABLE1, best_of, bootstrap, paper_separation, paper_task, score_matrix, separation

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from separation import TARGETS  # noqa: E402  (issue 12's targets live with the benchmark that measures them)
SCALE_ORDER = ["tiny", "small", "paper"]


def _scale_key(scale: str) -> tuple[int, str]:
    return (SCALE_ORDER.index(scale) if scale in SCALE_ORDER else len(SCALE_ORDER), scale)


def _read_all(folder: Path, pattern: str) -> list[dict[str, Any]]:
    """Every JSON file in ``folder`` matching ``pattern``, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


def _load(results: Path, experiment: str) -> list[dict[str, Any]]:
    return sorted(_read_all(results, f"{experiment}_*.json"), key=lambda d: _scale_key(d["scale"]))


def _num(value: float) -> str:
    """Three significant digits, trailing zeros kept (0.962, 1.55, 0.00137)."""
    return f"{value:#.3g}"


def _interval(est) -> str:
    return f"{_num(est.value)} ({_num(est.low)}–{_num(est.high)})"


def _rho(a: list[float], b: list[float]) -> str:
    if len(a) < 3:
        return "–"
    value = spearmanr(a, b).statistic
    return "–" if value != value else f"{value:+.2f}"  # nan: a column without variation


def _bests(doc: dict[str, Any], task: str) -> dict[str, list[float]]:
    return {c: v for c, v in score_matrix(doc["runs"], task).items() if c in doc["cells"] and v}


def _workers(sessions: list[dict[str, Any]]) -> str:
    """How many parallel runs the sessions used (sessions recorded before ``jobs`` was stored used 2)."""
    jobs = sorted({s.get("jobs", 2) for s in sessions if s.get("runs")}) or [2]
    return " or ".join(map(str, jobs)) + (" worker" if jobs == [1] else " workers")


def table1_section(docs: list[dict[str, Any]]) -> str:
    """Per scale: each cell's best (95% CI) beside the paper; separation; rank correlation; cost."""
    if not docs:
        return "_No Table 1 results yet (`python experiments/table1.py`)._"
    out = []
    for doc in docs:
        tasks, cells = doc["tasks"], doc["cells"]
        scores = {task: _bests(doc, task) for task in tasks}
        cpu_hours = sum(r.get("cpu_seconds", 0.0) for r in doc["runs"]) / 3600
        wall_hours = sum(s.get("wall_seconds", 0.0) for s in doc["sessions"]) / 3600
        loads = [s[k]["load_average"][0] for s in doc["sessions"] for k in ("start", "end") if k in s]
        done = ", ".join(f"{t} {len(next(iter(scores[t].values()), []))}/{doc['settings']}" for t in tasks)
        out.append(f"**Scale `{doc['scale']}`**: best validation metric over the same settings for every cell "
                   f"(settings done per task: {done}; "
                   f"seed {doc['seed']}), 95% bootstrap interval over the settings; paper: Table 1 "
                   f"(ptb-mini beside the paper's full PTB).\n")
        header = "| cell | " + " | ".join(f"{t} | paper" for t in tasks) + " |"
        out += [header, "|---|" + "---:|---:|" * len(tasks)]
        for cell in cells:
            row = [cell]
            for task in tasks:
                values = scores[task].get(cell)
                row.append(_interval(bootstrap({cell: values}, best_of(cell))) if values else "–")
                paper = PAPER_TABLE1.get(cell, {}).get(paper_task(task))
                row.append("–" if paper is None else _num(paper))
            out.append("| " + " | ".join(row) + " |")
        seps, rhos = [], []
        for task in tasks:
            est = separation(scores[task]) if scores[task] else None
            paper = paper_separation(task)
            seps.append(f"{task} {'–' if est is None else _interval(est)} (paper {paper:.2f})")
            common = [c for c in cells if c in scores[task] and paper_task(task) in PAPER_TABLE1.get(c, {})]
            rhos.append(f"{task} {_rho([max(scores[task][c]) for c in common], [PAPER_TABLE1[c][paper_task(task)] for c in common])}")
        out.append("")
        out.append(f"Separation min(LSTM, GRU) / max(tanh, LSTM-f): {'; '.join(seps)}. "
                   f"Spearman rank correlation of the cells' bests with Table 1: {'; '.join(rhos)}. "
                   f"Cost: {len(doc['runs'])} runs, {cpu_hours:.2f} CPU-hours, {wall_hours:.2f} wall-hours with "
                   f"{_workers(doc['sessions'])} on the shared 2-core machine"
                   + (f" (load average {min(loads):.1f}–{max(loads):.1f})" if loads else "") + ".\n")
    if len(docs) > 1:
        lines = []
        for a, b in zip(docs, docs[1:]):
            for task in [t for t in a["tasks"] if t in b["tasks"]]:
                sa, sb = _bests(a, task), _bests(b, task)
                common = [c for c in a["cells"] if c in sa and c in sb]
                lines.append(f"{task} {_rho([max(sa[c]) for c in common], [max(sb[c]) for c in common])}")
            out.append(f"Spearman rank correlation between `{a['scale']}` and `{b['scale']}`: {'; '.join(lines)}.\n")
    return "\n".join(out).rstrip()


def _batch_settings(measurement: dict[str, Any]) -> int:
    """The command's --batch-settings; measurements made before the option existed ran one by one."""
    return int(measurement.get("batch_settings", 1))


def _command(measurement: dict[str, Any]) -> str:
    """The command as it would run today: with its --batch-settings written out."""
    command = measurement["command"]
    return command if "--batch-settings" in command else f"{command} --batch-settings {_batch_settings(measurement)}"


def separation_section(docs: list[dict[str, Any]]) -> str:
    """Every timed ``archsearch baselines`` separation run per scale, newest first, with its note."""
    if not docs:
        return "_No separation benchmark yet (`python experiments/separation.py`)._"
    out = ["| scale | measured | arithmetic (paper 3.03) | xml (paper 1.33) | wall | CPU | batched | load average "
           "| note |",
           "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for doc in docs:
        for m in reversed(doc["measurements"]):
            cells = []
            for task in ("arithmetic", "xml"):
                est = (m["separation"].get(task) or {}).get("estimate")
                cells.append("–" if est is None else f"{est['value']:.2f} ({est['low']:.2f}–{est['high']:.2f})")
            load = f"{m['start']['load_average'][0]:.1f} → {m['end']['load_average'][0]:.1f}"
            when = m["start"].get("time", "–")[:16]
            out.append(f"| `{doc['scale']}` | {when} | {cells[0]} | {cells[1]} | {m['wall_seconds'] / 60:.1f} min | "
                       f"{m['cpu_seconds'] / 60:.1f} min | {_batch_settings(m)} | {load} | {m.get('note', '')} |")
    out += ["", *(line for doc in docs if doc["scale"] in TARGETS for line in _separation_tally(doc))]
    out.pop()  # the blank line after the last tally; the command line below brings its own
    commands = sorted({_command(m) for doc in docs for m in doc["measurements"]})
    out.append("")
    out.append("Command: " + "; ".join(f"`{c}`" for c in commands) + " (timed by `experiments/separation.py`; CPU is "
               "the command and its worker processes; batched: the command's `--batch-settings`, 1 for one run at a "
               "time).")
    return "\n".join(out)


@dataclass(frozen=True)
class _Check:
    """One measured value against one of issue 12's targets."""

    name: str
    value: float
    bound: float
    at_least: bool  # the target is a floor (a separation), else a ceiling (minutes)
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def __str__(self) -> str:
        relation = "≥" if self.at_least else "≤"
        verdict = "met" if self.met else "**not met**"
        return f"{self.name} {self.value:.2f}{self.unit} ({relation} {self.bound:g}{self.unit}: {verdict})"


def _separation_tally(doc: dict[str, Any]) -> list[str]:
    """What the newest measurement of a scale met of issue 12's targets, and the spread of the measurements made
    with the same training config (the scale as it is now)."""
    targets, newest = TARGETS[doc["scale"]], doc["measurements"][-1]
    same = [m for m in doc["measurements"] if m.get("train_config") == newest.get("train_config")]
    checks = [_Check(task, value, targets[task], at_least=True) for task in ("arithmetic", "xml")
              if (value := _separation_value(newest, task)) is not None]
    checks.append(_Check("wall", newest["wall_seconds"] / 60, targets["minutes"], at_least=False, unit=" min"))
    walls = [m["wall_seconds"] / 60 for m in same]
    values = {task: [v for v in (_separation_value(m, task) for m in same) if v is not None]
              for task in ("arithmetic", "xml")}
    spreads = [f"{task} {_spread(v, '{:.2f}')}" for task, v in values.items()]
    return [f"`{doc['scale']}`, newest run ({newest['start'].get('time', '–')[:16]}): "
            f"{', '.join(map(str, checks))}; {sum(c.met for c in checks)} of {len(checks)} targets met. Runs with the "
            f"scale as it is now (the same training config): {len(same)}, {', '.join(spreads)}, wall "
            f"{_spread(walls, '{:.1f}')} min ({sum(w <= targets['minutes'] for w in walls)} within "
            f"{targets['minutes']:g} min, whatever the load).", ""]


def _spread(values: list[float], fmt: str) -> str:
    """``low–high`` of ``values`` in ``fmt``, one value when they agree to that precision, ``–`` when none."""
    if not values:
        return "–"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}–{high}"


def _separation_value(measurement: dict[str, Any], task: str) -> float | None:
    return ((measurement["separation"].get(task) or {}).get("estimate") or {}).get("value")


def _difficulty(task: str, config: dict[str, Any]) -> str:
    if task == "arithmetic":
        digits = config["arithmetic_max_digits"]
        return f"≤ {digits} digit{'s' * (digits > 1)}, {config['arithmetic_distractor_mean']:g} distractors/gap"
    if task == "xml":
        return f"≤ {config['xml_max_iterations']} steps, tags ≤ {config['xml_max_tag_length']} letters"
    return "–"


def calibration_section(docs: list[dict[str, Any]]) -> str:
    """One row per calibration sweep (``experiments/calibrate.py``): the task difficulty, model size and steps it
    ran, each cell's best over the sweep's settings, and the separation of those bests."""
    if not docs:
        return "_No calibration sweeps yet (`python experiments/calibrate.py`)._"
    out = ["| sweep | task | difficulty | budget scale | steps | lr | tanh | lstm-f | lstm | gru | separation | "
           "CPU s per run |", "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for doc in sorted(docs, key=lambda d: (d["task"], d["name"])):
        runs, config = doc["runs"], doc["config"]
        if not runs:
            continue
        best = {c: max(max((h["valid"] for h in r["history"]), default=0.0) for r in runs if r["cell"] == c)
                for c in {r["cell"] for r in runs}}
        sep = (min(best.get("lstm", 0), best.get("gru", 0)) / max(best.get("tanh", 0), best.get("lstm-f", 0))
               if all(c in best for c in ("tanh", "lstm-f", "lstm", "gru")) else None)
        steps = config["max_epochs"] * config["epoch_positions"] // (config["batch_size"] * config["unroll"])
        lrs = ", ".join(f"{v:g}" for v in sorted({r["hparams"]["lr"] for r in runs}))
        cpu = sum(r["cpu_seconds"] for r in runs) / len(runs)
        cells = " | ".join("–" if c not in best else f"{best[c]:.3f}" for c in ("tanh", "lstm-f", "lstm", "gru"))
        out.append(f"| {doc['name']} | {doc['task']} | {_difficulty(doc['task'], config)} | "
                   f"{config['param_scale']:g} | {steps:,} | {lrs} | {cells} | "
                   f"{'–' if sep is None else f'{sep:.2f}'} | {cpu:.0f} |")
    out += ["", "Each run: 1 layer, init 1.0, clip 5, the 1M budget times the budget scale, no early stop (the best "
            "validation accuracy over the whole run is shown). Written by `python experiments/calibrate.py`."]
    return "\n".join(out)


def memoryless_section(path: Path) -> str:
    """The no-memory bound on arithmetic per operand length (``experiments/memoryless.py``)."""
    if not path.exists():
        return "_Not computed yet (`python experiments/memoryless.py`)._"
    bounds = json.loads(path.read_text())["bounds"]
    digits = sorted(bounds, key=int)
    return "\n".join(["| operands of at most | " + " | ".join(f"{d} digit{'s' * (d != '1')}" for d in digits) + " |",
                      "|---|" + "---:|" * len(digits),
                      "| memoryless accuracy | " + " | ".join(f"{bounds[d]:.3f}" for d in digits) + " |",
                      "| largest separation it allows | " + " | ".join(f"{1 / bounds[d]:.2f}" for d in digits) + " |"])


def evolution_section(docs: list[dict[str, Any]]) -> str:
    """Evolution against random search at an equal budget (``experiments/evolution_vs_random.py``)."""
    if not docs:
        return "_Not run yet (`python experiments/evolution_vs_random.py`)._"
    out = []
    for doc in docs:
        budget = doc["budget"]
        marks = [budget // 4, budget // 2, 3 * budget // 4, budget]
        out += [f"**Preset `{doc['preset']}`**, {budget} evaluations per search, top mutant re-evaluated with "
                f"the GRU on {doc['fresh_settings']} fresh settings per task:\n",
                "| search | evaluations | best fitness after " + " / ".join(map(str, marks)) + " evaluations | "
                "top mutant: fitness (re-evaluated) | children: proposed / failed the filter / complete | "
                "CPU hours |", "|---|---:|---|---|---|---:|"]
        for name, entry in sorted(doc["searches"].items()):
            curve = entry["best_fitness_curve"]
            at = " / ".join("–" if len(curve) < m or curve[m - 1] is None else f"{curve[m - 1]:.3f}" for m in marks)
            top = entry.get("top_mutant")
            again = (entry.get("reevaluated") or {}).get("fitness")
            shown = "–" if top is None else (f"{top['fitness']:.3f} "
                                             f"({'pending' if again is None else f'{again:.3f}'})")
            counters = entry.get("counters") or {}
            children = " / ".join(str(counters.get(k, 0)) for k in ("proposed", "filtered_out", "completed"))
            out.append(f"| {name} | {entry['evaluations']} | {at} | {shown} | {children} | "
                       f"{entry['cpu_seconds'] / 3600:.2f} |")
        lost = doc.get("lost", [])
        if lost:
            out += ["", "Restarted from nothing after their databases were lost (not counted above): "
                    + "; ".join(f"{e['strategy']}-s{e['seed']} after {e['evaluations']} evaluations, best fitness "
                                f"{_fitness(e['best_fitness_curve'])}, {e['cpu_seconds'] / 3600:.2f} CPU hours"
                                for e in lost) + "."]
        out.append("")
    return "\n".join(out).rstrip()


def _fitness(curve: list[float | None]) -> str:
    return "–" if not curve or curve[-1] is None else f"{curve[-1]:.3f}"


def quick_run_section(path: Path) -> str:
    """The README's main job as measured by ``experiments/quick_run.py``."""
    if not path.exists():
        return "_Not measured yet (`python experiments/quick_run.py`)._"
    doc = json.loads(path.read_text())
    t, c, norms = doc["timing"], doc["counters"], doc["normalizers"] or {}
    tasks = doc["config"]["tasks"]
    sources = ", ".join(f"{k.split(':', 2)[2]} {v}" for k, v in sorted(c.items()) if k.startswith("source:task:"))
    gated = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("gated_out:")}
    stopped = [cell["best"][tasks[0]] for cell in doc["cells"] if cell["stage"].startswith(f"gated_out:{tasks[0]}")]
    seeds = {cell["name"]: cell["best"] for cell in doc["cells"] if cell["origin"] != "mutant"}
    when = doc.get("conditions") or {}
    code = f", code {when['code']}" if when.get("code") else ""
    load = f", load average {when['load_average'][0]:.1f} at the start" if when.get("load_average") else ""
    lines = [
        f"Measured {when.get('time', '–')[:16]} (torch {when.get('torch', '–')}{code}{load}): "
        f"`{doc['command']}` took **{t['wall_seconds'] / 60:.1f} min** wall ({(t['user_seconds'] + t['system_seconds']) / 60:.1f} "
        f"min of CPU, peak memory {t['max_rss_kb'] / 1e6:.1f} GB) and made **{doc['evaluations']} evaluations**. "
        f"Children: {c.get('proposed', 0)} proposed, {c.get('filtered_out', 0)} stopped by the filter, "
        + ", ".join(f"{v} at the {k} gate" for k, v in sorted(gated.items()))
        + f", {c.get('completed', 0)} complete; {c.get('reevaluations', 0)} re-evaluations. Where the children's "
        f"settings came from: {sources}.",
        "",
        "| cell | fitness | " + " | ".join(tasks) + " |", "|---|---:|" + "---:|" * len(tasks),
    ]
    for row in doc["leaderboard"]:
        lines.append(f"| {row['name']} | {row['fitness']:.3f} | "
                     + " | ".join(f"{row['scores'][task]:.3f}" for task in tasks) + " |")
    raw = ", ".join(f"{name} " + " / ".join(f"{best.get(task, 0):.4g}" for task in tasks)
                    for name, best in sorted(seeds.items()))
    lines += ["", f"Raw best scores ({' / '.join(tasks)}) of the seeds: {raw}; the frozen normalizers are the GRU's."]
    if stopped:
        lines.append(f"The {len(stopped)} children stopped at the {tasks[0]} gate scored {min(stopped):.3f}–"
                     f"{max(stopped):.3f} there, against the GRU's {norms.get(tasks[0], 0):.3f}.")
    return "\n".join(lines)


def read_path_section(path: Path) -> str:
    """``benchmarks/read_path.py`` before and after (median of fresh processes per command)."""
    if not path.exists():
        return "_No read-path benchmark yet (`python benchmarks/read_path.py --json benchmarks/results/read_path.json`)._"
    doc = json.loads(path.read_text())
    before, after = doc["before"]["results"], doc["after"]["results"]
    out = [f"| command | before ({doc['before']['commit']}) | after | imports after |", "|---|---:|---:|---|"]
    for name, new in after.items():
        old = before.get(name)
        was = "–" if old is None else f"{old['median_s']:.2f} s"
        out.append(f"| `{name}` | {was} | {new['median_s']:.2f} s | "
                   f"{', '.join(new['imports']) or 'neither torch nor ray'} |")
    out += ["", f"Database: {doc['database']}. {doc['conditions']}."]
    return "\n".join(out)


def soak_section(docs: list[dict[str, Any]]) -> str:
    """``benchmarks/soak.py``: resident memory over one long search process, one row per stored soak."""
    if not docs:
        return "_No soak yet (`python benchmarks/soak.py --short --json benchmarks/results/soak.json`)._"
    out = ["| seeds | evaluations (architectures) | wall | load average before → after | warm-up | "
           "median RSS, first third → last third | peak RSS | flat (within 10%) |",
           "|---|---:|---:|---|---:|---|---:|---|"]
    for doc in sorted(docs, key=lambda d: d["conditions"]["evaluations"]):
        c, s = doc["conditions"], doc["summary"]
        out.append(f"| {' '.join(c['seeds'])} | {c['evaluations']} ({c['architectures']}) | {c['wall_s'] / 60:.1f} min | "
                   f"{c['load_before'][0]:.1f} → {c['load_after'][0]:.1f} | {s['warmup_evaluations']} | "
                   f"{s['first_third_median_mb']:.1f} → {s['last_third_median_mb']:.1f} MB ({s['change']:+.1%}) | "
                   f"{s['peak_mb']:.1f} MB | {'yes' if s['flat'] else '**no**'} |")
    c = docs[0]["conditions"]
    out += ["", f"Each: the `{c['preset']}` procedure with short trainings, {c['workers']} worker, compiler caches of "
            f"{c['cache_size']} entries, on {c['host']} ({c['cpus']} CPUs, torch {c['torch']})."]
    return "\n".join(out)


def cell_speed_section(path: Path) -> str:
    """``benchmarks/cell_speed.py``: each seed's train step over its PyTorch reference, per (H, threads)."""
    if not path.exists():
        return "_No cell-speed run yet (`python benchmarks/cell_speed.py --hidden 64 200 --threads 1 2`)._"
    doc = json.loads(path.read_text())
    references = doc.get("references") or {  # files written before cell_speed recorded its references
        c: "nn.LSTM x3" if c in ("gf-lstm", "hm-lstm") else ("nn.GRU" if "gru" in c else "nn.LSTM") for c in doc["cells"]}
    _reference = references.__getitem__
    cells = [c for c in doc["cells"] if c in doc["runs"][0]["ms_per_step"]]
    first = doc["runs"][0]["ms_per_step"]
    paired = [(c, extra, label) for extra, label in (("autograd", "compiled / autograd"),  # --extras autograd
                                                     ("torch-ops", "compiled / torch ops"))  # --extras torch-ops
              for c in cells if f"{c} ({extra})" in first]
    out = ["| H | threads | load average | " + " | ".join(f"{c} / {_reference(c)}" for c in cells)
           + " | " + " | ".join(f"{c} ms" for c in cells) + "".join(f" | {c}: {label}" for c, _, label in paired)
           + " |", "|---:|---:|---:|" + "---:|" * (2 * len(cells) + len(paired))]
    for run in doc["runs"]:
        ms = run["ms_per_step"]
        ratios = " | ".join(f"{ms[c] / ms[_reference(c)]:.2f}x" for c in cells)
        times = " | ".join(f"{ms[c]:.2f}" for c in cells)
        extras = "".join(f" | {ms[c] / ms[f'{c} ({extra})']:.2f}" for c, extra, _ in paired)
        out.append(f"| {run['hidden']} | {run['threads']} | {run['load_average_before']:.1f} | {ratios} | {times}"
                   f"{extras} |")
    refs = sorted({_reference(c) for c in cells})
    out += ["", f"Reference ms per step: " + "; ".join(
        f"H={r['hidden']}, {r['threads']} thread(s): " + ", ".join(f"{ref} {r['ms_per_step'][ref]:.2f}" for ref in refs)
        for r in doc["runs"]) + f". Train step (forward + backward) of B={doc['batch']}, T={doc['unroll']}, median of "
        f"{doc['repeats']} interleaved rounds of {doc['steps']} steps; {doc['device']}, torch {doc['torch']}, "
        f"{doc['date'][:16].replace('T', ' ')} UTC."]
    if paired:
        out += ["", "Compiled: the default (the generated window backward, with native elementwise stages where they "
                "run); autograd: autograd through the step on torch ops (the code before issue 15); torch ops: the "
                "generated window backward with native stages off."]
    if doc.get("history") and doc.get("targets"):
        out += ["", cell_speed_history(doc["history"], doc["targets"])]
    return "\n".join(out)


def cell_speed_history(history: list[dict], targets: dict[str, dict[str, float]]) -> str:
    """Every run the file remembers (1 thread), each targeted ratio marked met or not, and the latest run's tally."""
    columns = [(cell, int(h), limit) for cell, by_h in targets.items() for h, limit in by_h.items()]
    out = ["Every run of the benchmark the file remembers (1 thread; each cell over its reference; **bold**: within "
           "issue 15's target, given in the header):", "",
           "| measured (UTC) | code | torch | " + " | ".join(f"{c} H={h} (≤ {t:g}x)" for c, h, t in columns) + " |",
           "|---|---|---|" + "---:|" * len(columns)]
    def targeted(entry: dict) -> list[tuple[float | None, float]]:  # (the run's ratio or None, its target) per column
        ratio = {(r["hidden"], c): v for r in entry["runs"] if r["threads"] == 1 for c, v in r["ratio"].items()}
        return [(ratio.get((h, c)), t) for c, h, t in columns]

    for entry in history:
        shown = ["–" if v is None else (f"**{v:.2f}x**" if v <= t else f"{v:.2f}x") for v, t in targeted(entry)]
        code = entry.get("code") or (f"recorded in {entry['recorded_in']}" if entry.get("recorded_in") else "–")
        out.append(f"| {entry['date'][:16].replace('T', ' ')} | {code} | {entry['torch']} | " + " | ".join(shown) + " |")
    latest = [(v, t) for v, t in targeted(history[-1]) if v is not None]
    met = sum(v <= t for v, t in latest)
    return "\n".join(out + ["", f"The latest run meets {met} of the {len(latest)} targets it measured."])


def memorize_filter_section(path: Path) -> str:
    """``benchmarks/memorize_filter.py --out``: seconds and minibatches to pass the memorization filter."""
    if not path.exists():
        return "_No filter benchmark yet (`python benchmarks/memorize_filter.py --out benchmarks/results/memorize_filter.json`)._"
    doc = json.loads(path.read_text())
    out = ["| cell | passed | minibatches to pass | seconds to pass | median seconds |", "|---|---:|---|---|---:|"]
    for cell, summary in doc["summary"].items():
        runs = [r for r in doc["runs"] if r["cell"] == cell and r["passed"]]
        batches = [r["minibatches"] for r in runs]
        seconds = [r["seconds"] for r in runs]
        span = lambda v, f: "–" if not v else f"{f(min(v))}–{f(max(v))}"  # noqa: E731
        median = summary.get("median_seconds_to_pass")
        out.append(f"| {cell} | {summary['passed']}/{summary['runs']} | {span(batches, lambda b: f'{b:,}')} | "
                   f"{span(seconds, lambda t: f'{t:.1f}')} | {'–' if median is None else f'{median:.1f}'} |")
    hp = doc["hparams"]
    out += ["", f"Scale `{doc['scale']}`'s filter, lr {hp['lr']:g}, init {hp['init_scale']:g}, clip "
            f"{hp['max_grad_norm']:g}, {hp['params']:,} parameters, {doc['threads']} thread(s), seeds "
            f"{', '.join(str(r['seed']) for r in doc['runs'] if r['cell'] == next(iter(doc['summary'])))}; load "
            f"average {doc['load_average_before']:.1f} → {doc['load_average_after']:.1f}; torch {doc['torch']}, "
            f"{doc['date'][:16].replace('T', ' ')} UTC."]
    return "\n".join(out)


def window_function_section(path: Path) -> str:
    """``benchmarks/lstm_window_function.py --json``: hand-written backward passes against the compiled LSTM."""
    if not path.exists():
        return ("_No window-function run yet (`python benchmarks/lstm_window_function.py --hidden 64 200 --json "
                "benchmarks/results/lstm_window_function.json`)._")
    out = ["| measured | H | load average | nn.LSTM ms | compiled ms | per-step ms | vectorized ms | per-step / compiled "
           "| vectorized / compiled | vectorized / nn.LSTM | largest float64 difference |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in json.loads(path.read_text())["measurements"]:
        for run in m["runs"]:
            ms, diff = run["ms_per_step"], run["max_abs_diff_float64"]
            out.append(f"| {m['date'][:16].replace('T', ' ')} | {run['hidden']} | {run['load_average_before']:.1f} | "
                       f"{ms['nn.LSTM']:.2f} | {ms['compiled']:.2f} | {ms['per-step']:.2f} | {ms['vectorized']:.2f} | "
                       f"{ms['per-step'] / ms['compiled']:.2f} | {ms['vectorized'] / ms['compiled']:.2f} | "
                       f"{ms['vectorized'] / ms['nn.LSTM']:.2f} | {max(diff.values()):.0e} |")
    return "\n".join(out)


def quick_search_ab_section(path: Path) -> str:
    """``benchmarks/quick_search_ab.py``: the quick search's evaluations per minute in two modes, paired."""
    if not path.exists():
        return "_No paired quick-search run yet (`python benchmarks/quick_search_ab.py --minutes 4`)._"
    out = ["| measured | minutes each | load average | before → after | before: evaluations / wall min "
           "| after: evaluations / wall min | before per min | after per min | after / before |",
           "|---|---:|---:|---|---|---|---:|---:|---:|"]
    for m in json.loads(path.read_text())["measurements"]:
        rate = m["evaluations_per_minute"]
        before, after = m.get("modes", ["autograd", "generated"])  # measurements before --modes: those two
        cells = {mode: ", ".join(f"{r['evaluations']} / {r['wall_seconds'] / 60:.1f}" for r in m["runs"]
                                 if r["mode"] == mode) for mode in (before, after)}
        out.append(f"| {m['date'][:16].replace('T', ' ')} | {m['minutes']:g} | {m['load_average_before']:.1f} | "
                   f"{before} → {after} | {cells[before]} | {cells[after]} | {rate[before]:.2f} | "
                   f"{rate[after]:.2f} | {rate[after] / rate[before]:.2f}x |")
    out += ["", "Modes: `autograd` (autograd through the step), `generated` (the generated window backward on torch "
            "ops), `native` (with native elementwise stages, the default)."]
    return "\n".join(out)


def batched_section(path: Path) -> str:
    """``benchmarks/batched.py``: settings per minute trained one by one and as K batched slices."""
    if not path.exists():
        return "_No batched-training measurement yet (`python benchmarks/batched.py --threads 1`)._"
    out = []
    for m in json.loads(path.read_text())["measurements"][-2:]:  # the newest two: a change and what it replaced
        out += [f"**{m['date'][:16].replace('T', ' ')} UTC**, {m['device']}, native elementwise stages {m['native']}, "
                f"load average {m['load_average_before']:.1f} → {m['load_average_after']:.1f}, torch {m['torch']}"
                + (f": {m['note']}" if m["note"] else "") + ".", "",
                "| cell | threads | units | sequential settings/min | K | batched settings/min | gain |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['cell']} | {r['threads']} | {r['units']} | {r['sequential_per_minute']:.1f} | {r['k']} | "
                f"{r['batched_per_minute']:.1f} | {r['batched_per_minute'] / r['sequential_per_minute']:.2f}x |"
                for r in m["rows"]]
        out.append("")
    return "\n".join(out).rstrip()


BENCHMARKS = HERE.parent / "benchmarks" / "results"
SECTIONS = {"soak": lambda r, b: soak_section(_read_all(b, "soak*.json")),
            "table1": lambda r, b: table1_section(_load(r, "table1")),
            "separation": lambda r, b: separation_section(_load(r, "separation")),
            "read_path": lambda r, b: read_path_section(b / "read_path.json"),
            "cell_speed": lambda r, b: cell_speed_section(b / "cell_speed.json"),
            "memorize_filter": lambda r, b: memorize_filter_section(b / "memorize_filter.json"),
            "window_function": lambda r, b: window_function_section(b / "lstm_window_function.json"),
            "quick_search_ab": lambda r, b: quick_search_ab_section(b / "quick_search_ab.json"),
            "batched": lambda r, b: batched_section(b / "batched.json"),
            "memoryless": lambda r, b: memoryless_section(r / "memoryless.json"),
            "quick_run": lambda r, b: quick_run_section(r / "quick_run.json"),
            "evolution": lambda r, b: evolution_section(_read_all(r, "evolution_vs_random_*.json")),
            "calibration": lambda r, b: calibration_section(_read_all(r, "calibrate_*.json"))}


def rewrite(text: str, sections: dict[str, str]) -> str:
    """``text`` with the body of every ``<!-- experiments:NAME -->`` section replaced by ``sections[NAME]``."""
    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in sections:
            return match[0]
        return f"<!-- experiments:{name} -->\n{sections[name]}\n<!-- /experiments:{name} -->"

    return re.sub(r"<!-- experiments:(?P<name>[\w-]+) -->.*?<!-- /experiments:(?P=name) -->", body, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=HERE.parent / "README.md")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--benchmarks", type=Path, default=BENCHMARKS, help="benchmark results (default benchmarks/results)")
    args = p.parse_args(argv)
    text = args.readme.read_text()
    new = rewrite(text, {name: make(args.results, args.benchmarks) for name, make in SECTIONS.items()})
    if new != text:
        args.readme.write_text(new)
    print(f"{args.readme}: {'rewritten' if new != text else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
