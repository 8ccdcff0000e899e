"""Sizes in units of the hidden size, ``(a, b)`` = ``a * n + b``, and how generated code writes them."""

from __future__ import annotations

from typing import Iterable

from archsearch.compiler._runtime import Size


def add_sizes(a: Size, b: Size) -> Size:
    return (a[0] + b[0], a[1] + b[1])


def sum_sizes(sizes: Iterable[Size]) -> Size:
    total: Size = (0, 0)
    for size in sizes:
        total = add_sizes(total, size)
    return total


def size_code(size: Size, n: str) -> str:
    """``(a, b)`` as Python text in terms of the local variable ``n`` (the hidden size)."""
    a, b = size
    terms = ([n if a == 1 else f"{a} * {n}"] if a else []) + ([str(b)] if b or not a else [])
    return " + ".join(terms)
