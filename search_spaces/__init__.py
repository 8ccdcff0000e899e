"""Seed cells, written in the equation DSL (one ``cells/NAME.cell`` file each)."""

from __future__ import annotations

from importlib import resources

from archsearch.errors import InvalidGraphError
from archsearch.ir import Cell, parse_cell

__all__ = ["seed", "seeds", "seed_source"]


def _cell_files() -> dict[str, str]:
    folder = resources.files(__name__) / "cells"
    return {f.name[: -len(".cell")]: f.name for f in folder.iterdir() if f.name.endswith(".cell")}


def seeds() -> list[str]:
    """Names of the bundled seed cells, sorted."""
    return sorted(_cell_files())


def seed_source(name: str) -> str:
    """The DSL text of seed ``name``."""
    files = _cell_files()
    if name not in files:
        raise InvalidGraphError(f"unknown cell {name!r}; known cells: {', '.join(sorted(files))}")
    return (resources.files(__name__) / "cells" / files[name]).read_text(encoding="utf-8")


def seed(name: str) -> Cell:
    """Parse and validate the seed cell ``name`` (e.g. ``"lstm"``, ``"gru"``, ``"hm-lstm"``)."""
    return parse_cell(seed_source(name), name=name)
