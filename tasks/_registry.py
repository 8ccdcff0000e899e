"""Task names -> task objects."""

from __future__ import annotations

import os
from typing import Callable

from archsearch.errors import TaskError
from archsearch.tasks._arithmetic import ArithmeticTask
from archsearch.tasks._base import Task
from archsearch.tasks._memorize import MemorizeTask
from archsearch.tasks._music import MUSIC_FILES, chorales_task, pickle_music_task
from archsearch.tasks._ptb import ptb_mini_task, ptb_task
from archsearch.tasks._xml import XMLTask

_FACTORIES: dict[str, Callable[[str | os.PathLike | None], Task]] = {
    "memorize": lambda _: MemorizeTask(),
    "arithmetic": lambda _: ArithmeticTask(),
    "xml": lambda _: XMLTask(),
    "ptb": ptb_task,
    "ptb-mini": lambda _: ptb_mini_task(),
    **{name: (lambda d, name=name: pickle_music_task(name, d)) for name in MUSIC_FILES},
    "chorales": lambda _: chorales_task(),
}
_BUILTIN = frozenset(_FACTORIES)


def register_task(name: str, factory: Callable[[str | os.PathLike | None], Task]) -> None:
    """Make ``get_task(name, data_dir)`` return ``factory(data_dir)`` in this process.

    For tasks of your own (a ``Task`` subclass declaring its ``kind`` and ``metric``) searched with the
    in-process executor; Ray workers import this registry afresh and know only the built-in tasks.

    Raises:
        TaskError: ``name`` is a built-in task.
    """
    if name in _BUILTIN:
        raise TaskError(f"{name!r} is a built-in task; register yours under another name")
    _FACTORIES[name] = factory


def task_names() -> list[str]:
    """All known task names."""
    return list(_FACTORIES)


def get_task(name: str, data_dir: str | os.PathLike | None = None) -> Task:
    """The task called ``name``; ``data_dir`` holds the files of ``ptb`` and the music pickles.

    Bundled and synthetic tasks ignore ``data_dir``.

    Raises:
        TaskError: unknown name, or the task's files are missing from ``data_dir``.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(_FACTORIES)}")
    return factory(data_dir)
