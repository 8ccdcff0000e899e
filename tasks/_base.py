"""The task interface: a ``Task`` hands out long next-step-prediction ``Stream`` s."""

from __future__ import annotations

import abc
import zlib
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from archsearch.errors import TaskError
from archsearch.tasks._metric import Kind, Metric

Split = Literal["train", "valid", "test"]

SPLITS: tuple[str, ...] = get_args(Split)
# 20 lanes x 35 steps x 50 windows: enough for a quick epoch of a synthetic task.
DEFAULT_LENGTH = 20 * 35 * 50


@dataclass(frozen=True)
class Difficulty:
    """How hard the generated tasks are: the paper's values by default; a training scale may lower them.

    Only the tasks it names read it (``Task.with_difficulty``); corpora and memorization ignore it.
    """

    arithmetic_max_digits: int = 8  # operands have 1..this many digits (paper: 8)
    arithmetic_distractor_mean: float = 1.0  # mean distractor letters per gap, geometric (paper: 1)
    xml_max_iterations: int = 50  # after this many steps a document only closes tags (paper: 50)
    xml_max_tag_length: int = 10  # tag names have 2..this many letters (paper: 10)

    def __post_init__(self) -> None:
        if self.arithmetic_max_digits < 1 or self.xml_max_iterations < 1 or self.xml_max_tag_length < 2:
            raise TaskError(f"difficulty out of range: {self}")
        if self.arithmetic_max_digits > 18:  # operands and answers are drawn as int64
            raise TaskError(f"difficulty out of range: arithmetic_max_digits must be at most 18 (int64 operands), got "
                            f"{self.arithmetic_max_digits}")
        if not self.arithmetic_distractor_mean >= 0:
            raise TaskError(f"arithmetic_distractor_mean must be >= 0, got {self.arithmetic_distractor_mean}")


@dataclass(frozen=True)
class Stream:
    """One split as a single stream of positions (teacher forcing).

    ``targets[i]`` is the symbol (or frame) that follows ``inputs[i]``; the
    prediction at position ``i`` counts towards the metric where ``mask[i] == 1``.
    """

    inputs: np.ndarray  # int64 [N] symbol ids, or float32 [N, 88] piano-roll frames
    targets: np.ndarray  # same dtype and shape as inputs
    mask: np.ndarray  # float32 [N]

    def __post_init__(self) -> None:
        n = len(self.inputs)
        assert len(self.targets) == n and self.mask.shape == (n,), (
            f"stream parts disagree: inputs {self.inputs.shape}, "
            f"targets {self.targets.shape}, mask {self.mask.shape}"
        )

    def __len__(self) -> int:
        return len(self.inputs)


class Task(abc.ABC):
    """A prediction problem: a name, sizes, a metric and three splits."""

    name: str
    kind: Kind
    num_inputs: int  # vocabulary size (symbols) or 88 keys (piano)
    num_outputs: int
    metric: Metric  # its direction and how it is computed: see archsearch.tasks.Metric
    synthetic: bool  # generated on demand (any length) vs a fixed corpus
    param_budgets: tuple[int, ...]  # allowed parameter counts (paper §3.7)
    difficulty_fields: tuple[str, ...] = ()  # the Difficulty fields with_difficulty reads

    @abc.abstractmethod
    def stream(self, split: Split, seed: int, length: int | None = None) -> Stream:
        """Return ``split`` as one stream.

        Args:
            split: ``"train"``, ``"valid"`` or ``"test"``.
            seed: generator seed (synthetic tasks); corpora ignore it.
            length: number of positions. Synthetic tasks default to
                ``DEFAULT_LENGTH``; corpora give the whole split for ``None`` and
                otherwise its first ``length`` positions (at most the whole split).

        Raises:
            TaskError: unknown split, bad length, or unreadable data.
        """

    def with_difficulty(self, difficulty: Difficulty) -> "Task":
        """This task at ``difficulty`` (tasks without difficulty knobs return themselves)."""
        return self

    @abc.abstractmethod
    def decode(self, ids: object) -> str:
        """Render ids (symbols) or frames (piano) as text, for debugging and tests."""

    def __repr__(self) -> str:
        return f"<Task {self.name}: {Kind(self.kind).value}, {self.num_inputs} inputs, {Metric(self.metric).value}>"


def check_split(split: str) -> int:
    """Return the index of ``split`` in ``SPLITS`` or raise ``TaskError``."""
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def check_length(length: int | None, default: int | None) -> int | None:
    """Validate a requested stream length (``None`` gives ``default``)."""
    if length is None:
        return default
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise TaskError(f"stream length must be a positive integer, got {length!r}")
    return int(length)


def split_rng(task_name: str, split: str, seed: int) -> np.random.Generator:
    """A generator for one (task, split, seed): the three splits are independent streams."""
    salt = zlib.crc32(task_name.encode())  # different tasks never share a stream
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, check_split(split), salt])


def corpus_stream(values: np.ndarray, mask: np.ndarray, length: int | None) -> Stream:
    """Next-step pairs from one fixed sequence: ``mask[i]`` scores predicting ``values[i+1]``."""
    n = len(values) - 1
    if length is not None:
        n = min(n, length)
    return Stream(inputs=values[:n], targets=values[1 : n + 1], mask=mask[:n])
