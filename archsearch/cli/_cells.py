"""``archsearch cells`` and ``archsearch show``: the seed cells, their equations and pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

from archsearch.cli._options import add_force, atomic_output, check_output, name_text
from archsearch.errors import CLIUsageError, InvalidGraphError
from archsearch.ir import Cell
from archsearch.ir.limits import MAX_JSON_CHARS
from archsearch.search_spaces import seed, seeds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cells", help="list the seed cells")
    p.set_defaults(func=run_cells)
    p = sub.add_parser("show", help="equations (and a picture) of a cell")
    p.add_argument("cell", help="a seed name, a cell JSON file, or (with --db) an architecture id or name")
    p.add_argument("--db", help="look the cell up in this search database (shows lineage and best settings)")
    p.add_argument("--search", type=name_text, help="search name inside the database (default: the most recent)")
    p.add_argument("--picture", metavar="FILE", help="draw the graph to FILE (.png, .svg or .pdf)")
    p.add_argument("--json", action="store_true", help="print the canonical JSON instead")
    add_force(p)
    p.set_defaults(func=run_show)


def load_cell(spec: str) -> Cell:
    """A seed name, or a path to a cell JSON file."""
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        try:
            if path.stat().st_size > 4 * MAX_JSON_CHARS:  # UTF-8 takes at most 4 bytes a character
                raise CLIUsageError(f"cell file {spec!r} is larger than a cell may be ({MAX_JSON_CHARS} characters)")
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CLIUsageError(f"cannot read cell file {spec!r}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise CLIUsageError(f"cell file {spec!r} is not UTF-8 text (byte {e.start})") from e
        return Cell.from_json(text)
    try:
        return seed(spec)
    except InvalidGraphError as e:
        raise CLIUsageError(str(e)) from e


def run_cells(args: argparse.Namespace) -> int:
    print("\n".join(seeds()))
    return 0


def run_show(args: argparse.Namespace) -> int:
    picture = check_output(args.picture, PICTURE_SUFFIXES, args.force, "--picture") if args.picture else None
    if args.db:
        from archsearch.cli._inspect import show_from_db

        cell = show_from_db(args.db, args.search, args.cell, as_json=args.json)
        _picture(cell, picture)
        return 0
    cell = load_cell(args.cell)
    if args.json:
        print(cell.to_json(indent=2))
    else:
        print(f"{cell.name}  ({len(cell)} nodes, states {', '.join(s.name for s in cell.states)}, depth {cell.depth})")
        if cell.doc:
            print(cell.doc)
        print()
        print(cell.equations())
    _picture(cell, picture)
    return 0


PICTURE_SUFFIXES = (".png", ".svg", ".pdf")


def _picture(cell: Cell, path: Path | None) -> None:
    if path is not None:
        from archsearch.ir.draw import draw_cell

        with atomic_output(path) as tmp:
            draw_cell(cell, tmp, fmt=path.suffix.lstrip(".").lower())
        print(f"\npicture written to {path}")
