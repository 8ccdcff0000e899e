"""The paper's training procedure (§3.5-3.7), as one function that reads top to bottom.

Minibatch 20 lanes, unroll 35 steps, hidden state carried from window to window
along each lane; plain SGD on the loss summed over time and averaged over the
minibatch; gradient-norm clipping; the search (or music) learning-rate schedule.
A NaN, infinite or huge (> ``DIVERGED_LOSS``) loss ends the run as *diverged*: a result, not an exception.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from archsearch.errors import ArchsearchError
from archsearch.ir import Cell, Op
from archsearch.tasks import Metric
from archsearch.train._config import HyperParams, LRSchedule, TrainConfig, TrainResult
from archsearch.train._model import SequenceModel, build_model

EpochCallback = Callable[[dict], None]


@dataclass
class Batches:
    """A stream cut into lanes: time-major tensors (N/B, B[, K])."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def windows(self, unroll: int):
        for start in range(0, self.inputs.shape[0], unroll):
            end = start + unroll
            yield self.inputs[start:end], self.targets[start:end], self.mask[start:end]


def batchify(stream, batch_size: int, device: torch.device | str) -> Batches:
    """Lay the stream out as ``batch_size`` parallel lanes (the tail that does not fit is dropped)."""
    n = len(stream) // batch_size
    if n < 1:
        raise ArchsearchError(f"stream of {len(stream)} positions is shorter than one minibatch of {batch_size}")

    def lanes(a: np.ndarray) -> torch.Tensor:
        a = a[: n * batch_size].reshape(batch_size, n, *a.shape[1:])  # (B, N/B[, K])
        return torch.from_numpy(np.ascontiguousarray(a.swapaxes(0, 1))).to(device)  # (N/B, B[, K])

    return Batches(lanes(stream.inputs), lanes(stream.targets), lanes(stream.mask.astype(np.float32)))


def _per_position_loss(logits: torch.Tensor, targets: torch.Tensor, symbols: bool) -> torch.Tensor:
    """NLL of every position, (T, B): cross-entropy, or Bernoulli NLL summed over the keys."""
    if symbols:
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").sum(-1)


DIVERGED_LOSS = 1e6  # a window's loss (summed over time, mean over the minibatch) above this has diverged
# (PTB starts near 35 x ln(10000) = 322, music near 35 x 88 x ln 2 = 2135; a finite 1e31 is a blow-up, not learning)


def loss_is_sane(loss: torch.Tensor) -> torch.Tensor | bool:
    """Whether a window's loss (a scalar, or one per batched slice) is finite and at most ``DIVERGED_LOSS``."""
    ok = torch.isfinite(loss) & (loss <= DIVERGED_LOSS)
    return bool(ok) if ok.dim() == 0 else ok


def _detach(state):
    return tuple(s.detach() for s in state)


def train_epoch(model: SequenceModel, data: Batches, lr: float, max_grad_norm: float, unroll: int) -> float | None:
    """One pass of truncated BPTT with SGD; returns the mean training NLL, or None if it diverged."""
    model.train()
    state, total, count = None, 0.0, 0.0
    batch_size = data.inputs.shape[1]
    for x, y, m in data.windows(unroll):
        logits, state = model(x, state)
        nll = _per_position_loss(logits, y, model.symbols) * m  # (T, B)
        loss = nll.sum() / batch_size  # summed over time, averaged over the minibatch (paper §3.7)
        if not loss_is_sane(loss):
            return None
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        state = _detach(state)
        total += float(nll.detach().sum())
        count += float(m.sum())
    return total / max(count, 1.0)


@torch.no_grad()
def evaluate(model: SequenceModel, data: Batches, metric: Metric) -> float:
    """The task's metric on a stream: from the argmax predictions (accuracy) or from the NLL per scored position."""
    model.eval()
    logits, _ = model(data.inputs)  # no truncation needed without gradients: one pass over the lanes
    mask = data.mask
    if metric.from_predictions:
        correct = (logits.argmax(-1) == data.targets).to(mask.dtype) * mask
        return float(correct.sum() / mask.sum().clamp(min=1))
    nll = float((_per_position_loss(logits, data.targets, model.symbols) * mask).sum() / mask.sum().clamp(min=1))
    return metric.from_nll(nll)


@dataclass
class Schedule:
    """The learning-rate schedules of §3.6 as one small state machine (shared with the batched trainer).

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
    # ---------------------------------------------------------------- setup
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ArchsearchError("--device cuda was requested but CUDA is not available on this machine")
    started = time.perf_counter()
    task = task.with_difficulty(config.difficulty)
    torch.manual_seed(seed)
    budget = max(1, round(hp.params * config.param_scale))
    model = build_model(cell, task, budget, hp.layers, hp.init_scale, config.min_units).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    units = model.cells.hidden_size
    eval_len = config.valid_positions if task.synthetic else config.eval_corpus_positions
    valid = batchify(task.stream("valid", seed, eval_len), config.batch_size, device)
    anneal = config.anneal_slope and any(n.op is Op.HARD_SIGMOID and n.attr("slope") is None for n in cell)
    max_epochs = config.epoch_limit
    metric = Metric(task.metric)
    schedule = Schedule(hp.lr, metric, config)
    best_weights, history = None, []
    diverged = False
    # ---------------------------------------------------------------- epochs
    for epoch in range(max_epochs):
        if anneal:  # HM-LSTM slope annealing: a = min(5, 1 + 0.04 epoch)
            model.cells.set_slope(min(5.0, 1.0 + 0.04 * epoch))
        train_len = config.epoch_positions if task.synthetic else config.corpus_positions
        data_seed = seed * 1_000_003 + epoch if task.synthetic else seed  # fresh examples every epoch
        train_data = batchify(task.stream("train", data_seed, train_len), config.batch_size, device)
        loss = train_epoch(model, train_data, schedule.lr, hp.max_grad_norm, config.unroll)
        value = None if loss is None else evaluate(model, valid, metric)
        if loss is None or not math.isfinite(value):
            diverged = True
            break
        history.append({"epoch": epoch + 1, "loss": loss, "valid": value, "lr": schedule.lr})
        if on_epoch is not None:
            on_epoch({**history[-1], "seconds": time.perf_counter() - started})
        improved, stop = schedule.update(value)  # (paper §3.6)
        if improved:
            best_weights = copy.deepcopy(model.state_dict())
        if stop:
            break

    # ---------------------------------------------------------------- result
    seconds = time.perf_counter() - started
    common = dict(task=task.name, epochs=len(history), seconds=seconds, params=n_params, units=units,
                  metric_name=metric.value, final_lr=schedule.lr, history=history)
    if diverged or best_weights is None:
        return TrainResult(metric=0.0, valid=float("nan"), test=float("nan"), diverged=True, **common), model
    model.load_state_dict(best_weights)
    test = batchify(task.stream("test", seed, eval_len), config.batch_size, device)
    test_value = evaluate(model, test, metric)
    best = schedule.best
    result = TrainResult(metric=metric.score(best), valid=best, test=test_value, perplexity=metric.perplexity(best),
                         **common)
    return result, model


def train(cell: Cell, task, hp: HyperParams, config: TrainConfig = TrainConfig(), **kwargs) -> TrainResult:
    """Like :func:`train_model` but returns only the :class:`TrainResult`."""
    return train_model(cell, task, hp, config, **kwargs)[0]
