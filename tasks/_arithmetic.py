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


def _number(rng: np.random.Generator, max_digits: int) -> int:
    digits = int(rng.integers(1, max_digits + 1))
    low = 0 if digits == 1 else 10 ** (digits - 1)
    value = int(rng.integers(low, 10**digits))
    return -value if rng.random() < NEGATIVE_PROB else value


def _with_distractors(rng: np.random.Generator, chars: str, mean: float) -> str:
    counts = rng.geometric(1.0 / (1.0 + mean), size=len(chars) - 1) - 1
    noise = random_letters(rng, int(counts.sum()))
    out, used = [chars[0]], 0
    for ch, k in zip(chars[1:], counts.tolist()):
        out.append(noise[used : used + k])
        out.append(ch)
        used += k
    return "".join(out)


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
        a, b = _number(rng, self.max_digits), _number(rng, self.max_digits)
        op = "+" if rng.random() < 0.5 else "-"
        answer = a + b if op == "+" else a - b
        question = _with_distractors(rng, f"{a}{op}{b}=", self.distractor_mean)
        text = f"{question}{answer}."
        return text, len(question), len(text)
