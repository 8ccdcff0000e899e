"""Hostile text in a cell (its name, its doc) never runs when an exported file is imported.

A cell reaches ``export`` from a JSON file or from a shared search database, so its name is
untrusted. Each case exports through the CLI and imports the file in a fresh interpreter
whose canary file must stay absent; the docstring must still show the name as written.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import archsearch
from archsearch.cli import main
from archsearch.export import export_source
from archsearch.storage import open_storage

HOSTILE_NAMES = [
    'x"""; __import__("os").system("touch CANARY"); """',
    "x'''; __import__('os').system('touch CANARY'); '''",
    'trailing backslash \\',
    'x\\"""; open("CANARY", "w"); """',
    'line\n"""\nopen("CANARY", "w")\n"""',
    "nul \x00 bell \x07 unicode \u00e9\u2028 end",
    '"' * 7,
]

IMPORT_AND_REPORT_DOC = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(module.__doc__))
"""


def _hostile_cell_json(name: str) -> str:
    data = json.loads(archsearch.seed("gru").to_json())
    data["name"] = name
    data["doc"] = name
    return json.dumps(data)


def _import_in_fresh_interpreter(path, cwd) -> str:
    (cwd / "import_it.py").write_text(IMPORT_AND_REPORT_DOC)
    run = subprocess.run([sys.executable, "import_it.py", str(path)], cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not (cwd / "CANARY").exists(), "importing the exported file ran code from the cell's name"
    return json.loads(run.stdout)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_cell_name_from_a_json_file_is_inert(tmp_path, name, capsys):
    (tmp_path / "cell.json").write_text(_hostile_cell_json(name))
    out = tmp_path / "cell.py"
    assert main(["export", str(tmp_path / "cell.json"), "-o", str(out), "--hidden-size", "8"]) == 0
    doc = _import_in_fresh_interpreter(out, tmp_path)
    assert repr(name) in doc  # the docstring reads back the name exactly as the cell has it


def test_hostile_cell_name_from_a_shared_database_is_inert(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    name = HOSTILE_NAMES[0]
    cell = archsearch.Cell.from_json(_hostile_cell_json(name))
    with open_storage(url) as storage:
        search = storage.create_search("s", {"tasks": ["arithmetic"]}, seed=0)
        arch, _ = storage.add_architecture(
            search.id, name="m1", graph_json=cell.to_json(), structural_hash=cell.structural_hash(),
            fingerprint=None, parent_id=None, mutation=None, origin="mutant", stage="complete",
        )  # fmt: skip
    out = tmp_path / "cell.py"
    assert main(["export", str(arch.id), "--db", url, "-o", str(out), "--hidden-size", "8"]) == 0
    assert repr(name) in _import_in_fresh_interpreter(out, tmp_path)


def test_escaped_export_still_computes_like_the_compiled_cell(tmp_path, monkeypatch):
    """Bit for bit with the compiled module on torch ops, to rounding with its native stages; and no name of
    the cell reaches the native stages' C."""
    import importlib.util

    import torch

    from archsearch.compiler import _native
    from archsearch.compiler._module import cached_plan

    cell = archsearch.Cell.from_json(_hostile_cell_json(HOSTILE_NAMES[0]))
    path = tmp_path / "cell.py"
    path.write_text(export_source(cell, 5, class_name="Exported"))
    spec = importlib.util.spec_from_file_location("exported_hostile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exported = module.Exported(5, 5).double()
    ref = archsearch.compile(cell, 5, 5, dtype=torch.float64)
    exported.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(exported(x)[0], ref(x)[0], rtol=0, atol=1e-12)
    c_source = cached_plan(cell, 5).native.c_source
    assert cell.name not in c_source and not any(node.name in c_source for node in cell if len(node.name) > 3)
    monkeypatch.setattr(_native, "ENABLED", False)
    assert torch.equal(exported(x)[0], ref(x)[0])


def test_a_class_name_that_is_not_an_identifier_is_refused():
    with pytest.raises(archsearch.errors.CompileError, match="not a Python identifier"):
        export_source(archsearch.seed("gru"), 4, class_name="Bad; import os")


@pytest.mark.parametrize("name", archsearch.seeds())
def test_the_layout_in_an_exported_file_is_plain_data(name):
    """LAYOUT = Layout.from_dict(<a literal>): ast.literal_eval reads it back, so nothing in it can run."""
    import ast

    from archsearch.compiler import Layout, plan_cell

    tree = ast.parse(export_source(archsearch.seed(name), 8))
    (assign,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "LAYOUT"]
    call = assign.value
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == "Layout.from_dict" and len(call.args) == 1
    data = ast.literal_eval(call.args[0])
    layout = plan_cell(archsearch.seed(name), 8).layout
    assert data == layout.to_dict() and Layout.from_dict(data) == layout
