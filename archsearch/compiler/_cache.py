"""Bounded per-process caches of the compiler: generated step functions and plans.

A search compiles a new architecture every few evaluations and runs for days, so
both caches are LRUs of :data:`DEFAULT_CACHE_SIZE` entries each (change it with
:func:`set_cache_size`). A step function's generated source is registered in
:mod:`linecache` (tracebacks show the generated line) and unregistered when the
function is evicted. Modules built earlier keep their own reference to their step
function and plan, so eviction never breaks a live model; a cell compiled again
after eviction is simply generated again.
"""

from __future__ import annotations

import linecache
import threading
from typing import Any, Callable, Hashable, TypeVar

import cachetools

DEFAULT_CACHE_SIZE = 256  # entries per cache (step functions; plans): ~architectures x sizes in use at once

T = TypeVar("T")


class _LRU(cachetools.LRUCache):
    """An LRU that calls ``on_evict(key, value)`` for every entry it drops to make room."""

    def __init__(self, maxsize: int, on_evict: Callable[[Any, Any], None] | None = None) -> None:
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        if self._on_evict is not None:
            self._on_evict(key, value)
        return key, value


def _forget_source(_key: Any, value: tuple[str, Callable]) -> None:
    linecache.cache.pop(value[0], None)


_lock = threading.RLock()  # the in-process executor compiles from several threads
_steps = _LRU(DEFAULT_CACHE_SIZE, _forget_source)  # key -> (linecache file name, step function)
_plans = _LRU(DEFAULT_CACHE_SIZE)


def cache_size() -> int:
    """Entries each compiler cache holds (least recently used ones are dropped beyond it)."""
    return int(_steps.maxsize)


def set_cache_size(size: int) -> None:
    """Bound each compiler cache (step functions, plans) to ``size`` entries.

    A no-op when ``size`` is the current bound; otherwise both caches are cleared.

    Raises:
        ValueError: ``size`` is not a positive integer.
    """
    global _steps, _plans
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the compiler cache size must be a positive integer, got {size!r}")
    with _lock:
        if size == cache_size():
            return
        clear_caches()
        _steps = _LRU(size, _forget_source)
        _plans = _LRU(size)


def clear_caches() -> None:
    """Drop every cached step function (and its linecache entry) and plan."""
    with _lock:
        for file_name, _ in _steps.values():
            linecache.cache.pop(file_name, None)
        _steps.clear()
        _plans.clear()


def cached_step(key: Hashable, build: Callable[[], tuple[str, Callable]]) -> Callable:
    """The step function cached under ``key``; ``build()`` returns ``(linecache file name, function)``."""
    with _lock:
        if key in _steps:
            return _steps[key][1]
        entry = build()
        _steps[key] = entry
        return entry[1]


def cached_plan_entry(key: Hashable, build: Callable[[], T]) -> T:
    """The plan cached under ``key``, built by ``build()`` on a miss."""
    with _lock:
        if key in _plans:
            return _plans[key]
        plan = build()
        _plans[key] = plan
        return plan


def cache_info() -> dict[str, int]:
    """Current entries: ``{'steps': n, 'plans': m, 'maxsize': size}``."""
    with _lock:
        return {"steps": len(_steps), "plans": len(_plans), "maxsize": cache_size()}
