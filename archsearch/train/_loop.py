"""The paper's training procedure (§3.5-3.7), written once for K settings of one cell.

Minibatch 20 lanes, unroll 35 steps, hidden state carried from window to window
along each lane; plain SGD on the loss summed over time and averaged over the
minibatch; gradient-norm clipping; the search (or music) learning-rate schedule.
A NaN, infinite or huge (> ``DIVERGED_LOSS``) loss ends the run as *diverged*: a result, not an exception.

:func:`train_settings` runs K settings as K slices of one model (each with its own
learning rate, clipping norm, init, data seed, schedule and early stop; see
:mod:`archsearch.train._batched`); one setting is K=1 and runs the plain model.
:func:`train_model`, :func:`train` and :func:`train_batched` are its three faces.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from archsearch.errors import ArchsearchError, HyperParameterError
from archsearch.ir import Cell, Op
from archsearch.tasks import Metric
from archsearch.train._batched import (
    Batches,
    BatchedSequenceModel,
    OneSlice,
    Stacked,
    group_compatible,
    map_state,
    slice_model,
    stack_batches,
    stack_streams,
)
from archsearch.train._config import HyperParams, LRSchedule, TrainConfig, TrainResult
from archsearch.train._model import SequenceModel, build_model

EpochCallback = Callable[[dict], None]
BatchedEpochCallback = Callable[[int, dict], None]
SlicedModel = BatchedSequenceModel | OneSlice

DIVERGED_LOSS = 1e6  # a window's loss (summed over time, mean over the minibatch) above this has diverged
# (PTB starts near 35 x ln(10000) = 322, music near 35 x 88 x ln 2 = 2135; a finite 1e31 is a blow-up, not learning)


# ---------------------------------------------------------------- loss, step, evaluation
def loss_is_sane(loss: torch.Tensor) -> torch.Tensor | bool:
    """Whether a window's loss (a scalar, or one per slice) is finite and at most ``DIVERGED_LOSS``."""
    ok = torch.isfinite(loss) & (loss <= DIVERGED_LOSS)
    return bool(ok) if ok.dim() == 0 else ok


def _per_position_loss(logits: torch.Tensor, targets: torch.Tensor, symbols: bool) -> torch.Tensor:
    """NLL of every position, (K, T, B): cross-entropy, or Bernoulli NLL summed over the keys."""
    if symbols:
        return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none").view(targets.shape)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").sum(-1)


def _slice_sums(t: torch.Tensor) -> torch.Tensor:
    """Sum of each slice of ``t`` (K, ...), reduced as a whole tensor of its own (the same rounding at any K)."""
    return torch.stack([s.sum() for s in t])


def _sgd_step(model: SlicedModel, lr: torch.Tensor, max_norm: torch.Tensor) -> None:
    """Gradient-norm clipping with one norm per slice (``clip_grad_norm_``'s formula and rounding), then SGD."""
    params = [p for p in model.parameters() if p.grad is not None]
    k = len(lr)
    with torch.no_grad():
        norms = torch.stack([torch.linalg.vector_norm(p.grad.reshape(k, -1), dim=1) for p in params])  # (P, K)
        total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
        coef = ((total + 1e-6).reciprocal() * max_norm).clamp(max=1.0)  # max_norm / (total + 1e-6), as torch rounds it
        for p in params:
            shape = (k, *[1] * (p.dim() - 1)) if p.dim() else ()
            p.grad.mul_(coef.view(shape))
            p.addcmul_(p.grad, (-lr).view(shape))  # = p.add_(grad, alpha=-lr), per slice


def _train_epoch(model: SlicedModel, data: Stacked, lr: torch.Tensor, max_norm: torch.Tensor, unroll: int,
                 batch_size: int) -> tuple[SlicedModel, list[float | None]]:
    """One truncated-BPTT pass for every slice.

    Returns (model, per-slice mean training NLL, ``None`` for a slice that diverged).
    A slice whose loss turns non-finite is dropped at once and the window is run again
    without it, so no update ever sees its loss.
    """
    model.train()
    k = model.k
    alive = list(range(k))  # original index of every slice still in ``model``
    totals, counts, diverged = [0.0] * k, [0.0] * k, [False] * k
    state, start, length = None, 0, data.inputs.shape[1]
    while start < length:
        x, y, m = (t[:, start : start + unroll] for t in data.tensors())
        logits, new_state = model(x, state)
        nll = _per_position_loss(logits, y, model.symbols) * m  # (K, T, B)
        loss = _slice_sums(nll) / batch_size  # (K,): summed over time, averaged over the minibatch (§3.7)
        finite = loss_is_sane(loss).tolist()
        if not all(finite):
            keep = [j for j, ok in enumerate(finite) if ok]
            for j, ok in enumerate(finite):
                diverged[alive[j]] = diverged[alive[j]] or not ok
            if not keep:
                break
            alive = [alive[j] for j in keep]
            model, data = model.select(keep), data.select(keep)
            lr, max_norm = lr[keep], max_norm[keep]
            state = None if state is None else map_state(lambda s: s[keep], state)
            continue  # the same window again, without the diverged slices
        model.zero_grad(set_to_none=True)
        loss.sum().backward()  # slices share nothing, so each gets the gradient of its own loss
        _sgd_step(model, lr, max_norm)
        state = map_state(torch.Tensor.detach, new_state)
        sums, cnts = _slice_sums(nll.detach()).tolist(), _slice_sums(m).tolist()
        for j, orig in enumerate(alive):
            totals[orig] += sums[j]
            counts[orig] += cnts[j]
        start += unroll
    return model, [None if diverged[i] else totals[i] / max(counts[i], 1.0) for i in range(k)]


@torch.no_grad()
def _evaluate(model: SlicedModel, data: Stacked, metric: Metric) -> list[float]:
    """The task's metric per slice: from the argmax predictions (accuracy) or from the NLL per scored position.

    No truncation is needed without gradients: one pass over each slice's lanes.
    """
    model.eval()
    logits, _ = model(data.inputs)
    mask = data.mask
    scored = _slice_sums(mask).clamp(min=1)
    if metric.from_predictions:
        correct = (logits.argmax(-1) == data.targets).to(mask.dtype) * mask
        return (_slice_sums(correct) / scored).tolist()
    nll = (_slice_sums(_per_position_loss(logits, data.targets, model.symbols) * mask) / scored).tolist()
    return [metric.from_nll(v) for v in nll]


def evaluate(model: SequenceModel, data: Batches, metric: Metric) -> float:
    """The task's metric of ``model`` on a batchified stream (see :func:`archsearch.train.batchify`)."""
    return _evaluate(OneSlice(model), stack_batches([data]), metric)[0]


# ---------------------------------------------------------------- the schedule
@dataclass
class Schedule:
    """The learning-rate schedules of §3.6 as one small state machine.

    ``search``: after ``patience`` epochs without improvement, halve the lr every epoch for
    ``decay_epochs`` more epochs, then stop. ``music``: x0.8 after 10 bad epochs (counter reset),
    stop below 1e-3. ``filter`` (memorization): halve after ``patience`` bad epochs and go on.
    Any schedule stops once validation reaches ``config.target``.
    """

    lr: float
    metric: Metric
    config: TrainConfig
    best: float | None = None
    bad_epochs: int = 0
    decay_left: int | None = None

    def update(self, value: float) -> tuple[bool, bool]:
        """Record one epoch's validation value; return (improved, stop). Updates ``lr`` for the next epoch."""
        improved = self.metric.better(value, self.best)
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        target = self.config.target
        if target is not None and self.metric.reached(value, target):
            return improved, True
        return improved, self._next_lr()

    def _next_lr(self) -> bool:
        config = self.config
        if config.schedule is LRSchedule.FILTER:
            if self.bad_epochs >= config.patience:
                self.lr, self.bad_epochs = self.lr / 2, 0
            return False
        if config.schedule is LRSchedule.MUSIC:
            if self.bad_epochs >= 10:
                self.lr, self.bad_epochs = self.lr * 0.8, 0
            return self.lr < 1e-3
        if self.decay_left is not None:
            self.decay_left -= 1
            if self.decay_left == 0:
                return True
            self.lr /= 2
        elif self.bad_epochs >= config.patience:
            self.decay_left, self.lr = config.decay_epochs, self.lr / 2
        return False


@dataclass
class _Run:
    """Everything the procedure keeps per setting (one slice)."""

    hp: HyperParams
    seed: int
    schedule: Schedule
    best_weights: dict | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False

    def end_of_epoch(self, epoch: int, loss: float | None, value: float | None) -> tuple[bool, bool]:
        """Record the epoch and run the schedule (paper §3.6); returns (improved, stop)."""
        if loss is None or value is None or not math.isfinite(value):
            self.diverged = True
            return False, True
        self.history.append({"epoch": epoch + 1, "loss": loss, "valid": value, "lr": self.schedule.lr})
        return self.schedule.update(value)


# ---------------------------------------------------------------- the procedure
def flushes_denormals() -> bool:
    """Whether this thread's CPU flushes denormal floats to zero now (1e-20 squared is a float32 denormal)."""
    tiny = torch.tensor([1e-20], dtype=torch.float32)
    return bool((tiny * tiny).item() == 0.0)


@contextlib.contextmanager
def flushing_denormals():
    """Flush denormal floats (below ~1.2e-38 in float32) to zero on the CPU while training; restore afterwards.

    Products of saturated gates' derivatives reach the denormal range, and every op that touches a denormal
    is many times slower on x86 CPUs (measured: a tiny XML run 30.6 s -> 24.0 s). Flushing changes values
    only below the smallest normal float.
    """
    before = flushes_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def train_settings(
    cell: Cell,
    task,
    hps: list[HyperParams],
    config: TrainConfig = TrainConfig(),
    seeds: list[int] | None = None,
    device: str = "cpu",
    on_epoch: BatchedEpochCallback | None = None,
) -> tuple[list[TrainResult], SlicedModel]:
    """Train ``cell`` on ``task`` with K settings at once, as K slices of one model.

    Returns one result per setting and the model, holding the best weights of the slices that
    finished (in order), or as it stopped if none did. See :func:`train_batched` for the arguments.
    Denormal floats are flushed to zero while it runs (:func:`flushing_denormals`).
    """
    with flushing_denormals():
        return _train_settings(cell, task, hps, config, seeds, device, on_epoch)


def _train_settings(cell, task, hps, config, seeds, device, on_epoch) -> tuple[list[TrainResult], SlicedModel]:
    # ---------------------------------------------------------------- setup
    seeds = list(range(len(hps))) if seeds is None else list(seeds)
    if not hps:
        raise HyperParameterError("no settings to train")
    if len(seeds) != len(hps):
        raise HyperParameterError(f"got {len(hps)} settings but {len(seeds)} seeds")
    if len(hps) > 1 and len(group_compatible(hps, cell, task, config)) != 1:
        raise HyperParameterError("batched settings must share layers and units; split them with group_compatible()")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ArchsearchError("--device cuda was requested but CUDA is not available on this machine")
    started = time.perf_counter()
    task = task.with_difficulty(config.difficulty)
    models = []
    for hp, seed in zip(hps, seeds):  # slice k gets the weights of the plain model built under seed k
        torch.manual_seed(seed)
        budget = max(1, round(hp.params * config.param_scale))
        models.append(build_model(cell, task, budget, hp.layers, hp.init_scale, config.min_units).to(device))
    n_params = [sum(p.numel() for p in m.parameters()) for m in models]
    units = models[0].cells.hidden_size
    model = slice_model(models)
    del models
    metric = Metric(task.metric)
    runs = [_Run(hp, seed, Schedule(hp.lr, metric, config)) for hp, seed in zip(hps, seeds)]
    eval_len = config.valid_positions if task.synthetic else config.eval_corpus_positions
    valid = stack_streams([task.stream("valid", s, eval_len) for s in seeds], config.batch_size, device)
    anneal = config.anneal_slope and any(n.op is Op.HARD_SIGMOID and n.attr("slope") is None for n in cell)
    dtype = next(model.parameters()).dtype
    active = list(range(len(hps)))  # slices still training; ``model`` holds exactly these, in this order

    # ---------------------------------------------------------------- epochs
    for epoch in range(config.epoch_limit):
        if not active:
            break
        if anneal:  # HM-LSTM slope annealing: a = min(5, 1 + 0.04 epoch)
            model.set_slope(min(5.0, 1.0 + 0.04 * epoch))
        train_len = config.epoch_positions if task.synthetic else config.corpus_positions
        streams = [  # synthetic tasks: fresh examples every epoch
            task.stream("train", runs[i].seed * 1_000_003 + epoch if task.synthetic else runs[i].seed, train_len)
            for i in active
        ]
        data = stack_streams(streams, config.batch_size, device)
        lr = torch.tensor([runs[i].schedule.lr for i in active], dtype=dtype, device=device)
        max_norm = torch.tensor([runs[i].hp.max_grad_norm for i in active], dtype=dtype, device=device)
        model, losses = _train_epoch(model, data, lr, max_norm, config.unroll, config.batch_size)
        survivors = [j for j, loss in enumerate(losses) if loss is not None]
        values: list[float | None] = [None] * len(active)
        if survivors:  # ``model`` already dropped the diverged slices: it holds ``survivors`` in order
            for j, v in zip(survivors, _evaluate(model, valid.select([active[j] for j in survivors]), metric)):
                values[j] = v
        keep = []
        for j, i in enumerate(active):
            improved, stop = runs[i].end_of_epoch(epoch, losses[j], values[j])  # (paper §3.6)
            if improved:
                runs[i].best_weights = model.slice_state(survivors.index(j))
            if on_epoch is not None and not runs[i].diverged:
                on_epoch(i, {**runs[i].history[-1], "seconds": time.perf_counter() - started})
            if not stop:
                keep.append(j)
        if keep and len(keep) != len(survivors):
            model = model.select([survivors.index(j) for j in keep])
        active = [active[j] for j in keep]

    # ---------------------------------------------------------------- results
    finished = [i for i, r in enumerate(runs) if not r.diverged and r.best_weights is not None]
    tests: dict[int, float] = {}
    if finished:
        model = model.select([0] * len(finished))  # any slice gives the shapes; every slice is overwritten
        model.load_slices([runs[i].best_weights for i in finished])
        test = stack_streams([task.stream("test", runs[i].seed, eval_len) for i in finished], config.batch_size, device)
        tests = dict(zip(finished, _evaluate(model, test, metric)))
    seconds = (time.perf_counter() - started) / len(hps)
    results = []
    for i, r in enumerate(runs):
        common = dict(task=task.name, epochs=len(r.history), seconds=seconds, params=n_params[i], units=units,
                      metric_name=metric.value, final_lr=r.schedule.lr, history=r.history)
        if i not in tests:
            results.append(TrainResult(metric=0.0, valid=float("nan"), test=float("nan"), diverged=True, **common))
            continue
        best = r.schedule.best
        results.append(TrainResult(metric=metric.score(best), valid=best, test=tests[i],
                                   perplexity=metric.perplexity(best), **common))
    return results, model


def train_batched(
    cell: Cell,
    task,
    hps: list[HyperParams],
    config: TrainConfig = TrainConfig(),
    seeds: list[int] | None = None,
    device: str = "cpu",
    on_epoch: BatchedEpochCallback | None = None,
) -> list[TrainResult]:
    """Train ``cell`` on ``task`` with K settings at once; result k equals ``train_model(..., hps[k], seed=seeds[k])``.

    Args:
        cell: a validated cell graph.
        task: an ``archsearch.tasks.Task``.
        hps: the K settings; they must give the same (layers, units) (see :func:`group_compatible`).
        config: batch, unroll, epoch sizes and schedule (shared by all slices).
        seeds: one seed per setting (default ``0, 1, ..., K-1``): slice k draws the weights and data of that seed.
        device: ``"cpu"`` or ``"cuda"``.
        on_epoch: called as ``on_epoch(k, info)`` after every epoch of slice k.

    ``TrainResult.seconds`` is the group's wall time divided by K (the cost per setting).

    Raises:
        HyperParameterError: the settings do not share (layers, units), or seeds do not match hps.
        ArchsearchError: the device is not available or the data is too short.
    """
    return train_settings(cell, task, hps, config, seeds, device, on_epoch)[0] if hps else []


def train_model(
    cell: Cell,
    task,
    hp: HyperParams,
    config: TrainConfig = TrainConfig(),
    *,
    seed: int = 0,
    device: str = "cpu",
    on_epoch: EpochCallback | None = None,
) -> tuple[TrainResult, SequenceModel]:
    """Train ``cell`` on ``task`` with one hyper-parameter setting; return the result and the best model.

    Args:
        cell: a validated cell graph.
        task: an ``archsearch.tasks.Task``.
        hp: the setting (learning rate, init scale, clipping, layers, parameter budget).
        config: batch, unroll, epoch sizes and schedule (see ``SCALES``).
        seed: seeds the weights and the generated data; the same seed gives the same run.
        device: ``"cpu"`` or ``"cuda"``.
        on_epoch: called after every epoch with a dict (epoch, loss, valid, lr, seconds).

    Raises:
        ArchsearchError: the device is not available or the data is too short.
    """
    callback = None if on_epoch is None else lambda _, info: on_epoch(info)
    (result,), model = train_settings(cell, task, [hp], config, [seed], device, callback)
    return result, model.model


def train(cell: Cell, task, hp: HyperParams, config: TrainConfig = TrainConfig(), **kwargs) -> TrainResult:
    """Like :func:`train_model` but returns only the :class:`TrainResult`."""
    return train_model(cell, task, hp, config, **kwargs)[0]
