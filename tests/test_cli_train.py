"""``archsearch train`` and ``archsearch baselines`` through the real entry point."""

from __future__ import annotations

import collections
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
    out = _run("train", "--cell", "gru", "--task", "xml", "--scale", "ci", "--layers", "2", "--seed", "3", "--json")
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
    out = _run("train", "--cell", str(cell), "--task", "arithmetic", "--scale", "ci", "--lr", "5",
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
    (["--cell", "lstm", "--task", "xml", "--layers", "0", "--allow-any"], "--layers: 0 is out of range: must be at least 1"),
    (["--cell", "lstm", "--task", "xml", "--threads", "0"], "--threads: 0 is out of range: must be at least 1"),
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
    cells = ["tanh", "lstm-f", "lstm", "gru"]
    args = ["baselines", "--tasks", "xml", "--cells", *cells, "--scale", "ci", "--settings", "1", "--jobs", "2"]
    out = _run(*args, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary["best"]) == set(cells) and len(summary["runs"]) == 4
    assert len({json.dumps(run["hparams"]) for run in summary["runs"]}) == 1  # the same setting for every cell
    best = {run["cell"]: run["metric"] for run in summary["runs"]}
    estimate = summary["separation"]["xml"]["estimate"]
    assert estimate["value"] == pytest.approx(min(best["lstm"], best["gru"]) / max(best["tanh"], best["lstm-f"]))
    assert estimate["low"] == estimate["high"] == estimate["value"] and estimate["settings"] == 1  # one setting
    assert summary["separation"]["xml"]["paper"] == pytest.approx(0.4247 / 0.3205)
    assert summary["seconds_per_run"] > 0 and 0 < summary["cpu_seconds_per_run"]
    assert all(run["cpu_seconds"] > 0 for run in summary["runs"])
    assert "nosuch" in _error(_run("baselines", "--cells", "nosuch"))
    assert "--settings must be at least 1" in _error(_run("baselines", "--settings", "0"))
    assert "--batch-settings must be at least 1" in _error(_run("baselines", "--batch-settings", "0"))


def test_baselines_batch_settings_of_one_shape() -> None:
    """Settings of a cell and task that give the same model train as one batched model; the JSON says so."""
    args = ["baselines", "--tasks", "xml", "--cells", "gru", "--scale", "ci", "--settings", "6", "--json"]
    runs = {}
    for batch in ("1", "3"):
        out = _run(*args, "--batch-settings", batch)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["batch_settings"] == int(batch)
        runs[batch] = {run["setting"]: run for run in summary["runs"]}
    shapes = collections.Counter((r["hparams"]["layers"], r["units"]) for r in runs["1"].values())
    expected = []  # each shape's settings in groups of at most 3, each run tagged with its group's size
    for count in shapes.values():
        sizes = [3] * (count // 3) + ([count % 3] if count % 3 else [])
        expected += [size for size in sizes for _ in range(size)]
    assert sorted(r["batched"] for r in runs["3"].values()) == sorted(expected)
    assert max(expected) > 1  # seed 0 draws settings that share a shape
    for setting, run in runs["3"].items():
        alone = runs["1"][setting]
        assert alone["batched"] == 1 and alone["hparams"] == run["hparams"] and alone["units"] == run["units"]



def test_baselines_text_shows_separation_and_time(capsys) -> None:
    from archsearch.cli._baselines import print_separation

    seps = {"arithmetic": {"estimate": {"value": 1.8, "low": 1.2, "high": 2.4}, "paper": 3.025},
            "memorize": {"estimate": None, "paper": None}}
    print_separation(seps, {"runs": 8, "seconds_per_run": 12.34, "cpu_seconds_per_run": 10.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["arithmetic:", "1.800", "[1.200-2.400]", "paper", "3.02"]
    assert lines[2].split()[:2] == ["memorize:", "-"]
    assert lines[3] == "8 runs: 12.3 s wall, 10.0 s CPU per run"


def test_train_help_names_the_tasks_with_other_default_settings() -> None:
    """``--help`` says what ``train`` actually uses when a flag is left out (memorize has its own defaults)."""
    from archsearch.cli._train import DEFAULT_SETTINGS

    run = subprocess.run([sys.executable, "-m", "archsearch", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    text = " ".join(run.stdout.split())
    assert run.returncode == 0 and DEFAULT_SETTINGS
    for task, values in DEFAULT_SETTINGS.items():
        for value in values.values():
            assert f"{task}: {value:g}" in text
