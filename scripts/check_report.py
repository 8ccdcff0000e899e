#!/usr/bin/env python3
"""Open an archsearch report in headless Chromium: screenshot, JavaScript errors, rendered plots.

Usage::

    python scripts/check_report.py report.html --screenshot report.png
    python scripts/check_report.py --db sqlite:///archsearch.db --screenshot report.png
    python scripts/check_report.py --demo 40 --screenshot docs/report.png   # synthetic database

Needs Debian's chromium (``apt-get install -y chromium``). Exits 0 when the page
loaded without console errors and every plotly figure drew its SVG (``main-svg``);
1 otherwise, with the reasons on stderr.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
          "--run-all-compositor-stages-before-draw", "--virtual-time-budget=15000"]
_CONSOLE = re.compile(r"CONSOLE\(\d+\)\]\s*\"(.*)\", source: (.*)")
_ERROR_WORDS = ("Uncaught", "Error", "error")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("check_report: no chromium on PATH (apt-get install -y chromium)")


def run_chromium(page: Path, extra: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with a fresh profile; stdout/stderr captured."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               *extra, page.resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    """Console messages that look like JavaScript errors."""
    errors = []
    for line in stderr.splitlines():
        m = _CONSOLE.search(line)
        if m and any(w in m.group(1) for w in _ERROR_WORDS):
            errors.append(f"{m.group(1)} ({m.group(2)})")
    return errors


def check_dom(dom: str) -> tuple[dict[str, int], list[str]]:
    """Counts of what rendered, and problems: plotly divs without their SVG, missing sections."""
    counts = {
        "plotly figures": dom.count('class="plotly-graph-div'),
        "plotly svg layers": dom.count('class="main-svg"'),
        "static svg plots": dom.count('class="svgplot"'),
        "cell sections": len(re.findall(r'<section class="cell"', dom)),
        "cell pictures": len(re.findall(r'<div class="picture"[^>]*><svg', dom)),
        "equation blocks": dom.count('<pre class="equations">'),
    }
    problems = []
    if counts["plotly figures"] and counts["plotly svg layers"] < counts["plotly figures"]:
        problems.append(f"{counts['plotly figures']} plotly figures but only {counts['plotly svg layers']} drew an SVG")
    if counts["cell sections"] != counts["cell pictures"] or counts["cell sections"] != counts["equation blocks"]:
        problems.append(f"cell sections {counts['cell sections']}, pictures {counts['cell pictures']}, "
                        f"equations {counts['equation blocks']}: every cell needs both")
    if "</html>" not in dom:
        problems.append("the dumped DOM is incomplete")
    return counts, problems


def shrink_png(path: Path, limit: int) -> None:
    """Quantize a screenshot to a 256-colour palette if it is larger than ``limit`` bytes."""
    if path.stat().st_size <= limit:
        return
    from PIL import Image

    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def build_page(args: argparse.Namespace, workdir: Path) -> Path:
    from archsearch.report import write_report

    if args.report:
        return Path(args.report)
    url = args.db
    if args.demo is not None:
        from archsearch.report._demo import make_demo_db

        url = make_demo_db(f"sqlite:///{workdir / 'demo.db'}", mutants=args.demo)
    if not url:
        raise SystemExit("check_report: give a report file, --db URL or --demo N")
    return write_report(url, workdir / "report.html", top=args.top, plots=args.plots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", help="an existing report HTML file")
    parser.add_argument("--db", help="build the report from this database first")
    parser.add_argument("--demo", type=int, metavar="N", help="build a synthetic database with N mutation steps first")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--plots", default="plotly", choices=["plotly", "svg"])
    parser.add_argument("--screenshot", metavar="PNG", help="write a screenshot here")
    parser.add_argument("--window-size", default="1400,2400")
    parser.add_argument("--max-png-bytes", type=int, default=400_000, help="quantize larger screenshots")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        page = build_page(args, Path(tmp))
        print(f"page: {page} ({page.stat().st_size / 1e6:.2f} MB)")
        dumped = run_chromium(page, ["--dump-dom"])
        errors = console_errors(dumped.stderr)
        counts, problems = check_dom(dumped.stdout)
        if args.screenshot:
            shot = Path(args.screenshot).resolve()
            run_chromium(page, [f"--screenshot={shot}", f"--window-size={args.window_size}"])
            if not shot.is_file():
                problems.append(f"no screenshot was written to {shot}")
            else:
                shrink_png(shot, args.max_png_bytes)
                print(f"screenshot: {shot} ({shot.stat().st_size / 1e3:.0f} kB)")
    print("rendered: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for message in errors:
        print(f"console error: {message}", file=sys.stderr)
    for message in problems:
        print(f"problem: {message}", file=sys.stderr)
    if dumped.returncode != 0:
        print(f"chromium exited with {dumped.returncode}", file=sys.stderr)
    ok = not errors and not problems and dumped.returncode == 0
    print("OK: no JavaScript errors, every plot rendered" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
