"""The paper's Table 1 and the separation statistic: does an evaluation tell a tanh RNN from an LSTM?

The *separation* of a task is ``min(best LSTM, best GRU) / max(best tanh, best LSTM-f)``: each cell's
best search metric over the same N settings (best-of-N), gated cells over cells that cannot keep a memory.
The paper's Table 1 gives 3.0 on arithmetic and 1.33 on XML. Its confidence interval comes from a paired
bootstrap over the settings: resample N setting indices with replacement (the same indices for every cell,
since every cell ran the same settings), take each cell's best over the resample, recompute the statistic.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

PAPER_CELLS = ["tanh", "lstm", "lstm-f", "lstm-i", "lstm-o", "lstm-b", "gru", "mut1", "mut2", "mut3"]
# Jozefowicz et al. 2015, Table 1: best accuracy (PTB: exp(-NLL)) per architecture.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "tanh": {"arithmetic": 0.29493, "xml": 0.32050, "ptb": 0.08782},
    "lstm": {"arithmetic": 0.89228, "xml": 0.42470, "ptb": 0.08912},
    "lstm-f": {"arithmetic": 0.29292, "xml": 0.23356, "ptb": 0.08808},
    "lstm-i": {"arithmetic": 0.75109, "xml": 0.41371, "ptb": 0.08662},
    "lstm-o": {"arithmetic": 0.86747, "xml": 0.42117, "ptb": 0.08933},
    "lstm-b": {"arithmetic": 0.90163, "xml": 0.44434, "ptb": 0.08952},
    "gru": {"arithmetic": 0.89565, "xml": 0.45963, "ptb": 0.09069},
    "mut1": {"arithmetic": 0.92135, "xml": 0.47483, "ptb": 0.08968},
    "mut2": {"arithmetic": 0.89735, "xml": 0.47324, "ptb": 0.09036},
    "mut3": {"arithmetic": 0.90728, "xml": 0.46478, "ptb": 0.09161},
}
GATED = ("lstm", "gru")  # numerator: the weaker of the two
UNGATED = ("tanh", "lstm-f")  # denominator: the stronger of the two
SEPARATION_CELLS = GATED + UNGATED


def paper_task(task: str) -> str:
    """The Table 1 column a task is compared with (``ptb-mini`` is compared with PTB)."""
    return "ptb" if task == "ptb-mini" else task


def ratio(best: Mapping[str, float]) -> float:
    """``min(best[lstm], best[gru]) / max(best[tanh], best[lstm-f])``; inf if only the denominator is 0, nan if both."""
    top = min(best[c] for c in GATED)
    bottom = max(best[c] for c in UNGATED)
    if bottom > 0:
        return top / bottom
    return float("inf") if top > 0 else float("nan")


def paper_separation(task: str) -> float | None:
    """The separation in the paper's Table 1 (arithmetic 3.0, XML 1.33, PTB 1.01), None for other tasks."""
    column = paper_task(task)
    if column not in PAPER_TABLE1["lstm"]:
        return None
    return ratio({cell: PAPER_TABLE1[cell][column] for cell in SEPARATION_CELLS})


@dataclass(frozen=True)
class Estimate:
    """A statistic of best-of-N results with a bootstrap percentile interval."""

    value: float
    low: float
    high: float
    settings: int  # N, the settings every cell ran
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "settings": self.settings, "level": self.level}

    def __str__(self) -> str:
        percent = round(100 * self.level)
        return f"{self.value:.3f} [{percent}% CI {self.low:.3f}-{self.high:.3f}]"


def bootstrap(
    scores: Mapping[str, Sequence[float]],
    statistic: Callable[[dict[str, float]], float],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``statistic`` of each cell's best score, with a paired bootstrap interval over the settings.

    Args:
        scores: cell -> its search metric on settings 0..N-1 (the same settings for every cell, in the
            same order; a diverged run counts 0).
        statistic: maps cell -> best score to a number.
        resamples: bootstrap resamples of the N settings.
        level: coverage of the percentile interval.
        seed: bootstrap randomness.

    Raises:
        ValueError: no cells, no settings, or cells with different numbers of settings.
    """
    table = {cell: np.asarray(values, dtype=float) for cell, values in scores.items()}
    lengths = {len(v) for v in table.values()}
    if not table or lengths == {0}:
        raise ValueError("bootstrap needs at least one cell with at least one setting")
    if len(lengths) != 1:
        raise ValueError(f"every cell must have run the same settings; got counts {sorted(lengths)}")
    n = lengths.pop()
    cells = list(table)
    matrix = np.stack([table[c] for c in cells])  # (cells, N)
    value = statistic(dict(zip(cells, matrix.max(axis=1).tolist())))
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    bests = matrix[:, picks].max(axis=2)  # (cells, resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.array([statistic(dict(zip(cells, col))) for col in bests.T.tolist()])
    tail = (1 - level) / 2
    finite = draws[~np.isnan(draws)]
    low, high = (np.quantile(finite, [tail, 1 - tail]).tolist() if finite.size else (float("nan"), float("nan")))
    return Estimate(value=value, low=low, high=high, settings=n, level=level)


def separation(scores: Mapping[str, Sequence[float]], **kwargs) -> Estimate | None:
    """The separation ratio with its bootstrap interval; None unless tanh, LSTM-f, LSTM and GRU all ran."""
    if any(cell not in scores for cell in SEPARATION_CELLS):
        return None
    return bootstrap({c: scores[c] for c in SEPARATION_CELLS}, ratio, **kwargs)


def best_of(cell: str) -> Callable[[dict[str, float]], float]:
    """The statistic 'best score of ``cell``' (for a per-cell interval with :func:`bootstrap`)."""
    return lambda best: best[cell]


def score_matrix(runs: Sequence[Mapping], task: str) -> dict[str, list[float]]:
    """cell -> search metric per setting index, from run records (``cell``, ``task``, ``setting``, ``metric``).

    Only settings that every cell has finished are kept, so the cells stay paired.
    """
    by_cell: dict[str, dict[int, float]] = {}
    for run in runs:
        if run["task"] == task:
            by_cell.setdefault(run["cell"], {})[int(run["setting"])] = float(run["metric"])
    if not by_cell:
        return {}
    shared = sorted(set.intersection(*(set(v) for v in by_cell.values())))
    return {cell: [values[i] for i in shared] for cell, values in by_cell.items()}


# ---------------------------------------------------------------- running the cells
def draw_settings(tasks: list, count: int, seed: int, scale: str = "paper") -> dict[str, list]:
    """``count`` random settings per task from the scale's setting space, the same for every cell; independent
    per task name."""
    from archsearch.train import setting_space

    space = setting_space(scale)
    draws = {}
    for task in tasks:
        rng = np.random.default_rng([seed, zlib.crc32(task.name.encode())])
        draws[task.name] = [space.sample(rng, task.param_budgets) for _ in range(count)]
    return draws


def make_jobs(cells: Sequence[str], tasks: list, settings: int, seed: int, scale: str, *,
              data_dir: str | None = None, device: str = "cpu", threads: int = 1,
              train_overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One JSON-ready job per (task, setting, cell): every cell gets the same settings and training seeds
    (``train_overrides``: TrainConfig fields changed from the scale's, as a search's ``train_overrides``)."""
    draws = draw_settings(tasks, settings, seed, scale)
    return [
        {"cell": cell, "task": task.name, "setting": i, "hparams": hp.to_dict(), "seed": seed * 1000 + i,
         "scale": scale, "data_dir": data_dir, "device": device, "threads": threads,
         "train_overrides": dict(train_overrides or {})}
        for task in tasks
        for i, hp in enumerate(draws[task.name])
        for cell in cells
    ]


def run_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train one job (in a worker process or inline); the run's record with ``cpu_seconds`` added."""
    return run_group([job])[0]


def run_group(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Train jobs of one cell, task and model shape (see :func:`group_jobs`) as one batched model
    (``archsearch.train.train_batched``; one job is a plain ``train``); one record per job, in order, each with
    ``cpu_seconds`` (the group's CPU time divided by its size, as ``seconds`` is its wall time) and ``batched``."""
    import torch

    from archsearch.train import HyperParams, train_batched

    first = jobs[0]
    torch.set_num_threads(first["threads"])
    cell, task, config = _job_context(first)
    cpu = time.process_time()
    results = train_batched(cell, task, [HyperParams.from_dict(j["hparams"]) for j in jobs], config,
                            seeds=[j["seed"] for j in jobs], device=first["device"])
    cpu = (time.process_time() - cpu) / len(jobs)
    records = []
    for job, result in zip(jobs, results):
        record = result.to_dict()
        del record["history"]
        records.append({**record, "cpu_seconds": cpu, "batched": len(jobs), "cell": job["cell"],
                        "setting": job["setting"], "hparams": job["hparams"], "scale": job["scale"]})
    return records


def _job_context(job: Mapping[str, Any]):
    """(cell, task, TrainConfig) of a job."""
    from archsearch.cli._cells import load_cell
    from archsearch.cli._train import load_task
    from archsearch.train import task_config

    cell, task = load_cell(job["cell"]), load_task(job["task"], job["data_dir"])
    return cell, task, task_config(job["scale"], task).with_overrides(**job.get("train_overrides", {}))


def group_jobs(jobs: Sequence[Mapping[str, Any]], batch: int, workers: int = 1) -> list[list[Mapping[str, Any]]]:
    """Jobs in groups of at most ``batch`` that can train as one batched model: the same cell, task, scale,
    overrides and device, and settings that give the same (layers, units). ``batch=1``: one job per group.
    While there are fewer groups than ``workers``, the largest is halved, so no worker idles for batching.

    Groups are sorted by their first job's place in ``jobs``."""
    from archsearch.train import HyperParams, group_compatible

    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if batch == 1:
        return [[job] for job in jobs]
    by_context: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        key = repr([job[k] for k in ("cell", "task", "scale", "data_dir", "device", "threads")]
                   + sorted(job.get("train_overrides", {}).items()))
        by_context.setdefault(key, []).append(job)
    groups = []
    for members in by_context.values():
        cell, task, config = _job_context(members[0])
        hps = [HyperParams.from_dict(j["hparams"]) for j in members]
        for shape in group_compatible(hps, cell, task, config):
            groups += [[members[i] for i in shape[k:k + batch]] for k in range(0, len(shape), batch)]
    while len(groups) < workers and max(map(len, groups), default=1) > 1:
        largest = max(groups, key=len)
        groups.remove(largest)
        groups += [largest[: len(largest) // 2], largest[len(largest) // 2 :]]
    order = {id(job): i for i, job in enumerate(jobs)}
    return sorted(groups, key=lambda g: order[id(g[0])])


def run_jobs(jobs: Iterable[Mapping[str, Any]], workers: int, batch: int = 1) -> Iterator[dict[str, Any]]:
    """Yield each job's record, inline or from ``workers`` spawned processes (groups in completion order).

    ``batch > 1`` trains up to that many compatible jobs as one batched model (:func:`group_jobs`): the same
    settings and seeds, results equal to one by one in float64 (in float32 the two round differently). A group
    whose batched training fails is trained again one job at a time."""
    groups = group_jobs(list(jobs), batch, workers)
    if workers == 1:
        for group in groups:
            yield from run_group_safely(group)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_group_safely, group) for group in groups]):
            yield from future.result()


def run_group_safely(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`run_group`; if batched training of several jobs fails, each job is trained alone instead (the
    search's executors do the same), so one bad group does not cost the others' results."""
    if len(jobs) == 1:
        return run_group(jobs)
    try:
        return run_group(jobs)
    except Exception as e:  # noqa: BLE001 - retried one by one, where a real error raises again
        log.warning("batched training of %d settings of %s on %s failed (%s); training them one by one",
                    len(jobs), jobs[0]["cell"], jobs[0]["task"], e)
        return [record for job in jobs for record in run_group([job])]
