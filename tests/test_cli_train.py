"""``archsearch train`` and ``archsearch baselines`` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    entry = "import sys; from archsearch.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", entry, *args], capture_output=True, text=True, timeout=timeout)


def _error(out: subprocess.CompletedProcess) -> str:
    """The one error line (asserting there is exactly one and the exit code is 1)."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error: "), out.stderr
    return lines[0]


def test_train_json_is_the_last_stdout_line() -> None:
    out = _run("train", "--cell", "gru", "--task", "xml", "--scale", "tiny", "--layers", "2", "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("metric", "valid", "test", "epochs", "seconds", "params", "units", "diverged"):
        assert key in record
    assert record["hparams"] == {"lr": 1.0, "init_scale": 1.0, "max_grad_norm": 5.0, "layers": 2, "params": 250_000}
    assert 0 < record["metric"] <= 1 and not record["diverged"] and record["params"] <= 250_000 * 0.02
    assert "epochs" in out.stderr  # the progress bar went to stderr


def test_train_text_summary_and_diverged_json(tmp_path) -> None:
    cell = tmp_path / "relu.json"
    from archsearch.ir import parse_cell

    cell.write_text(parse_cell("cell relu\nstates h\nh' = relu(W(x) + W(h) + b)\n").to_json())
    out = _run("train", "--cell", str(cell), "--task", "arithmetic", "--scale", "tiny", "--lr", "5",
               "--init-scale", "2.8", "--max-grad-norm", "20", "--json")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and record["diverged"] and record["metric"] == 0 and record["valid"] is None


@pytest.mark.parametrize("args,message", [
    (["--cell", "nosuch", "--task", "xml"], "nosuch"),
    (["--cell", "lstm", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["--cell", "missing.json", "--task", "xml"], "cannot read cell file"),
    (["--cell", "lstm", "--task", "ptb"], "--data-dir"),
    (["--cell", "lstm", "--task", "jsb"], "--data-dir"),
    (["--cell", "lstm", "--task", "xml", "--lr", "0.7"], "lr=0.7 is outside the paper's range"),
    (["--cell", "lstm", "--task", "xml", "--params", "300000"], "params=300000 is outside"),
    (["--cell", "lstm", "--task", "xml", "--layers", "0", "--allow-any"], "layers must be positive"),
    (["--cell", "lstm", "--task", "xml", "--threads", "0"], "--threads must be at least 1"),
])
def test_train_errors(args, message) -> None:
    assert message in _error(_run("train", *args))


def test_train_missing_and_unreadable_files(tmp_path) -> None:
    assert "missing" in _error(_run("train", "--cell", "lstm", "--task", "ptb", "--data-dir", str(tmp_path)))
    (tmp_path / "JSB Chorales.pickle").write_bytes(b"not a pickle at all")
    line = _error(_run("train", "--cell", "lstm", "--task", "jsb", "--data-dir", str(tmp_path)))
    assert "JSB Chorales.pickle" in line or "jsb" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_cuda_without_cuda() -> None:
    assert "CUDA is not available" in _error(_run("train", "--cell", "lstm", "--task", "xml", "--device", "cuda"))


def test_baselines_json_and_table() -> None:
    args = ["baselines", "--tasks", "xml", "--cells", "tanh", "gru", "--scale", "tiny", "--settings", "1"]
    out = _run(*args, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary["best"]) == {"tanh", "gru"} and len(summary["runs"]) == 2
    assert summary["runs"][0]["hparams"] == summary["runs"][1]["hparams"]  # the same setting for every cell
    assert "nosuch" in _error(_run("baselines", "--cells", "nosuch"))
    assert "--settings must be at least 1" in _error(_run("baselines", "--settings", "0"))
