"""``archsearch report``: one self-contained HTML page showing how a search is going."""

from __future__ import annotations

import argparse

from archsearch.cli._options import add_force, atomic_output, check_output, name_text, positive_int
from archsearch.storage import DEFAULT_URL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a search (read-only; works while it runs)")
    p.add_argument("--db", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--top", type=positive_int, default=10, help="top cells with a row and a section (default 10)")
    p.add_argument("--search", type=name_text, help="search name (default: the most recent one)")
    p.add_argument("--plots", choices=["plotly", "svg"], default="plotly",
                   help="plotly: interactive, ~5 MB (plotly.js inlined); svg: static, smaller (default plotly)")
    add_force(p)
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from archsearch.report import write_report

    path = check_output(args.output, (".html", ".htm"), args.force, "-o")
    with atomic_output(path) as tmp:
        write_report(args.db, tmp, top=args.top, search_name=args.search, plots=args.plots)
    size = path.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    print(f"report written to {path} ({shown}); open it in a browser (works offline)")
    return 0
