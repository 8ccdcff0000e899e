"""Train K hyper-parameter settings of one cell at once, as one stacked model (issue 8).

Settings that share ``layers`` and ``units`` (see :func:`group_compatible`) are
trained together: every weight gets a leading slice dimension K and every
matmul is batched. Each slice keeps its own learning rate, clipping norm
(the norm is taken per slice), init scale, data seed, schedule and early stop,
so slice k gives what :func:`archsearch.train.train_model` gives for setting k
with seed k, up to float rounding (``tests/test_batched.py``). Slice k's
initial weights are those of the unbatched model built under seed k, copied in.
A slice that stops or diverges is dropped from the stack (its weights are kept
aside) while the others go on; nothing in the forward or backward pass mixes
slices, so a diverging slice cannot change its neighbours' results.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.compiler import BatchedCell, BatchedCellStack
from archsearch.errors import ArchsearchError, HyperParameterError
from archsearch.ir import Cell, Op
from archsearch.tasks import Kind, Metric
from archsearch.train._config import HyperParams, TrainConfig, TrainResult
from archsearch.train._loop import Schedule, batchify, loss_is_sane
from archsearch.train._model import SequenceModel, build_model, units_for_budget

BatchedEpochCallback = Callable[[int, dict], None]


# ---------------------------------------------------------------- grouping
def _shape_key(cell: Cell, task, hp: HyperParams, config: TrainConfig) -> tuple[int, int]:
    """(layers, units) of the model ``train_model`` would build for ``hp``."""
    layers = 1 if cell.depth > 1 else hp.layers
    budget = max(1, round(hp.params * config.param_scale))
    units = units_for_budget(
        cell, budget, layers, task.num_inputs, task.num_outputs, task.kind == Kind.SYMBOLS, config.min_units
    )
    return layers, units


def group_compatible(hps: list[HyperParams], cell: Cell, task, config: TrainConfig = TrainConfig()) -> list[list[int]]:
    """Indices of ``hps`` grouped by equal (layers, units): each group can be one :func:`train_batched` call.

    Groups come in order of first appearance; indices inside a group keep their order.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hp in enumerate(hps):
        groups.setdefault(_shape_key(cell, task, hp, config), []).append(i)
    return list(groups.values())


# ---------------------------------------------------------------- the stacked model
class BatchedSequenceModel(nn.Module):
    """K :class:`SequenceModel` s side by side: ``forward(inputs[K,T,B(,I)], state) -> (logits[K,T,B,V], state)``."""

    def __init__(self, models: list[SequenceModel]):
        super().__init__()
        first = models[0]
        self.symbols = first.symbols
        self.cells = BatchedCellStack.from_stacks([m.cells for m in models])
        self.embed_weight = nn.Parameter(torch.stack([m.embed.weight.detach() for m in models]))  # (K, V, n) or (K, n, I)
        self.embed_bias = None if self.symbols else nn.Parameter(torch.stack([m.embed.bias.detach() for m in models]))
        self.head_weight = nn.Parameter(torch.stack([m.head.weight.detach() for m in models]))  # (K, V, n)
        self.head_bias = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]))  # (K, V)

    @property
    def k(self) -> int:
        return self.head_weight.shape[0]

    def select(self, keep: list[int]) -> "BatchedSequenceModel":
        """A copy holding only slices ``keep``, in that order."""
        sub = copy.deepcopy(self)
        index = torch.tensor(keep, device=self.head_weight.device)
        with torch.no_grad():
            for p in sub.parameters():
                p.grad = None
                p.data = p.data.index_select(0, index)
            for mod in sub.modules():
                for name, b in mod._buffers.items():
                    if b is not None:
                        mod._buffers[name] = b.index_select(0, index)
                if isinstance(mod, (BatchedCell, BatchedCellStack)):
                    mod.k = len(keep)
        return sub

    def slice_state(self, k: int) -> dict[str, torch.Tensor]:
        """Slice ``k``'s weights and buffers (clones)."""
        return {name: t[k].detach().clone() for name, t in self.state_dict().items()}

    def load_slices(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Overwrite slice j with ``states[j]`` (as given by :meth:`slice_state`)."""
        with torch.no_grad():
            for name, t in self.state_dict().items():
                t.copy_(torch.stack([s[name] for s in states]))

    def forward(self, inputs: torch.Tensor, state=None):
        k, steps, batch = inputs.shape[:3]
        if self.symbols:
            slices = torch.arange(k, device=inputs.device).view(k, 1, 1)
            emb = self.embed_weight[slices, inputs]  # (K, T, B, n)
        else:
            flat = inputs.reshape(k, steps * batch, -1).to(self.embed_weight.dtype)  # (K, T*B, I)
            emb = torch.baddbmm(self.embed_bias.unsqueeze(1), flat, self.embed_weight.transpose(1, 2))
            emb = emb.view(k, steps, batch, -1)  # (K, T, B, n)
        hidden, state = self.cells(emb, state)  # (K, T, B, n)
        flat = hidden.reshape(k, steps * batch, -1)  # (K, T*B, n)
        logits = torch.baddbmm(self.head_bias.unsqueeze(1), flat, self.head_weight.transpose(1, 2))
        return logits.view(k, steps, batch, -1), state  # (K, T, B, V)


# ---------------------------------------------------------------- data
@dataclass
class _Stacked:
    """Streams of K slices, time-major per slice: (K, N/B, B[, I]); padding has mask 0."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def select(self, keep: list[int]) -> "_Stacked":
        return _Stacked(self.inputs[keep], self.targets[keep], self.mask[keep])

    def windows(self, unroll: int):
        for start in range(0, self.inputs.shape[1], unroll):
            end = start + unroll
            yield self.inputs[:, start:end], self.targets[:, start:end], self.mask[:, start:end]


def _stack_streams(streams, batch_size: int, device) -> _Stacked:
    """batchify each slice's stream and pad to the longest with masked positions.

    Masked padding at the end of an epoch gives zero gradients, so SGD leaves the
    weights exactly as they were: a shorter slice trains as if it had stopped there.
    """
    parts = [batchify(s, batch_size, device) for s in streams]
    longest = max(p.inputs.shape[0] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = longest - t.shape[0]
        return t if extra == 0 else torch.cat([t, t.new_zeros(extra, *t.shape[1:])])

    return _Stacked(*(torch.stack([pad(getattr(p, f)) for p in parts]) for f in ("inputs", "targets", "mask")))


# ---------------------------------------------------------------- loss, step, evaluation
def _per_position_loss(logits: torch.Tensor, targets: torch.Tensor, symbols: bool) -> torch.Tensor:
    """NLL of every position, (K, T, B) (as ``_loop._per_position_loss``, with a slice dimension)."""
    if symbols:
        nll = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none")
        return nll.view(targets.shape)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").sum(-1)


def _sgd_step(model: BatchedSequenceModel, lr: torch.Tensor, max_norm: torch.Tensor) -> None:
    """Gradient-norm clipping with one norm per slice (``clip_grad_norm_``'s formula), then SGD."""
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        sq = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in params]).sum(0)  # (K,)
        coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        scale = -(lr * coef)  # (K,)
        for p in params:
            p.add_(p.grad * scale.view(-1, *[1] * (p.dim() - 1)))


def _train_epoch(model, data: _Stacked, lr, max_norm, unroll: int, batch_size: int):
    """One truncated-BPTT pass for every slice.

    Returns (model, per-slice mean training NLL, ``None`` for a slice that diverged).
    A slice whose loss turns non-finite is dropped at once (unbatched, the run ends
    there) and the window is run again without it, so no update ever sees its loss.
    """
    k = model.k
    alive = list(range(k))  # original index of every slice still in ``model``
    totals, counts, diverged = [0.0] * k, [0.0] * k, [False] * k
    state, start, length = None, 0, data.inputs.shape[1]
    while start < length:
        x, y, m = (t[:, start : start + unroll] for t in (data.inputs, data.targets, data.mask))
        logits, new_state = model(x, state)
        nll = _per_position_loss(logits, y, model.symbols) * m  # (K, T, B)
        loss = nll.flatten(1).sum(1) / batch_size  # (K,): summed over time, averaged over the minibatch
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
            state = None if state is None else [tuple(s[keep] for s in layer) for layer in state]
            continue  # the same window again, without the diverged slices
        model.zero_grad(set_to_none=True)
        loss.sum().backward()  # slices share nothing, so each gets the gradient of its own loss
        _sgd_step(model, lr, max_norm)
        state = [tuple(s.detach() for s in layer) for layer in new_state]
        sums, cnts = nll.detach().flatten(1).sum(1).tolist(), m.flatten(1).sum(1).tolist()
        for j, orig in enumerate(alive):
            totals[orig] += sums[j]
            counts[orig] += cnts[j]
        start += unroll
    return model, [None if diverged[i] else totals[i] / max(counts[i], 1.0) for i in range(k)]


@torch.no_grad()
def _evaluate(model: BatchedSequenceModel, data: _Stacked, metric: Metric) -> list[float]:
    """The task's metric per slice (as ``_loop.evaluate``): one pass over each slice's lanes."""
    model.eval()
    logits, _ = model(data.inputs)
    mask = data.mask
    scored = mask.flatten(1).sum(1).clamp(min=1)
    if metric.from_predictions:
        correct = (logits.argmax(-1) == data.targets).to(mask.dtype) * mask
        return (correct.flatten(1).sum(1) / scored).tolist()
    nll = ((_per_position_loss(logits, data.targets, model.symbols) * mask).flatten(1).sum(1) / scored).tolist()
    return [metric.from_nll(v) for v in nll]


# ---------------------------------------------------------------- one slice's schedule
@dataclass
class _Slice:
    """Everything ``train_model`` keeps per run, for one slice (the schedule is ``train_model``'s own)."""

    hp: HyperParams
    seed: int
    schedule: Schedule
    best_weights: dict | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    done: bool = False

    @property
    def lr(self) -> float:
        return self.schedule.lr

    @property
    def best(self) -> float | None:
        return self.schedule.best

    def end_of_epoch(self, epoch: int, loss: float | None, value: float | None):
        """Record the epoch and run the schedule (paper §3.6, as ``train_model``).

        Returns (improved, stop): ``improved`` asks the caller to keep a copy of the weights.
        """
        if loss is None or value is None or not math.isfinite(value):
            self.diverged = True
            return False, True
        self.history.append({"epoch": epoch + 1, "loss": loss, "valid": value, "lr": self.lr})
        return self.schedule.update(value)


# ---------------------------------------------------------------- the trainer
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
    # ---------------------------------------------------------------- setup
    if not hps:
        return []
    seeds = list(range(len(hps))) if seeds is None else list(seeds)
    if len(seeds) != len(hps):
        raise HyperParameterError(f"got {len(hps)} settings but {len(seeds)} seeds")
    if len(group_compatible(hps, cell, task, config)) != 1:
        raise HyperParameterError("batched settings must share layers and units; split them with group_compatible()")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ArchsearchError("--device cuda was requested but CUDA is not available on this machine")
    started = time.perf_counter()
    task = task.with_difficulty(config.difficulty)
    models = []
    for hp, seed in zip(hps, seeds):  # exactly train_model's construction, so slice k gets seed k's weights
        torch.manual_seed(seed)
        budget = max(1, round(hp.params * config.param_scale))
        models.append(build_model(cell, task, budget, hp.layers, hp.init_scale, config.min_units).to(device))
    n_params = [sum(p.numel() for p in m.parameters()) for m in models]
    units = models[0].cells.hidden_size
    model = BatchedSequenceModel(models).to(device)
    del models
    metric = Metric(task.metric)
    slices = [_Slice(hp, seed, Schedule(hp.lr, metric, config)) for hp, seed in zip(hps, seeds)]
    eval_len = config.valid_positions if task.synthetic else config.eval_corpus_positions
    valid = _stack_streams([task.stream("valid", s, eval_len) for s in seeds], config.batch_size, device)
    anneal = config.anneal_slope and any(n.op is Op.HARD_SIGMOID and n.attr("slope") is None for n in cell)
    max_epochs = config.epoch_limit
    dtype = model.head_weight.dtype
    active = list(range(len(hps)))  # slices still training; ``model`` holds exactly these, in this order

    # ---------------------------------------------------------------- epochs
    for epoch in range(max_epochs):
        if not active:
            break
        if anneal:  # HM-LSTM slope annealing, the same for every slice: a = min(5, 1 + 0.04 epoch)
            model.cells.set_slope(torch.full((len(active),), min(5.0, 1.0 + 0.04 * epoch), dtype=dtype))
        train_len = config.epoch_positions if task.synthetic else config.corpus_positions
        streams = [
            task.stream("train", slices[i].seed * 1_000_003 + epoch if task.synthetic else slices[i].seed, train_len)
            for i in active
        ]
        data = _stack_streams(streams, config.batch_size, device)
        lr = torch.tensor([slices[i].lr for i in active], dtype=dtype, device=device)
        max_norm = torch.tensor([slices[i].hp.max_grad_norm for i in active], dtype=dtype, device=device)
        model, losses = _train_epoch(model, data, lr, max_norm, config.unroll, config.batch_size)
        survivors = [j for j, loss in enumerate(losses) if loss is not None]
        values: list[float | None] = [None] * len(active)
        if survivors:
            # ``model`` already dropped the diverged slices: it holds ``survivors`` in order
            for j, v in zip(survivors, _evaluate(model, valid.select([active[j] for j in survivors]), metric)):
                values[j] = v
        keep = []
        for j, i in enumerate(active):
            improved, stop = slices[i].end_of_epoch(epoch, losses[j], values[j])
            if improved:
                slices[i].best_weights = model.slice_state(survivors.index(j))
            if on_epoch is not None and not slices[i].diverged:
                on_epoch(i, {**slices[i].history[-1], "seconds": time.perf_counter() - started})
            if not stop:
                keep.append(j)
        if len(keep) != len(survivors):
            if keep:
                model = model.select([survivors.index(j) for j in keep])
        active = [active[j] for j in keep]

    # ---------------------------------------------------------------- results
    finished = [i for i, s in enumerate(slices) if not s.diverged and s.best_weights is not None]
    tests: dict[int, float] = {}
    if finished:
        final = model.select([0] * len(finished))  # any slice gives the shapes; every slice is overwritten
        final.load_slices([slices[i].best_weights for i in finished])
        test = _stack_streams([task.stream("test", slices[i].seed, eval_len) for i in finished], config.batch_size, device)
        tests = dict(zip(finished, _evaluate(final, test, metric)))
    seconds = (time.perf_counter() - started) / len(hps)
    results = []
    for i, s in enumerate(slices):
        common = dict(task=task.name, epochs=len(s.history), seconds=seconds, params=n_params[i], units=units,
                      metric_name=metric.value, final_lr=s.lr, history=s.history)
        if i not in tests:
            results.append(TrainResult(metric=0.0, valid=float("nan"), test=float("nan"), diverged=True, **common))
            continue
        results.append(TrainResult(metric=metric.score(s.best), valid=s.best, test=tests[i],
                                   perplexity=metric.perplexity(s.best), **common))
    return results
