"""The memorization filter (paper §3.1): read 5 symbols of 26, then reproduce them.

Instance format: ``abcde=abcde.`` -- five random lowercase letters, ``=``, the same
five letters in the same order, and ``.``; instances follow each other directly.
Alphabet (28 symbols): ``a``-``z`` (ids 0-25), ``=`` and ``.``.
Scoring: exactly the five reproduced letters are scored targets, i.e. the mask is 1
at the position of ``=`` and of the first four reproduced letters.
"""

from __future__ import annotations

import numpy as np

from archsearch.tasks._chars import LETTERS, CharTask, random_letters

N_SYMBOLS = 5


class MemorizeTask(CharTask):
    """Copy 5 random letters after ``=`` (teacher forcing); accuracy on the copies."""

    name = "memorize"
    alphabet = LETTERS + "=."
    param_budgets = (25_000,)

    def instance(self, rng: np.random.Generator) -> tuple[str, int, int]:
        word = random_letters(rng, N_SYMBOLS)
        start = N_SYMBOLS + 1  # the first reproduced letter follows "="
        return f"{word}={word}.", start, start + N_SYMBOLS

    def instances(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` instances drawn at once: the same ids as ``count`` calls of ``instance`` (numpy draws a
        (count, 5) block of letters from the same stream as ``count`` draws of 5)."""
        words = rng.integers(0, len(LETTERS), size=(count, N_SYMBOLS))
        marks = np.full((count, 1), self.alphabet.index("="), dtype=np.int64)
        ends = np.full((count, 1), self.alphabet.index("."), dtype=np.int64)
        rows = np.concatenate([words, marks, words, ends], axis=1)
        lo = np.arange(count, dtype=np.int64) * rows.shape[1] + N_SYMBOLS + 1
        return rows.ravel(), lo, lo + N_SYMBOLS
