"""Wall time of the read-only commands on a search database (``leaderboard``, ``show --db``, ``report``).

Each command runs as a fresh process, as a user runs it in a loop while a search writes the
database; the median of ``--repeats`` runs is reported, with the heavy modules each run imported.
Compare two checkouts by running this file with each one's interpreter, e.g.::

    python benchmarks/read_path.py --db sqlite:///archsearch.db --json benchmarks/results/read_path.json

Without ``--db`` a synthetic database (archsearch.report._demo) is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """
import json, sys
from archsearch.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "ray") if m in sys.modules)}), file=sys.stderr)
"""
COMMANDS = {
    "leaderboard": ["leaderboard", "--top", "100"],
    "show --db": ["show", "1"],
    "report": ["report", "-o", "{tmp}/report-{run}.html"],  # a new file per run (no --force: old versions lack it)
}


def time_command(argv: list[str], repeats: int) -> dict:
    seconds, heavy = [], []
    for i in range(repeats):
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", PROBE, *(a.replace("{run}", str(i)) for a in argv)],
                             capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        status = json.loads(run.stderr.strip().splitlines()[-1])
        if status["code"] != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{run.stderr}")
        heavy = status["heavy"]
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": len(seconds), "imports": heavy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", help="database URL (default: a synthetic one)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db
        if url is None:
            from archsearch.report._demo import make_demo_db

            url = make_demo_db(f"sqlite:///{tmp}/demo.db", mutants=40, settings=3)
        results = {name: time_command([a.replace("{tmp}", tmp) for a in argv] + ["--db", url], args.repeats)
                   for name, argv in COMMANDS.items()}
    out = {"db": url if args.db else "synthetic (40 mutants)", "python": platform.python_version(),
           "machine": platform.machine(), "results": results}
    for name, r in results.items():
        print(f"{name:12s} median {r['median_s']:.2f} s (min {r['min_s']:.2f}, {r['runs']} runs)  imports: {', '.join(r['imports']) or 'neither torch nor ray'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
