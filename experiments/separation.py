"""The separation benchmark of issue 12: ``archsearch baselines`` on the four separation cells, timed.

    python experiments/separation.py --scale tiny        # settings 3, tasks arithmetic xml, --jobs 2

Runs ``archsearch baselines --scale S --settings 3 --tasks arithmetic xml --cells tanh lstm-f lstm gru
--jobs 2 --batch-settings K --json`` in a subprocess (K: the command's default, 20, unless given) and appends
one measurement to ``experiments/results/separation_<scale>.json``: the separation per task with its bootstrap interval, the wall time of the command, the CPU time of the command
and its workers, and the machine's load average before and after (a loaded machine inflates the wall time,
not the CPU time). ``experiments/render.py`` shows every measurement per scale, newest first, in the README.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, conditions, save

# Issue 12's targets per scale: the least separation per task, and the longest wall time of the command on an idle
# 2-core machine (minutes).
TARGETS: dict[str, dict[str, float]] = {
    "tiny": {"arithmetic": 1.5, "xml": 1.15, "minutes": 5.0},
    "small": {"arithmetic": 2.0, "xml": 1.25, "minutes": 20.0},
}


def _train_config(scale: str) -> dict:
    """The scale's resolved training config per task, so a measurement stays readable after the scale changes."""
    from dataclasses import asdict

    from archsearch.tasks import get_task
    from archsearch.train import setting_space, task_config

    configs = {t: json.loads(json.dumps(asdict(task_config(scale, get_task(t))))) for t in ("arithmetic", "xml")}
    return {**configs, "setting_space": json.loads(json.dumps(asdict(setting_space(scale))))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tiny")
    p.add_argument("--settings", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--batch-settings", type=int, default=20, help="the command's --batch-settings (default 20)")
    p.add_argument("--note", default="", help="what this measurement is for (shown in the README's table)")
    p.add_argument("--out", type=Path, help="default experiments/results/separation_<scale>.json")
    args = p.parse_args(argv)
    out = args.out or RESULTS / f"separation_{args.scale}.json"
    command = ["archsearch", "baselines", "--scale", args.scale, "--settings", str(args.settings), "--tasks",
               "arithmetic", "xml", "--cells", "tanh", "lstm-f", "lstm", "gru", "--jobs", str(args.jobs),
               "--batch-settings", str(args.batch_settings), "--json"]
    entry = "import sys; from archsearch.cli import main; sys.exit(main())"
    before, started = conditions(), time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", entry, *command[1:]], capture_output=True, text=True)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    measurement = {"command": " ".join(command[:-1]), "wall_seconds": wall, "cpu_seconds": cpu,
                   "separation": result["separation"], "best": result["best"], "seconds_per_run": result["seconds_per_run"],
                   "cpu_seconds_per_run": result["cpu_seconds_per_run"], "runs": result["runs"],
                   "start": before, "end": conditions(), "train_config": _train_config(args.scale),
                   "batch_settings": args.batch_settings}
    if args.note:
        measurement["note"] = args.note
    data = json.loads(out.read_text()) if out.exists() else {"experiment": "separation", "scale": args.scale,
                                                                "measurements": []}
    data["measurements"].append(measurement)
    save(out, data)
    seps = {t: s["estimate"] for t, s in result["separation"].items()}
    print(json.dumps({"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "separation": seps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
