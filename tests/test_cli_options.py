"""Command-line options and output files: bad values are one line before anything is created,
outputs are checked before work, never overwritten without --force, never left half written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archsearch.cli import main
from archsearch.cli._options import atomic_output, check_output
from archsearch.errors import CLIUsageError


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("archsearch: error: "), err
    return err[0]


@pytest.mark.parametrize("args,fragment", [
    (["search", "--seed", "-1"], "--seed: -1 is out of range"),
    (["search", "--seed", str(2**40)], "--seed"),
    (["search", "--workers", "-1"], "--workers: -1 is out of range"),
    (["search", "--workers", "0"], "--workers: 0 is out of range"),
    (["search", "--max-evaluations", "-5"], "--max-evaluations: -5"),
    (["search", "--time-limit", "-1"], "--time-limit: -1 is out of range: must be above 0"),
    (["search", "--time-limit", "0"], "--time-limit: 0 is out of range"),
    (["search", "--gpus-per-eval", "1e30"], "must be at least 0 and at most 64"),
    (["search", "--workers", "100000"], "--workers: 100000 is out of range"),
    (["search", "--time-limit", "nan"], "--time-limit: 'nan' is not a finite number"),
    (["search", "--name", ""], "--name: '' is not a name"),
    (["search", "--name", "a\nb"], "is not a name"),
    (["search", "--batch-settings", "0"], "--batch-settings"),
    (["search", "--gpus-per-eval", "-0.5"], "--gpus-per-eval"),
    (["search", "--report", "{tmp}/missing/r.html"], "folder"),
    (["search", "--report", "{tmp}/r.txt"], "unsupported extension"),
    (["search", "--tasks", "nope"], "nope"),
    (["search", "--tasks", "xml", "xml"], "lists a task twice"),
])
def test_search_options_are_refused_before_the_database_exists(args, fragment, tmp_path, capsys) -> None:
    db = tmp_path / "s.db"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([argv[0], "--db", f"sqlite:///{db}", "--no-live", *argv[1:]]) == 1
    assert fragment in _one_error_line(capsys)
    assert not db.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,fragment", [
    (["mutate", "gru", "--seed", "-1"], "--seed"),
    (["mutate", "gru", "--count", "0"], "--count"),
    (["export", "gru", "-o", "{tmp}/g.py", "--hidden-size", "0"], "--hidden-size: 0"),
    (["export", "gru", "-o", "{tmp}/g.py", "--layers", "0"], "--layers: 0"),
    (["export", "gru", "-o", "{tmp}/g.py", "--layers", "-2"], "--layers: -2"),
    (["export", "gru", "-o", "{tmp}/g.py", "--task", "nope"], "unknown task 'nope'"),
    (["export", "gru", "-o", "{tmp}/g.py", "--weights", "{tmp}/g.safetensors"], "--weights needs --db"),
    (["export", "gru", "-o", "{tmp}/g.py", "--weights", "{tmp}/g.pt"], "unsupported extension"),
    (["train", "--cell", "gru", "--task", "xml", "--allow-any", "--params", "1e12"], "--params: 1000000000000"),
    (["train", "--cell", "gru", "--task", "xml", "--allow-any", "--lr", "inf"], "--lr: 'inf' is not a finite"),
    (["train", "--cell", "gru", "--task", "xml", "--layers", "99"], "--layers"),
    (["leaderboard", "--top", "0"], "--top: 0"),
    (["report", "--top", "-1"], "--top"),
    (["--log-file", "{tmp}/no/such/dir.log", "cells"], "--log-file"),
    (["no-such-command"], "invalid choice"),
    (["export", "gru"], "required: -o/--output"),
])
def test_other_commands_refuse_bad_options_with_one_line(args, fragment, tmp_path, capsys) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 1
    assert fragment in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_help_returns_zero(capsys) -> None:
    assert main(["search", "--help"]) == 0
    assert "--max-evaluations" in capsys.readouterr().out


@pytest.mark.parametrize("command,option,good", [
    (["show", "gru"], "--picture", "p.png"),
    (["show", "gru"], "--picture", "p.svg"),
    (["export", "gru"], "-o", "g.py"),
])
def test_output_paths_are_checked_and_never_overwritten_without_force(command, option, good, tmp_path, capsys):
    target = tmp_path / good
    assert main([*command, option, str(target)]) == 0
    first = target.read_bytes()
    assert first and sorted(p.name for p in tmp_path.iterdir()) == [good]  # no temporary file left behind
    capsys.readouterr()
    assert main([*command, option, str(target)]) == 1
    assert "already exists; use --force" in _one_error_line(capsys)
    target.write_bytes(b"mine")
    assert main([*command, option, str(target), "--force"]) == 0
    assert target.read_bytes()[:20] == first[:20] and target.read_bytes() != b"mine"  # svg ids differ per run
    bad = [tmp_path / "missing" / good, tmp_path, tmp_path / ("p" + ".gif"), Path("/sys") / good]
    for path, fragment in zip(bad, ["does not exist", "unsupported extension", "unsupported extension",
                                    "cannot write into"]):
        assert main([*command, option, str(path)]) == 1
        assert fragment in _one_error_line(capsys), path
    (tmp_path / ("d" + target.suffix)).mkdir()
    assert main([*command, option, str(tmp_path / ("d" + target.suffix))]) == 1
    assert "is a directory" in _one_error_line(capsys)


def test_atomic_output_leaves_the_old_file_on_any_error(tmp_path) -> None:
    target = check_output(str(tmp_path / "r.html"), (".html",), False, "-o")
    target.write_text("old")
    for error in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_output(target) as tmp:
                tmp.write_text("half")
                raise error
        assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.html"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(CLIUsageError, match="already exists"):
        check_output(str(target), (".html",), False, "-o")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_closed_pipe_is_not_a_traceback() -> None:
    code = "import sys; from archsearch.cli import main; sys.exit(main())"
    # `head -c 10` reads a little and closes the pipe while `show` still writes its long text
    script = f"{sys.executable} -c '{code}' show hm-lstm | head -c 10 > /dev/null; echo rc=${{PIPESTATUS[0]}}"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.stdout.strip() == "rc=141"
