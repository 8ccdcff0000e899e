"""The quick search's evaluations per minute in two modes of the compiled cells, paired.

Runs the README's main job (``archsearch search --preset quick``) for ``--minutes`` each, into a fresh database
each time, alternating two ``--modes`` ``--rounds`` times, and counts the finished evaluations. The modes:
``autograd`` (autograd through the step: the code before issue 15), ``generated`` (the generated window backward,
torch ops only: ``ARCHSEARCH_NATIVE=0``) and ``native`` (the default: the generated backward with native
elementwise stages). The two runs of a round start from the same seed, so they train the same cells with the
same settings until their paths part (float32 rounding differs between the modes). Appends to
``benchmarks/results/quick_search_ab.json``, which ``experiments/render.py`` shows in the README::

    python benchmarks/quick_search_ab.py --minutes 4 --rounds 1 --modes autograd native
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "quick_search_ab.json"
MODES = {  # the environment of each mode
    "autograd": {"ARCHSEARCH_GENERATED_BACKWARD": "0", "ARCHSEARCH_NATIVE": "0"},
    "generated": {"ARCHSEARCH_GENERATED_BACKWARD": "1", "ARCHSEARCH_NATIVE": "0"},
    "native": {"ARCHSEARCH_GENERATED_BACKWARD": "1", "ARCHSEARCH_NATIVE": "1"},
}


def run_once(mode: str, minutes: float) -> dict:
    """One quick search limited to ``minutes``: evaluations finished, wall and CPU seconds."""
    from archsearch.storage import open_storage

    with tempfile.TemporaryDirectory(prefix="archsearch-ab-") as folder:
        url = f"sqlite:///{folder}/quick.db"
        env = {**os.environ, **MODES[mode]}
        command = [sys.executable, "-m", "archsearch", "search", "--preset", "quick", "--db", url,
                   "--time-limit", str(int(minutes * 60))]
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"the quick search ({mode}) failed:\n{done.stderr[-3000:]}")
        storage = open_storage(url, read_only=True)
        record = storage.get_search("quick")
        evaluations = sum(e.status == "done" for e in storage.evaluations(search_id=record.id))
        storage.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"mode": mode, "evaluations": evaluations, "wall_seconds": wall, "cpu_seconds": cpu,
            "evaluations_per_minute": evaluations / (wall / 60)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="time limit of each search (default 4)")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs, the order alternating (default 1)")
    p.add_argument("--json", type=Path, default=RESULTS, help=f"append the measurement here (default {RESULTS})")
    p.add_argument("--modes", nargs=2, choices=list(MODES), default=["autograd", "native"],
                   help="the two modes compared, before then after (default autograd native)")
    args = p.parse_args()
    load = os.getloadavg()[0]
    before, after = args.modes
    runs = []
    for r in range(args.rounds):
        for mode in ((before, after) if r % 2 == 0 else (after, before)):
            runs.append(run_once(mode, args.minutes))
            print(json.dumps(runs[-1]), flush=True)
    rate = {m: sum(x["evaluations"] for x in runs if x["mode"] == m) / sum(x["wall_seconds"] for x in runs
                                                                           if x["mode"] == m) * 60 for m in args.modes}
    print(f"evaluations per minute: {before} {rate[before]:.2f}, {after} {rate[after]:.2f} "
          f"({rate[after] / rate[before]:.2f}x)")
    doc = json.loads(args.json.read_text()) if args.json.exists() else {"benchmark": "quick_search_ab",
                                                                        "measurements": []}
    doc["measurements"].append({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
        "minutes": args.minutes, "rounds": args.rounds, "modes": args.modes, "load_average_before": load,
        "load_average_after": os.getloadavg()[0], "runs": runs, "evaluations_per_minute": rate})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
