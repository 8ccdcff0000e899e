"""``archsearch mutate`` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

from archsearch.ir import Cell
from archsearch.mutation import MutationRecord


def _run(*args: str) -> subprocess.CompletedProcess:
    entry = "import sys; from archsearch.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", entry, "mutate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_json_children_are_valid_and_reproducible(tmp_path) -> None:
    out = _run("lstm", "--seed", "4", "--count", "3", "--json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        obj = json.loads(line)
        assert obj["index"] == i
        cell = Cell.from_dict(obj["cell"]).validate()
        record = MutationRecord.from_dict(obj["record"])
        assert record.child_hash == cell.structural_hash()
    path = tmp_path / "child.json"
    path.write_text(json.dumps(json.loads(lines[0])["cell"]))
    again = _run(str(path), "--seed", "1")
    assert again.returncode == 0, again.stderr
    assert "# child 0:" in again.stdout and "h_t" in again.stdout
    assert _run("lstm", "--seed", "4", "--count", "3", "--json").stdout == out.stdout


def test_text_and_errors() -> None:
    out = _run("gru", "--seed", "2")
    assert out.returncode == 0 and out.stdout.startswith("# child 0: gru~")
    assert any(line[:3] in {f"({k})" for k in range(1, 7)} for line in out.stdout.splitlines())
    bad = _run("no-such-cell")
    assert bad.returncode == 1 and "unknown cell" in bad.stderr
