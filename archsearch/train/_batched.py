"""The models and data the trainer runs on: K settings of one cell side by side (issue 8).

The training procedure (:mod:`archsearch.train._loop`) sees every run as K slices:
inputs ``(K, T, B[, I])``, logits ``(K, T, B, V)``, one loss, clipping norm and
learning rate per slice. K=1 is :class:`OneSlice`, a view of the plain
:class:`SequenceModel` (its fused kernels, no batched matmuls); K>1 is
:class:`BatchedSequenceModel`: every weight gets a leading slice dimension and
every matmul is batched. Settings that share ``layers`` and ``units`` (see
:func:`group_compatible`) can be stacked; slice k's initial weights are those of
the plain model built under seed k, copied in. Nothing in the forward or backward
pass mixes slices, so a diverging slice cannot change its neighbours' results
(``tests/test_batched.py``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from archsearch.compiler import BatchedCell, BatchedCellStack
from archsearch.errors import ArchsearchError
from archsearch.ir import Cell
from archsearch.tasks import Kind
from archsearch.train._config import HyperParams, TrainConfig
from archsearch.train._model import SequenceModel, units_for_budget


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

    def set_slope(self, slope: float) -> None:
        """The hard-sigmoid slope of every slice (HM-LSTM annealing)."""
        self.cells.set_slope(torch.full((self.k,), slope, dtype=self.head_weight.dtype))

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


class OneSlice(nn.Module):
    """One :class:`SequenceModel` with the interface of a :class:`BatchedSequenceModel` of K=1.

    ``forward(inputs[1,T,B(,I)], state) -> (logits[1,T,B,V], state)`` runs the plain model (addmm,
    not bmm); the state is the model's, with a leading slice dimension of 1.
    """

    k = 1

    def __init__(self, model: SequenceModel):
        super().__init__()
        self.model = model
        self.symbols = model.symbols

    def select(self, keep: list[int]) -> "OneSlice":
        """The model itself (its only slice is 0; the trainer never asks for none)."""
        assert keep == [0], keep
        return self

    def slice_state(self, k: int) -> dict[str, torch.Tensor]:
        return {name: t.detach().clone() for name, t in self.model.state_dict().items()}

    def load_slices(self, states: list[dict[str, torch.Tensor]]) -> None:
        (state,) = states
        self.model.load_state_dict(state)

    def set_slope(self, slope: float) -> None:
        self.model.cells.set_slope(slope)

    def forward(self, inputs: torch.Tensor, state=None):
        logits, state = self.model(inputs[0], None if state is None else tuple(s[0] for s in state))
        return logits.unsqueeze(0), tuple(s.unsqueeze(0) for s in state)


def slice_model(models: list[SequenceModel]) -> BatchedSequenceModel | OneSlice:
    """The K models as one sliced model: the plain model itself for K=1, else a stacked copy."""
    return OneSlice(models[0]) if len(models) == 1 else BatchedSequenceModel(models)


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state):
    """``fn`` applied to every tensor of a (nested tuple/list) recurrent state."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(map_state(fn, s) for s in state)


# ---------------------------------------------------------------- data
@dataclass
class Batches:
    """A stream cut into lanes: time-major tensors (N/B, B[, K])."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def batchify(stream, batch_size: int, device: torch.device | str) -> Batches:
    """Lay the stream out as ``batch_size`` parallel lanes (the tail that does not fit is dropped)."""
    n = len(stream) // batch_size
    if n < 1:
        raise ArchsearchError(f"stream of {len(stream)} positions is shorter than one minibatch of {batch_size}")

    def lanes(a: np.ndarray) -> torch.Tensor:
        a = a[: n * batch_size].reshape(batch_size, n, *a.shape[1:])  # (B, N/B[, K])
        return torch.from_numpy(np.ascontiguousarray(a.swapaxes(0, 1))).to(device)  # (N/B, B[, K])

    return Batches(lanes(stream.inputs), lanes(stream.targets), lanes(stream.mask.astype(np.float32)))


@dataclass
class Stacked:
    """Streams of K slices, time-major per slice: (K, N/B, B[, I]); padding has mask 0."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def select(self, keep: list[int]) -> "Stacked":
        return self if keep == list(range(len(self.inputs))) else Stacked(*(t[keep] for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.inputs, self.targets, self.mask


def stack_batches(parts: list[Batches]) -> Stacked:
    """Stack K batchified streams, padding each to the longest with masked positions."""
    if len(parts) == 1:
        return Stacked(parts[0].inputs[None], parts[0].targets[None], parts[0].mask[None])
    longest = max(p.inputs.shape[0] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = longest - t.shape[0]
        return t if extra == 0 else torch.cat([t, t.new_zeros(extra, *t.shape[1:])])

    return Stacked(*(torch.stack([pad(getattr(p, f)) for p in parts]) for f in ("inputs", "targets", "mask")))


def stack_streams(streams, batch_size: int, device) -> Stacked:
    """batchify each slice's stream and pad to the longest with masked positions.

    Masked padding at the end of an epoch gives zero gradients, so SGD leaves the
    weights exactly as they were: a shorter slice trains as if it had stopped there.
    """
    return stack_batches([batchify(s, batch_size, device) for s in streams])
