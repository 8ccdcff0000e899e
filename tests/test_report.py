"""The search report: a page from a small real search, from synthetic databases, and the CLI's errors.

The real search (two seeds, two tasks, tiny training, 16 evaluations) is built once
per session and takes 1-3 minutes on a shared 2-core machine, so its tests are
marked ``slow`` (run them with ``-m slow``). The fast tests check the same things on
a synthetic database written through the storage API (real cells and mutation
records, random results; see :mod:`archsearch.report._demo`).
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archsearch.executors import InProcessExecutor
from archsearch.ir import Cell
from archsearch.report import build_report, write_report
from archsearch.report._demo import make_demo_db
from archsearch.search import SearchConfig, SearchDriver
from archsearch.storage import open_storage

TINY_TRAIN = {"max_epochs": 1, "epoch_positions": 1400, "valid_positions": 700, "test_positions": 700,
              "param_scale": 0.02}
TASKS = ("arithmetic", "xml")
SECTIONS = ("fitness", "top", "cells", "funnel", "hparams", "facts")
_EXTERNAL = re.compile(r'<(?:script|link|img|iframe)[^>]*\s(?:src|href)="(?:https?:)?//', re.I)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    entry = "import sys; from archsearch.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", entry, "report", *args], capture_output=True, text=True, timeout=300)


def _section(page: str, arch_id: int) -> str:
    m = re.search(rf'<section class="cell" id="cell-{arch_id}">(.*?)</section>', page, re.S)
    assert m, f"no section for architecture {arch_id}"
    return m.group(1)


@pytest.fixture(scope="session")
def real_search(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report')}/search.db"
    config = SearchConfig(
        name="report", tasks=TASKS, seeds=("lstm", "gru"), scale="tiny", train_overrides=TINY_TRAIN,
        filter_overrides={**TINY_TRAIN, "param_scale": 0.1}, settings_per_task=1, init_settings_per_task=1,
        filter_threshold=0.0, gate=0.5, p_reevaluate=0.2, seed=3,
    )
    with InProcessExecutor(1) as executor:
        SearchDriver(open_storage(url), config, executor, max_evaluations=16).run()
    return url


@pytest.fixture(scope="session")
def real_page(real_search, tmp_path_factory) -> str:
    path = write_report(real_search, tmp_path_factory.mktemp("page") / "report.html")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> str:
    return make_demo_db(f"sqlite:///{tmp_path_factory.mktemp('demo')}/demo.db", mutants=12, failure_rate=0.1)


@pytest.fixture(scope="session")
def demo_page(demo_db) -> str:
    return build_report(demo_db, top=5)


def _check_top_cells(url: str, page: str, tasks: list[str], top: int) -> None:
    """Every top cell has a linked section with its equations, a picture, its fitness and a lineage to a seed."""
    storage = open_storage(url, read_only=True)
    search = storage.list_searches()[-1]
    ranked = storage.top_k(search.id, top, tasks)
    assert ranked, "nothing on the top list"
    assert any(a.origin == "mutant" for a in storage.list_architectures(search.id)), "the search made no mutant"
    for arch, fitness, _ in ranked:
        body = _section(page, arch.id)
        assert html.escape(Cell.from_json(arch.graph_json).equations()) in body
        assert re.search(r'<div class="picture"[^>]*><svg', body), f"no picture for {arch.name}"
        assert f"{fitness:.4f}" in body
        assert f'href="#cell-{arch.id}"' in page, "the top table row must link to the section"
        assert "(seed)" in body, "the lineage must reach a seed"
    assert page.count('<section class="cell"') == len(ranked)


def _check_page(page: str) -> None:
    for key in SECTIONS:
        assert f'id="{key}"' in page
    assert page.count("plotly.js v") == 1, "plotly.js must be inlined exactly once"
    assert page.count('class="plotly-graph-div"') == 2
    assert not _EXTERNAL.findall(page), "the page must open offline"
    assert 'id="no-mutants"' not in page


# ---------------------------------------------------------------- a real search
@pytest.mark.slow
def test_every_top_cell_of_a_real_search_has_equations_and_a_picture(real_search, real_page) -> None:
    _check_top_cells(real_search, real_page, list(TASKS), 10)
    _check_page(real_page)


@pytest.mark.slow
def test_lineage_of_a_real_search_shows_each_mutation(real_search, real_page) -> None:
    _check_lineage(real_search, real_page, list(TASKS), 10)


def _check_lineage(url: str, page: str, tasks: list[str], top: int) -> None:
    from archsearch.mutation import MutationRecord

    storage = open_storage(url, read_only=True)
    search = storage.list_searches()[-1]
    mutants = [a for a, _, _ in storage.top_k(search.id, top, tasks) if a.origin == "mutant"]
    for arch in mutants:
        for line in MutationRecord.from_dict(arch.mutation).describe().splitlines():
            assert html.escape(line) in _section(page, arch.id)


# ---------------------------------------------------------------- synthetic databases
DEMO_TASKS = ["arithmetic", "xml", "ptb-mini"]


def test_every_top_cell_has_equations_and_a_picture(demo_db, demo_page) -> None:
    _check_top_cells(demo_db, demo_page, DEMO_TASKS, 5)
    _check_page(demo_page)


def test_lineage_shows_each_mutation(demo_db, demo_page) -> None:
    _check_lineage(demo_db, demo_page, DEMO_TASKS, 5)


def test_static_svg_report_has_no_javascript(demo_db) -> None:
    page = build_report(demo_db, top=2, plots="svg")
    assert "<script" not in page
    assert page.count('class="svgplot"') == 2
    assert len(re.findall(r'<section class="cell"', page)) == 2
    assert "Failures (" in page and "synthetic failure" in page
    assert not _EXTERNAL.findall(page)


def test_funnel_counts_come_from_the_driver_counters(demo_db) -> None:
    from archsearch.report import _data

    data = _data.load(demo_db)
    rows = {r.label: r.count for r in _data.funnel(data)}
    counters = data.counters
    assert rows["candidates proposed (mutation steps)"] == counters["proposed"] == 12
    assert rows["passed the filter"] == counters.get("passed_filter", 0)
    assert rows["stopped at the arithmetic gate"] == counters.get("gated_out:arithmetic", 0)


def test_fitness_over_time_uses_the_frozen_normalizers_as_the_leaderboard_does(tmp_path) -> None:
    """A re-evaluation that lifts the GRU above its frozen best moves neither the leaderboard nor the report's
    curve: the curve's last point is the leaderboard's best fitness, and each dot is its cell's fitness there."""
    from archsearch.report._data import load, timeline

    url = make_demo_db(f"sqlite:///{tmp_path}/demo.db", mutants=8, failure_rate=0.0)
    storage = open_storage(url)
    search = storage.list_searches()[-1]
    gru = storage.find_architecture(search.id, name="gru")
    for task in search.config["tasks"]:
        ev = storage.add_evaluation(gru.id, task, {"lr": 0.5, "init_scale": 1.0, "max_grad_norm": 5.0, "layers": 1,
                                                   "params": 1_000_000}, "reeval")
        storage.mark_running(ev.id, "w")
        better = 1.5 * search.normalizers[task]
        storage.record_result(ev.id, {"metric": better, "valid": better, "test": better, "epochs": 1, "seconds": 1.0,
                                      "params": 1, "diverged": False, "history": []})
    assert storage.normalizers(search.id) == search.normalizers
    ranked = storage.top_k(search.id, 100, search.config["tasks"])
    storage.close()

    tl = timeline(load(url))
    assert tl.best[-1] == pytest.approx(ranked[0][1])
    leaderboard = {arch.name: fitness for arch, fitness, _ in ranked}
    assert tl.arrivals and {name: fitness for name, _, _, fitness in tl.arrivals} == pytest.approx(
        {name: leaderboard[name] for name, _, _, _ in tl.arrivals})


def test_empty_database_says_so(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    open_storage(url).close()
    page = build_report(url)
    assert 'id="no-search"' in page and "No search in this database yet" in page
    assert "<script" not in page


@pytest.mark.parametrize("evaluate_seeds", [False, True])
def test_search_without_mutants_says_so(tmp_path, evaluate_seeds: bool) -> None:
    url = f"sqlite:///{tmp_path}/seeds.db"
    if evaluate_seeds:
        make_demo_db(url, mutants=0, name="seeds-only")
    else:
        storage = open_storage(url)
        storage.create_search("just-started", SearchConfig().to_dict(), 0)
        storage.close()
    page = build_report(url)
    assert 'id="no-mutants"' in page and "No mutants yet" in page
    for key in SECTIONS:
        assert f'id="{key}"' in page
    if evaluate_seeds:  # the seeds are complete: they are listed with their pictures
        assert page.count('<section class="cell"') == 3


def test_unknown_search_name_is_an_error(demo_db) -> None:
    from archsearch.errors import StorageError

    with pytest.raises(StorageError, match="no search named 'nope'"):
        build_report(demo_db, search_name="nope")


# ---------------------------------------------------------------- the command line
def test_cli_writes_the_report(demo_db, tmp_path) -> None:
    out = tmp_path / "r.html"
    result = _run_cli("--db", demo_db, "-o", str(out), "--top", "1", "--plots", "svg")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "report written to" in result.stdout
    assert out.read_text(encoding="utf-8").count('<section class="cell"') == 1


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/x.db", "bogus://nowhere"])
def test_cli_bad_database_url_is_one_line_and_exit_1(url: str, tmp_path) -> None:
    result = _run_cli("--db", url, "-o", str(tmp_path / "r.html"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error:"), result.stderr
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- cell pictures
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_draw_cell_marks_states_in_and_out(name: str, tmp_path) -> None:
    from archsearch.ir.draw import cell_svg, draw_cell, layout, output_marker
    from archsearch.search_spaces import seed

    cell = seed(name)
    draw_cell(cell, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = cell_svg(cell)
    assert svg.startswith("<svg") and "<metadata>" not in svg
    for state in cell.states:
        assert f"{state.name}_(t-1)" in svg and f"{state.name}_t<" in svg
    columns = layout(cell)
    last = max(c for c, _ in columns.values())
    assert columns["x"][0] == 0 and all(columns[s.name][0] == 0 for s in cell.states)
    assert all(columns[output_marker(k)][0] == last for k in range(len(cell.outputs)))


def test_importing_the_report_and_draw_modules_stays_light() -> None:
    code = ("import sys, archsearch.ir, archsearch.ir.draw, archsearch.report; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
