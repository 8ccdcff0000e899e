"""What a task is scored by: one typed definition of each metric, its direction and how it is computed.

Every number the search compares (the trainer's best epoch, the early-stop target, fitness, the 90% gate,
the leaderboard) goes through :class:`Metric`, so a lower-is-better metric (NLL, perplexity) can never be
ranked the wrong way. The search ranks and divides :meth:`Metric.score` values: positive, higher is better,
so that ``score(cell) / score(reference)`` is the paper's ratio for accuracy and for exp(-NLL) (PTB), and
``reference / cell`` for NLL and perplexity (a cell with 10% lower NLL than the GRU scores 1.11).
"""

from __future__ import annotations

import enum
import math


class Kind(str, enum.Enum):
    """What a task's positions are: symbols (softmax over a vocabulary) or piano-roll frames (88 sigmoids)."""

    SYMBOLS = "symbols"
    PIANO = "piano"


class Metric(str, enum.Enum):
    """A task's metric, computed from the model's predictions or from the NLL per scored position."""

    ACCURACY = "accuracy"  # next-symbol accuracy with teacher forcing (higher is better)
    EXP_NEG_NLL = "exp_neg_nll"  # exp(-NLL) = 1 / perplexity: the paper's PTB "accuracy" (higher is better)
    PERPLEXITY = "perplexity"  # exp(NLL) (lower is better)
    NLL = "nll"  # NLL per time step, e.g. summed over the 88 keys of a piano roll (lower is better)

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.ACCURACY, Metric.EXP_NEG_NLL)

    @property
    def from_predictions(self) -> bool:
        """True if computed from argmax predictions (accuracy), else from the NLL (:meth:`from_nll`)."""
        return self is Metric.ACCURACY

    def from_nll(self, nll: float) -> float:
        """The metric of a stream whose mean NLL per scored position is ``nll``."""
        if self is Metric.EXP_NEG_NLL:
            return math.exp(-nll)
        if self is Metric.PERPLEXITY:
            return math.exp(nll) if nll < 700 else math.inf
        if self is Metric.NLL:
            return nll
        raise ValueError(f"{self.value} is computed from predictions, not from the NLL")

    def better(self, value: float, than: float | None) -> bool:
        """True if ``value`` is strictly better than ``than`` (anything beats None)."""
        if than is None:
            return True
        return value > than if self.higher_is_better else value < than

    def reached(self, value: float, target: float) -> bool:
        """True if ``value`` is at least as good as ``target``."""
        return value == target or self.better(value, target)

    def score(self, value: float | None) -> float:
        """The positive, higher-is-better number the search ranks and normalizes (0: no usable value).

        The value itself for a higher-is-better metric, its reciprocal for a lower-is-better one, so that
        ``score(a) / score(b)`` is how many times better ``a`` is than ``b`` in either direction.
        """
        if value is None or not math.isfinite(value):
            return 0.0
        if self.higher_is_better:
            return max(float(value), 0.0)
        return 1.0 / max(float(value), 1e-12)  # an NLL of 0 (perfect) is the best score, not a division by 0

    def perplexity(self, value: float) -> float | None:
        """The perplexity a value stands for (NLL-based word metrics), else None."""
        if self is Metric.EXP_NEG_NLL:
            return 1.0 / value if value > 0 else math.inf
        if self is Metric.PERPLEXITY:
            return value
        return None
