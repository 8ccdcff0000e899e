"""Reading a search database never imports torch (or ray): the commands people run in a loop stay fast."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from archsearch.report._demo import make_demo_db

RUN_AND_LIST_HEAVY_MODULES = """
import json, sys
from archsearch.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory) -> str:
    return make_demo_db(f"sqlite:///{tmp_path_factory.mktemp('reads')}/demo.db", mutants=4, settings=2)


@pytest.mark.parametrize(
    "argv",
    [
        ["leaderboard", "--top", "5"],
        ["leaderboard", "--format", "json", "--equations"],
        ["show", "1", "--json"],
        ["show", "2"],
        ["report", "-o", "{tmp}/report.html"],
        ["db", "current"],
        ["db", "upgrade"],
    ],
    ids=["leaderboard", "leaderboard-json", "show-json", "show", "report", "db-current", "db-upgrade"],
)
def test_read_commands_do_not_import_torch_or_ray(demo_url, tmp_path, argv):
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--db", demo_url]
    run = subprocess.run([sys.executable, "-c", RUN_AND_LIST_HEAVY_MODULES, *argv], capture_output=True, text=True, timeout=300)
    status = json.loads(run.stderr.strip().splitlines()[-1])
    assert status["code"] == 0, run.stderr
    assert status["heavy"] == [], f"{argv[0]} imported {status['heavy']}"
    assert run.stdout.strip() or argv[0] == "report"


def test_the_training_names_still_load_on_first_use():
    import archsearch.search as search
    import archsearch.train as train

    assert callable(train.train_model) and callable(search.SearchDriver)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        train.nope  # noqa: B018
