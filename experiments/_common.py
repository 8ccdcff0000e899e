"""Shared by the experiment scripts: a resumable JSON results file and the conditions of a run."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
_claims: dict[Path, int] = {}  # results files this process writes: the descriptor holding each one's lock


def conditions() -> dict[str, Any]:
    """Where and when: machine, CPU count, load average (the shared machine's load inflates wall times)."""
    import torch

    return {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "python": platform.python_version(),
            "code": code_revision()}


def code_revision() -> str | None:
    """The git commit of the code that runs (``+`` if a Python file differs from it), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "*.py"], cwd=here.parent,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+" if dirty else "")


def _claim(path: Path) -> None:
    """Hold an exclusive lock on ``path`` for the rest of this process: a second writer would overwrite the
    runs this one appends (each writes its whole document)."""
    path = path.resolve()
    if path in _claims:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"{path}: another process is writing it; wait for it to finish (one run a time "
                         f"per results file; --jobs runs several trainings in one process)") from None
    _claims[path] = fd


def load(path: Path, header: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """The results so far, or a new document with ``header``; this process is then the file's only writer.

    Raises:
        SystemExit: another process writes the file, or it holds results of a different configuration
            (rerun with ``--fresh``).
    """
    _claim(path)
    if path.exists() and not fresh:
        data = json.loads(path.read_text())
        differs = {k for k, v in header.items() if data.get(k) != json.loads(json.dumps(v))}
        if differs:
            raise SystemExit(f"{path}: stored results differ in {', '.join(sorted(differs))}; rerun with --fresh "
                             f"to start over or change --out")
        return data
    return {**header, "sessions": [], "runs": []}


def save(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
