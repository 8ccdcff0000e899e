"""Cell validation limits (archsearch.ir.limits): hostile or careless cells are refused with one line."""

from __future__ import annotations

import json

import pytest

import archsearch
from archsearch.cli import main
from archsearch.errors import InvalidGraphError
from archsearch.ir import Cell, Op, StateSpec
from archsearch.ir import limits


def _gru_dict() -> dict:
    return archsearch.seed("gru").to_dict()


def _wide(nodes: int) -> Cell:
    """A valid cell with about ``nodes`` nodes: tanh(W x + W h) branches summed pairwise (short paths)."""
    cell = Cell("wide", [StateSpec("h")])
    terms = []
    for i in range((nodes - 1) // 5):
        a = cell.add_node(f"a{i}", Op.LINEAR, ["x"]).name
        b = cell.add_node(f"b{i}", Op.LINEAR, ["h"]).name
        s = cell.add_node(f"s{i}", Op.ADD, [a, b]).name
        terms.append(cell.add_node(f"t{i}", Op.TANH, [s]).name)
    k = 0
    while len(terms) > 1:
        pairs = [cell.add_node(f"m{k + j}", Op.ADD, [terms[2 * j], terms[2 * j + 1]]).name for j in range(len(terms) // 2)]
        k += len(pairs)
        terms = pairs + terms[2 * len(pairs):]
    cell.outputs = (terms[0],)
    return cell


def _chain(ops: int) -> Cell:
    """x + h, then ``ops - 1`` linears in a row: the longest path has ``ops`` ops, all printed inline."""
    cell = Cell("chain", [StateSpec("h")])
    prev = cell.add_node("a", Op.ADD, ["x", "h"]).name
    for i in range(ops - 1):
        prev = cell.add_node(f"l{i}", Op.LINEAR, [prev]).name
    cell.outputs = (prev,)
    return cell


def _refused(data: dict | str, fragment: str) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(InvalidGraphError, match=fragment):
        Cell.from_json(text)


@pytest.mark.parametrize("name", ["h_tilde\n", "h\nimport os", " r", "r\t", "a" * (limits.MAX_NAME_LENGTH + 1), "for"])
def test_node_names_must_be_whole_identifiers(name: str) -> None:
    data = _gru_dict()
    old = data["nodes"][0]["name"]
    data["nodes"][0]["name"] = name
    for node in data["nodes"]:
        node["inputs"] = [name if i == old else i for i in node["inputs"]]
    data["outputs"] = [name if o == old else o for o in data["outputs"]]
    _refused(data, "not a valid, unreserved identifier")


def test_longest_allowed_name_passes_and_fresh_names_stay_within_it() -> None:
    cell = archsearch.seed("gru")
    name = cell.fresh_name("n" * 500)
    assert len(name) <= limits.MAX_NAME_LENGTH
    cell.add_node(name, Op.TANH, ["x"])
    assert len(cell.fresh_name("n" * 500)) <= limits.MAX_NAME_LENGTH  # with a counter appended


@pytest.mark.parametrize("key,value,fragment", [
    ("diag", float("inf"), "diag must be a finite number"),
    ("diag", 11.0, "diag must be a finite number in \\[-10, 10\\]"),
    ("bias_init", float("nan"), "bias_init must be a finite number"),
    ("bias_init", -1e300, "bias_init"),
    ("bias_init", "1", "bias_init"),
    ("bias_init", True, "bias_init"),
])
def test_linear_numbers_are_finite_and_in_range(key: str, value, fragment: str) -> None:
    cell = archsearch.seed("gru")
    cell.linears()[0].attrs[key] = value
    with pytest.raises(InvalidGraphError, match=fragment):
        cell.validate()


@pytest.mark.parametrize("slope", [float("inf"), float("nan"), 0.0, -1.0, 101.0, "2"])
def test_hard_sigmoid_slope(slope) -> None:
    cell = archsearch.seed("hm-lstm")
    node = next(n for n in cell if n.op is Op.HARD_SIGMOID)
    node.attrs["slope"] = slope
    with pytest.raises(InvalidGraphError, match="slope must be a number"):
        cell.validate()
    node.attrs["slope"] = 5.0
    cell.validate()


def test_nan_and_infinity_literals_in_json_are_refused() -> None:
    text = archsearch.seed("gru").to_json().replace('"bias_init":0.0', '"bias_init":NaN', 1)
    assert "NaN" in text
    _refused(text, "NaN is not a number")
    _refused(text.replace("NaN", "Infinity"), "Infinity is not a number")
    _refused(text.replace("NaN", "1e999"), "bias_init must be a finite number")  # parses to inf
    _refused(text.replace("NaN", "1" * 5000), "not valid JSON")  # longer than Python converts


@pytest.mark.parametrize("depth", [-3, 0, limits.MAX_DEPTH + 1, 10**9, "3", True, 2.5])
def test_depth_is_a_small_integer(depth) -> None:
    data = _gru_dict()
    data["depth"] = depth
    _refused(data, "depth must be an integer|malformed")


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d.update(name="x" * (limits.MAX_CELL_NAME_LENGTH + 1)), "cell name is"),
    (lambda d: d.update(name=""), "must be non-empty text"),
    (lambda d: d.update(name=7), "'name' must be a string"),
    (lambda d: d.update(doc="d" * (limits.MAX_DOC_LENGTH + 1)), "doc must be text"),
    (lambda d: d.update(states=[{"name": f"s{i}"} for i in range(limits.MAX_STATES + 1)]), "states, the limit"),
    (lambda d: d["nodes"][0].update(inputs=[["x"]]), "'inputs' must be a list of node names"),
    (lambda d: d["nodes"][0].update(attrs={"width": [1]}), "'attrs' must be an object"),
    (lambda d: d["nodes"][0].update(name=None), "each node must be an object"),
    (lambda d: d.update(outputs=[{}]), "'outputs' must be a list"),
    (lambda d: d.update(nodes={}), "'nodes' must be a list"),
])
def test_malformed_headers_and_types(change, fragment: str) -> None:
    data = _gru_dict()
    change(data)
    _refused(data, fragment)


def test_any_cell_name_text_within_the_length_limit_is_accepted() -> None:
    data = _gru_dict()
    data["name"] = 'two\nlines """ \x00' + "n" * (limits.MAX_CELL_NAME_LENGTH - 15)
    assert len(data["name"]) == limits.MAX_CELL_NAME_LENGTH
    assert Cell.from_json(json.dumps(data)).name == data["name"]  # export escapes it (tests/test_export_security.py)


def test_state_index_must_be_an_integer() -> None:
    cell = archsearch.seed("gru")
    cell.state_nodes()[0].attrs["index"] = "0"
    with pytest.raises(InvalidGraphError, match="state index"):
        cell.validate()


def test_node_count_limit() -> None:
    at_limit = _wide(limits.MAX_NODES)
    assert limits.MAX_NODES - 5 < len(at_limit) <= limits.MAX_NODES
    Cell.from_json(at_limit.to_json())  # accepted
    big = _wide(10 * limits.MAX_NODES)
    _refused(big.to_json(), f"nodes, the limit is {limits.MAX_NODES}")
    with pytest.raises(InvalidGraphError, match="nodes, the limit"):
        big.validate()


def test_longest_path_limit_and_the_printer_at_the_limit() -> None:
    cell = _chain(limits.MAX_PATH).validate()
    assert "W_1" in cell.equations()  # the printer recurses along the path: it must not hit the recursion limit
    archsearch.mutate(cell, rng=0)
    with pytest.raises(InvalidGraphError, match="longest path has"):
        _chain(limits.MAX_PATH + 1).validate()


def test_json_size_and_nesting() -> None:
    _refused("[" * 100_000 + "]" * 100_000, "nested more than")
    data = _gru_dict()
    data["doc"] = "d" * limits.MAX_JSON_CHARS
    _refused(data, "characters, the limit is")
    data = _gru_dict()
    data["nodes"][0]["attrs"] = {"width": "n"}
    data["extra"] = [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]
    _refused(data, "nested more than")


@pytest.mark.parametrize("command", [["show"], ["mutate"], ["export", "-o", "never.py"]])
def test_cli_refuses_huge_and_deep_cells_with_one_line(command, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for text in (_wide(10 * limits.MAX_NODES).to_json(), "[" * 100_000 + "]" * 100_000):
        path = tmp_path / "cell.json"
        path.write_text(text)
        assert main([command[0], str(path), *command[1:]]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("archsearch: error: "), err
    assert not (tmp_path / "never.py").exists()
