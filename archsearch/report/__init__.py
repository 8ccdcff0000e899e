"""The search report: one self-contained HTML page showing how a search is going.

``write_report(url, path)`` reads the database read-only (so it works while a
search runs) and writes a page with fitness over time, the top cells (equations,
picture, lineage, best settings), the funnel, a hyper-parameter view and run
facts. The page needs no server and no network.
"""

from archsearch.report._report import build_report, write_report
from archsearch.report._plots import BACKENDS

__all__ = ["BACKENDS", "build_report", "write_report"]
