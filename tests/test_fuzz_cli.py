"""Fuzzing the command line as a hostile or careless user would (hypothesis).

Cell JSON files (seed cells with values replaced, keys dropped, garbage added, text cut, random bytes)
go to ``show``, ``export``, ``mutate`` and ``train --cell``; random argument vectors go to every
command (``cells``, ``show``, ``export``, ``mutate``, ``leaderboard``, ``report``, ``train``, ``search``,
``baselines``, ``db``). Each case must succeed or fail with exactly one ``archsearch: error:`` line and exit 1:
never a traceback, never a hang (a per-case alarm), never a changed input file.

The CI run is in-process and small; ``pytest -m slow tests/test_fuzz_cli.py`` runs many more examples.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archsearch
from archsearch.cli import main
from archsearch.search import preset
from archsearch.storage import open_storage

CASE_SECONDS = 60  # a case slower than this is a hang (most take well under a second)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
SEEDS = ("tanh", "gru", "lstm", "hm-lstm")
_SEED_DICTS = {name: archsearch.seed(name).to_dict() for name in SEEDS}
WORK = Path(tempfile.mkdtemp(prefix="archsearch-fuzz-"))  # one folder for the module (hypothesis reruns examples)
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


# ------------------------------------------------------------------ running one case


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a command ran longer than {CASE_SECONDS} s")


def run_cli(argv: list[str], inputs: list[Path]) -> tuple[int, str, str]:
    """``main(argv)`` in-process with an alarm; checks the one-line error rule and that ``inputs`` are unchanged."""
    before = {p: _digest(p) for p in inputs}
    out, err = io.StringIO(), io.StringIO()
    old, cwd = signal.signal(signal.SIGALRM, _alarm), os.getcwd()
    signal.alarm(CASE_SECONDS)
    os.chdir(WORK)  # default outputs (report.html) land in the scratch folder, not the repository
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(cwd)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    check_outcome(argv, code, err.getvalue())
    assert {p: _digest(p) for p in inputs} == before, f"{argv} changed an input file"
    return code, out.getvalue(), err.getvalue()


def check_outcome(argv: list[str], code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, f"{argv}: {stderr}"
    assert code in (0, 1), f"{argv} exited {code}: {stderr}"
    errors = [line for line in stderr.splitlines() if line.startswith("archsearch: error:")]
    if code == 1:
        assert len(errors) == 1 and stderr.rstrip("\n").splitlines()[-1] == errors[0], f"{argv}: {stderr!r}"
    else:
        assert not errors, f"{argv}: {stderr}"


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


# ------------------------------------------------------------------ hostile cell files

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["n", "1", "x", "h", "linear", "tanh", "add", "state", "h\n", "", "__import__", '"""']),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON value."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, prefix + (i,))
    return found


@st.composite
def edited_cells(draw) -> dict:
    """A seed cell's JSON with 1-4 edits: a value replaced, a key or item dropped, an item duplicated."""
    data = copy.deepcopy(_SEED_DICTS[draw(st.sampled_from(SEEDS))])
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "drop", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return data


@st.composite
def cell_texts(draw) -> bytes:
    """The bytes of a hostile cell file."""
    kind = draw(st.sampled_from(["edited", "edited", "edited", "cut", "garbage", "bytes", "deep", "constant"]))
    if kind == "edited":
        return json.dumps(draw(edited_cells())).encode()
    if kind == "cut":
        text = json.dumps(_SEED_DICTS[draw(st.sampled_from(SEEDS))]).encode()
        return text[: draw(st.integers(0, len(text)))]
    if kind == "garbage":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.sampled_from([17, 1000, 100_000]))
        return (b"[" * depth + b"]" * depth) if draw(st.booleans()) else b'{"a":' * depth + b"1" + b"}" * depth
    text = json.dumps(_SEED_DICTS["gru"])
    return text.replace("0.0", draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000])), 1).encode()


def _cell_file(data: bytes) -> Path:
    path = WORK / f"cell-{hashlib.sha256(data).hexdigest()[:16]}.json"
    path.write_bytes(data)
    return path


CELL_COMMANDS = {
    "show": lambda f, o: ["show", str(f)],
    "show-json": lambda f, o: ["show", str(f), "--json"],
    "show-picture": lambda f, o: ["show", str(f), "--picture", str(o.with_suffix(".svg")), "--force"],
    "export": lambda f, o: ["export", str(f), "-o", str(o.with_suffix(".py")), "--force"],
    "mutate": lambda f, o: ["mutate", str(f), "--seed", "3", "--count", "2"],
    # --device tpu is refused after the cell, task and setting are checked: no training in the fuzz run
    "train": lambda f, o: ["train", "--cell", str(f), "--task", "xml", "--scale", "tiny", "--device", "tpu"],
}


def _cell_case(data: bytes, command: str) -> None:
    cell = _cell_file(data)
    run_cli(CELL_COMMANDS[command](cell, WORK / "out"), [cell])


@FAST
@given(data=cell_texts(), command=st.sampled_from(sorted(CELL_COMMANDS)))
def test_fuzz_cell_files(data: bytes, command: str) -> None:
    _cell_case(data, command)


@pytest.mark.slow
@SLOW
@given(data=cell_texts(), command=st.sampled_from(sorted(CELL_COMMANDS)))
def test_fuzz_cell_files_many(data: bytes, command: str) -> None:
    _cell_case(data, command)


# ------------------------------------------------------------------ hostile argument vectors


def _database() -> Path:
    """A small real database: one search and the GRU (no results), made once per module."""
    path = WORK / "fuzz.db"
    if not path.exists():
        storage = open_storage(f"sqlite:///{path}")
        sid = storage.create_search("quick", preset("quick").to_dict(), 0).id
        gru = archsearch.seed("gru")
        storage.add_architecture(sid, name="gru", graph_json=gru.to_json(), structural_hash=gru.structural_hash(),
                                 fingerprint=None, parent_id=None, mutation=None, origin="seed", stage="complete")
        storage.close()
    return path


NUMBERS = ["-1", "0", "1", "2", "-5", "1e12", "1e999", "nan", "inf", "-inf", "0.5", "99999999999999999999",
           "abc", "", " ", "1_000", "0x10", "١"]
PATHS = ["{w}/out.py", "{w}/missing/x.py", "{w}", "/sys/x.png", "{w}/p.png", "{w}/r.html", "{w}/w.safetensors",
         "{w}/x.gif", "", "-", "/dev/null", "{w}/p.svg"]
TEXTS = ["", "quick", "nope", "a\nb", "x" * 300, "ptb", "xml", "memorize", "gru", "1", "99999", "'; DROP TABLE x;--"]
# per command: option -> values it may get (None: a flag)
OPTIONS: dict[str, dict[str, list[str] | None]] = {
    "show": {"--db": ["{db}", "sqlite:///{w}/none.db", "nosuch://x", "{w}"], "--search": TEXTS,
             "--picture": PATHS, "--json": None, "--force": None},
    "export": {"--db": ["{db}", "sqlite:///{w}/none.db"], "--search": TEXTS, "-o": PATHS, "--hidden-size": NUMBERS,
               "--layers": NUMBERS, "--weights": PATHS, "--task": TEXTS, "--data-dir": PATHS, "--force": None},
    "mutate": {"--seed": NUMBERS, "--count": ["-1", "0", "1", "3", "x", "1e999", "10001"], "--json": None},
    "leaderboard": {"--db": ["{db}", "sqlite:///{w}/none.db", "sqlite://", "{w}"], "--search": TEXTS,
                    "--top": NUMBERS, "--format": ["table", "json", "csv", "xml"], "--equations": None},
    "report": {"--db": ["{db}", "sqlite:///{w}/none.db"], "-o": PATHS, "--top": NUMBERS, "--search": TEXTS,
               "--plots": ["svg", "png"], "--force": None},
    "train": {"--cell": ["gru", "nope", "{w}"], "--task": TEXTS, "--lr": NUMBERS, "--init-scale": NUMBERS,
              "--max-grad-norm": NUMBERS, "--layers": NUMBERS, "--params": NUMBERS, "--seed": NUMBERS,
              "--threads": NUMBERS, "--scale": ["tiny", "huge"], "--allow-any": None, "--json": None,
              "--data-dir": PATHS},
    "search": {"--preset": ["quick", "paper", "nope"], "--name": TEXTS, "--seed": NUMBERS, "--workers": NUMBERS,
               "--max-evaluations": NUMBERS, "--time-limit": NUMBERS, "--batch-settings": NUMBERS,
               "--gpus-per-eval": NUMBERS, "--cpus-per-eval": NUMBERS, "--max-retries": NUMBERS,
               "--report": PATHS, "--data-dir": PATHS, "--force": None, "--device": ["cpu", "gpu"],
               "--strategy": ["evolution", "random", "nope"], "--ray": None, "--ray-address": ["", "auto", "nosuch:1"],
               "--take-over": None, "--no-live": None},
    "baselines": {"--tasks": TEXTS, "--cells": ["gru", "nope", "{w}", ""], "--settings": NUMBERS,
                  "--scale": ["ci", "huge"], "--seed": NUMBERS, "--data-dir": PATHS, "--device": ["cpu", "tpu"],
                  "--threads": NUMBERS, "--jobs": NUMBERS, "--batch-settings": NUMBERS, "--json": None},
    "db": {"--db": ["{db}", "sqlite:///{w}/none.db", "nosuch://x", "{w}"]},
    "cells": {},
}
POSITIONAL = {"show": ["gru", "1", "nope", "{w}", ""], "export": ["gru", "1", "nope", ""], "mutate": ["gru", "nope", ""],
              "db": ["current", "upgrade", "nope", ""]}
# appended last so that a vector that is otherwise valid stops before long work (training, a search)
LAST = {"train": ["--device", "tpu"], "search": ["--db", "sqlite:///{w}/search.db", "--tasks", "no-such-task"],
        "report": ["--plots", "svg"], "baselines": ["--tasks", "no-such-task"]}


@st.composite
def argument_vectors(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    if command in POSITIONAL:
        argv.append(draw(st.sampled_from(POSITIONAL[command])))
    options = OPTIONS[command]
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=6)) if options else []:
        argv.append(name)
        values = options[name]
        if values is not None and draw(st.integers(0, 9)):  # now and then the value is missing
            argv.append(draw(st.sampled_from(values)))
    argv += LAST.get(command, [])
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--nope", "-x", "--", "--debug=1"])))
    return [a.replace("{w}", str(WORK)).replace("{db}", f"sqlite:///{_database()}") for a in argv]


def test_the_argument_fuzzer_covers_every_command_and_option() -> None:
    """A new command or option is fuzzed as soon as it exists (``-h`` aside)."""
    import argparse

    from archsearch.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(OPTIONS) == set(sub.choices)
    for command, parser in sub.choices.items():
        if command == "db":  # options live on its actions
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["current"]
        fuzzed = set(OPTIONS[command]) | set(LAST.get(command, []))
        missing = [a.option_strings for a in parser._actions
                   if a.option_strings and a.dest != "help" and not fuzzed & set(a.option_strings)]
        assert not missing, f"{command}: {missing} never fuzzed"


def _vector_case(argv: list[str]) -> None:
    run_cli(argv, [_database()])
    assert not (WORK / "search.db").exists(), f"{argv} created a database it then refused"


@FAST
@given(argv=argument_vectors())
def test_fuzz_argument_vectors(argv: list[str]) -> None:
    _vector_case(argv)


@pytest.mark.slow
@SLOW
@given(argv=argument_vectors())
def test_fuzz_argument_vectors_many(argv: list[str]) -> None:
    _vector_case(argv)


# ------------------------------------------------------------------ the real entry point, a few cases


@pytest.mark.parametrize("content,command", [
    (b"[" * 100_000 + b"]" * 100_000, "show"),
    (json.dumps(_SEED_DICTS["gru"]).replace('"r"', '"r\\n"').encode(), "export"),
], ids=["nested-show", "newline-name-export"])  # short ids: pytest puts the id in the environment
def test_hostile_files_through_the_real_entry_point(content: bytes, command: str, tmp_path) -> None:
    """Two cases through ``python -m archsearch`` (the in-process fuzz above covers many more)."""
    cell = tmp_path / "c.json"
    cell.write_bytes(content)
    args = [command, str(cell)] + (["-o", str(tmp_path / "o.py")] if command == "export" else [])
    out = subprocess.run([sys.executable, "-m", "archsearch", *args], capture_output=True, text=True, timeout=120)
    check_outcome(args, out.returncode, out.stderr)
    assert out.returncode == 1
    assert cell.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]
