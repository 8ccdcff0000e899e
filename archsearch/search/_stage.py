"""Where an architecture stands in the search (paper §3.1): a typed value, stored as its string form.

::

    init                      a seed: its initial settings on every task
    filter#v                  one memorization setting (visit v of this architecture)
    task:<name>#v             settings on one search task, then the 90% gate
    complete                  passed every gate: eligible for the top-100 list
    filtered_out#v            stopped by the filter; may be re-examined later (visit v + 1)
    gated_out:<name>#v        stopped at a task's gate; may be re-examined later with fresh settings
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StageKind(str, enum.Enum):
    INIT = "init"
    FILTER = "filter"
    TASK = "task"
    COMPLETE = "complete"
    FILTERED_OUT = "filtered_out"
    GATED_OUT = "gated_out"


_WITH_TASK = frozenset({StageKind.TASK, StageKind.GATED_OUT})
_WITH_VISIT = frozenset({StageKind.FILTER, StageKind.TASK, StageKind.FILTERED_OUT, StageKind.GATED_OUT})


@dataclass(frozen=True)
class Stage:
    """A stage: its kind, the task (``task`` and ``gated_out``) and the visit (1, 2, ... where it has one)."""

    kind: StageKind
    task: str | None = None
    visit: int = 0

    def __post_init__(self) -> None:
        if (self.task is not None) != (self.kind in _WITH_TASK):
            raise ValueError(f"a {self.kind.value} stage {'needs' if self.kind in _WITH_TASK else 'has no'} task")
        if (self.visit >= 1) != (self.kind in _WITH_VISIT):
            raise ValueError(f"a {self.kind.value} stage {'needs a visit >= 1' if self.kind in _WITH_VISIT else 'has no visit'}")

    @classmethod
    def parse(cls, text: str) -> "Stage":
        """The stage written as ``text`` (what :func:`str` gives); ValueError if it is not one."""
        head, sep, visit = text.partition("#")
        kind, colon, task = head.partition(":")
        try:
            return cls(StageKind(kind), task if colon else None, int(visit) if sep else 0)
        except ValueError:
            raise ValueError(f"not a stage: {text!r}") from None

    def __str__(self) -> str:
        text = self.kind.value if self.task is None else f"{self.kind.value}:{self.task}"
        return f"{text}#{self.visit}" if self.visit else text

    @property
    def label(self) -> str:
        """The stage without its visit (``task:xml``), for counting architectures by stage."""
        return self.kind.value if self.task is None else f"{self.kind.value}:{self.task}"

    @property
    def in_progress(self) -> bool:
        """True while the stage has evaluations to run before the driver decides what comes next."""
        return self.kind in (StageKind.INIT, StageKind.FILTER, StageKind.TASK)

    @property
    def stopped(self) -> bool:
        """True for a candidate stopped by the filter or a gate (it may be re-examined)."""
        return self.kind in (StageKind.FILTERED_OUT, StageKind.GATED_OUT)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def filter(cls, visit: int) -> "Stage":
        return cls(StageKind.FILTER, visit=visit)

    @classmethod
    def on_task(cls, task: str, visit: int) -> "Stage":
        return cls(StageKind.TASK, task, visit)


INIT = Stage(StageKind.INIT)
COMPLETE = Stage(StageKind.COMPLETE)
