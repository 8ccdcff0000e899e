"""Synthetic character tasks: whole generated instances concatenated into one stream."""

from __future__ import annotations

import abc

import numpy as np

from archsearch.errors import TaskError
from archsearch.tasks._base import DEFAULT_LENGTH, Split, Stream, Task, check_length, split_rng
from archsearch.tasks._metric import Kind, Metric

LETTERS = "abcdefghijklmnopqrstuvwxyz"
INSTANCES_PER_DRAW = 256  # instances a stream draws at a time (fixed: streams of one seed share their prefix)


class CharTask(Task):
    """A generated task over a small alphabet of characters, scored by accuracy.

    Subclasses set ``name``, ``alphabet`` and ``param_budgets`` and implement
    ``instance``; symbol ids are indices into ``alphabet``.
    """

    kind = Kind.SYMBOLS
    metric = Metric.ACCURACY
    synthetic = True
    alphabet: str

    def __init__(self) -> None:
        self.num_inputs = self.num_outputs = len(self.alphabet)
        self._lookup = np.full(256, -1, dtype=np.int64)  # byte -> symbol id
        for i, ch in enumerate(self.alphabet):
            self._lookup[ord(ch)] = i

    @abc.abstractmethod
    def instance(self, rng: np.random.Generator) -> tuple[str, int, int]:
        """One instance as text, plus the span ``[lo, hi)`` of its characters that are scored.

        A character is scored as a *target*: the prediction made one position
        earlier (from the character before it) counts towards the accuracy.
        """

    def instances(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` instances, concatenated: their symbol ids and each one's scored span ``[lo, hi)`` (arrays,
        positions in the ids). Subclasses may draw them all at once; by default, one ``instance`` after another."""
        texts, lo, hi, total = [], [], [], 0
        for _ in range(count):
            text, start, end = self.instance(rng)
            texts.append(text)
            lo.append(total + start)
            hi.append(total + end)
            total += len(text)
        return self.encode("".join(texts)), np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64)

    def stream(self, split: Split, seed: int, length: int | None = None) -> Stream:
        """Concatenate whole instances (drawn ``INSTANCES_PER_DRAW`` at a time, so a shorter stream is a prefix
        of a longer one) until ``length + 1`` characters, then cut."""
        n = check_length(length, DEFAULT_LENGTH)
        rng = split_rng(self.name, split, seed)
        parts, spans, total = [], [], 0
        while total < n + 1:
            ids, lo, hi = self.instances(rng, INSTANCES_PER_DRAW)
            parts.append(ids)
            spans.append((lo + total, hi + total))
            total += ids.size
        ids = np.concatenate(parts)
        lo, hi = np.concatenate([s[0] for s in spans]), np.concatenate([s[1] for s in spans])
        change = np.zeros(total + 1, dtype=np.int32)  # +1 where a scored span starts, -1 where it ends
        np.add.at(change, lo, 1)
        np.add.at(change, hi, -1)
        scored = (np.cumsum(change[:total]) > 0).astype(np.float32)
        return Stream(inputs=ids[:n], targets=ids[1 : n + 1], mask=scored[1 : n + 1])

    def encode(self, text: str) -> np.ndarray:
        """Text -> int64 symbol ids; ``TaskError`` for a character outside the alphabet."""
        try:
            raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError as e:
            raise TaskError(f"{self.name}: non-ASCII character in {text[:40]!r}") from e
        ids = self._lookup[raw]
        if (ids < 0).any():
            bad = text[int(np.argmax(ids < 0))]
            raise TaskError(f"{self.name}: character {bad!r} is not in the alphabet {self.alphabet!r}")
        return ids

    def decode(self, ids: object) -> str:
        """Symbol ids -> text."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if arr.size and (arr.min() < 0 or arr.max() >= len(self.alphabet)):
            raise TaskError(f"{self.name}: symbol id out of range 0..{len(self.alphabet) - 1}")
        return "".join(self.alphabet[i] for i in arr.tolist())


def random_letters(rng: np.random.Generator, n: int) -> str:
    """``n`` uniform random lowercase letters."""
    return "".join(LETTERS[i] for i in rng.integers(0, 26, size=n).tolist())
