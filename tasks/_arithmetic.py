"""Arithmetic (paper §3.5): the sum or difference of two numbers, read among distractors.

Instance format: ``<question>=<answer>.`` where the question is ``a`` then ``+`` or
``-`` then ``b`` (each of 1-8 digits (``max_digits``), negative with probability 1/2, so
``12--5`` means 12 - (-5)), with a random number of distractor lowercase letters
between successive question characters, including before ``=``. The number of
distractors at each gap is geometric with mean 1 (0, 1, 2, ... with probabilities
1/2, 1/4, ...; ``distractor_mean``). The answer is written plainly; ``.`` ends the instance.
Example (the paper's, without its final ``.``): ``3e36d9-h1h39f94eeh43keg3c=-13991064``.
Alphabet (40 symbols): ``a``-``z``, ``0``-``9``, ``+``, ``-``, ``=``, ``.``.
Scoring: the answer characters and the final ``.`` are the scored targets, i.e. the
mask is 1 from the position of ``=`` up to the last answer character.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from archsearch.errors import TaskError
from archsearch.tasks._base import Difficulty
from archsearch.tasks._chars import LETTERS, CharTask, random_letters

MAX_DIGITS = 8
NEGATIVE_PROB = 0.5
DISTRACTOR_MEAN = 1.0  # geometric with stop probability 1 / (1 + mean): 0, 1, 2, ... with 1/2, 1/4, ...

_PROBLEM = re.compile(r"(-?\d+)([+-])(-?\d+)=(-?\d+)")


class ArithmeticProblem(NamedTuple):
    """A parsed instance: ``a op b == answer``."""

    a: int
    op: str
    b: int
    answer: int


def parse_arithmetic(text: str) -> ArithmeticProblem:
    """Strip distractors and the optional final ``.``, parse, and check the answer.

    Raises:
        TaskError: the text is not an instance, or its answer is wrong.
    """
    core = re.sub(f"[{LETTERS}]", "", text.strip())
    core = core[:-1] if core.endswith(".") else core
    match = _PROBLEM.fullmatch(core)
    if match is None:
        raise TaskError(f"not an arithmetic instance: {text!r}")
    a, op, b, answer = int(match[1]), match[2], int(match[3]), int(match[4])
    if answer != (a + b if op == "+" else a - b):
        raise TaskError(f"wrong answer in arithmetic instance {text!r}: {a}{op}{b} != {answer}")
    return ArithmeticProblem(a, op, b, answer)


def _numbers(rng: np.random.Generator, count: int, max_digits: int) -> np.ndarray:
    """``count`` operands: a digit count uniform in 1..max_digits, a value uniform among the numbers of that many
    digits (0-9 for one), negative with probability ``NEGATIVE_PROB``."""
    digits = rng.integers(1, max_digits + 1, size=count)
    low = np.where(digits == 1, 0, 10 ** (digits - 1))
    value = rng.integers(low, 10**digits)
    return np.where(rng.random(count) < NEGATIVE_PROB, -value, value)


def _with_distractors(rng: np.random.Generator, core: np.ndarray, gaps: np.ndarray, mean: float) -> np.ndarray:
    """``core`` (symbol ids) with a geometric number (mean ``mean``) of uniform random letters inserted before each
    position where ``gaps`` is true; returns where each core symbol landed, and the ids."""
    before = np.zeros(core.size, dtype=np.int64)
    before[gaps] = rng.geometric(1.0 / (1.0 + mean), size=int(gaps.sum())) - 1
    landed = np.arange(core.size) + np.cumsum(before)
    out = rng.integers(0, len(LETTERS), size=core.size + int(before.sum()))  # letters are the first ids
    out[landed] = core
    return landed, out


class ArithmeticTask(CharTask):
    """Next-character prediction of ``a ± b``; accuracy on the answer characters."""

    name = "arithmetic"
    alphabet = LETTERS + "0123456789+-=."
    param_budgets = (250_000, 1_000_000)
    difficulty_fields = ("arithmetic_max_digits", "arithmetic_distractor_mean")

    def __init__(self, max_digits: int = MAX_DIGITS, distractor_mean: float = DISTRACTOR_MEAN) -> None:
        super().__init__()
        Difficulty(arithmetic_max_digits=max_digits, arithmetic_distractor_mean=distractor_mean)  # checks the range
        self.max_digits, self.distractor_mean = max_digits, distractor_mean

    def with_difficulty(self, difficulty: Difficulty) -> "ArithmeticTask":
        return ArithmeticTask(difficulty.arithmetic_max_digits, difficulty.arithmetic_distractor_mean)

    def instance(self, rng: np.random.Generator) -> tuple[str, int, int]:
        ids, lo, hi = self.instances(rng, 1)
        return self.decode(ids), int(lo[0]), int(hi[0])

    def instances(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` instances drawn at once (see the module docstring for what one is)."""
        a, b = _numbers(rng, count, self.max_digits), _numbers(rng, count, self.max_digits)
        plus = rng.random(count) < 0.5
        answers = np.where(plus, a + b, a - b)
        questions = [f"{x}{'+' if p else '-'}{y}=" for x, p, y in zip(a.tolist(), plus.tolist(), b.tolist())]
        texts = [f"{q}{z}." for q, z in zip(questions, answers.tolist())]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=count)
        starts = np.cumsum(lengths) - lengths  # of each instance in the core (no distractors yet)
        answer_at = starts + np.fromiter(map(len, questions), dtype=np.int64, count=count)
        inside = np.zeros(int(lengths.sum()) + 1, dtype=np.int64)  # 1 on question characters after the first
        np.add.at(inside, starts + 1, 1)
        np.add.at(inside, answer_at, -1)
        gaps = np.cumsum(inside[:-1]) > 0  # a gap before every question character but the first, "=" included
        landed, ids = _with_distractors(rng, self.encode("".join(texts)), gaps, self.distractor_mean)
        ends = landed[starts + lengths - 1] + 1
        return ids, landed[answer_at], ends
