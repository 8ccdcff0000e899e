"""Build and write the report page (the public entry points)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from archsearch.errors import ArchsearchError
from archsearch.report import _data as D
from archsearch.report._html import esc, page
from archsearch.report._plots import make_plots

log = logging.getLogger(__name__)
_ID_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)')


def build_report(storage_url: str, top: int = 10, search_name: str | None = None, plots: str = "plotly") -> str:
    """The report page of a search as HTML text.

    Args:
        storage_url: SQLAlchemy URL of the search database (opened read-only).
        top: How many top cells get a row and a section.
        search_name: The search inside the database (default: the most recent).
        plots: ``'plotly'`` (interactive, plotly.js inlined) or ``'svg'`` (static, small).

    Raises:
        StorageError: The database cannot be opened or has no such search.
        ValueError: ``top`` < 1 or an unknown ``plots`` back end.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    backend = make_plots(plots)
    data = D.load(storage_url, search_name, top)
    log.info("report: %d architectures, %d evaluations, %d top cells", len(data.archs), len(data.evals), len(data.top))
    return page(data, backend, {row.arch.id: _picture(row.arch) for row in data.top})


def write_report(storage_url: str, path: str | os.PathLike, top: int = 10, search_name: str | None = None,
                 plots: str = "plotly") -> Path:
    """Write the report of a search to ``path`` (atomically: a reader never sees half a page).

    Returns:
        The path written.

    Raises:
        StorageError: The database cannot be opened or has no such search.
        ValueError: ``top`` < 1 or an unknown ``plots`` back end.
        OSError: ``path`` cannot be written.
    """
    text = build_report(storage_url, top=top, search_name=search_name, plots=plots)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("report written to %s (%.1f kB)", target, len(text.encode("utf-8")) / 1024)
    return target


def _picture(arch) -> str:
    """The cell's graph as inline SVG with ids made unique in the page; a note if it cannot be drawn."""
    from archsearch.ir import Cell
    from archsearch.ir.draw import cell_svg

    try:
        svg = cell_svg(Cell.from_json(arch.graph_json))
    except (ArchsearchError, ValueError, KeyError) as e:
        log.warning("cannot draw %s: %s", arch.name, e)
        return f"<p class=muted>cannot draw this cell: {esc(e)}</p>"
    return _ID_REFERENCE.sub(lambda m: f"{m.group(1)}c{arch.id}-", svg)
