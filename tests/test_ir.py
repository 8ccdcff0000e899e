"""The cell graph IR: validation, canonical JSON, structural hash, DSL and equation printer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import archsearch
from archsearch.errors import DSLError, InvalidGraphError
from archsearch.ir import Cell, Op, StateSpec, parse_cell


@pytest.mark.parametrize("name", archsearch.seeds())
def test_json_round_trip_keeps_the_hash(name):
    cell = archsearch.seed(name)
    text = cell.to_json()
    again = Cell.from_json(text)
    assert again.structural_hash() == cell.structural_hash()
    assert again.to_json() == text  # canonical: the same text again
    assert json.loads(text)["format"] == "archsearch.cell/1"


def test_hash_and_json_are_stable_across_processes():
    code = "import archsearch; c = archsearch.seed('hm-lstm'); print(c.structural_hash()); print(c.to_json())"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0].splitlines()[0] == archsearch.seed("hm-lstm").structural_hash()


def _renamed(cell: Cell, prefix: str) -> Cell:
    data = cell.to_dict()
    names = {n["name"]: f"{prefix}{i}" for i, n in enumerate(reversed(data["nodes"]))}
    for node in data["nodes"]:
        node["name"] = names[node["name"]]
        node["inputs"] = [names.get(i, i) for i in node["inputs"]]
    data["nodes"].reverse()  # a different (still valid) insertion order
    data["outputs"] = [names.get(o, o) for o in data["outputs"]]
    return Cell.from_dict(data).validate()


@pytest.mark.parametrize("name", ["lstm", "gru", "gf-gru", "hm-lstm"])
def test_hash_ignores_names_and_order(name):
    cell = archsearch.seed(name)
    assert _renamed(cell, "node").structural_hash() == cell.structural_hash()


def test_hash_ignores_argument_order_of_add_but_not_of_sub():
    a = parse_cell("states h\nh' = tanh(W(x) + W(h))")
    b = parse_cell("states h\nh' = tanh(W(h) + W(x))")
    assert a.structural_hash() == b.structural_hash()
    c = parse_cell("states h\nh' = tanh(W(x) - W(h))")
    d = parse_cell("states h\nh' = tanh(W(h) - W(x))")
    assert c.structural_hash() != d.structural_hash()


def test_hash_tells_seeds_apart():
    hashes = {archsearch.seed(n).structural_hash() for n in archsearch.seeds()}
    assert len(hashes) == len(archsearch.seeds())


def test_equations_in_paper_notation():
    assert archsearch.seed("gru").equations().splitlines() == [
        "r = σ(W_1 x_t + W_2 h_{t-1} + b_1)",
        "z = σ(W_3 x_t + W_4 h_{t-1} + b_3)",
        "h_tilde = tanh(W_5 x_t + W_6 (r ⊙ h_{t-1}) + b_5)",
        "h_t = z ⊙ h_{t-1} + (1 - z) ⊙ h_tilde",
    ]
    lstm = archsearch.seed("lstm").equations().splitlines()
    assert lstm[0] == "i = tanh(W_1 x_t + W_2 h_{t-1} + b_1)"
    assert lstm[-2:] == ["c_t = c_{t-1} ⊙ f + i ⊙ j", "h_t = tanh(c_t) ⊙ o"]
    assert "(b_5 starts at 1)" in archsearch.seed("lstm-b").equations()


# ------------------------------------------------------------------ validation errors name the node
def _tanh_rnn() -> Cell:
    return parse_cell("states h\nh' = tanh(W(x) + W(h) + b)")


def test_cycle_is_rejected_naming_a_node():
    cell = _tanh_rnn()
    cell["h_new_W_1"].inputs = ("h_new",)
    with pytest.raises(InvalidGraphError, match=r"cycle through .*h_new"):
        cell.validate()


def test_wrong_arity_names_the_node():
    cell = _tanh_rnn()
    cell["h_new"].inputs = ("h_new_add", "h")
    with pytest.raises(InvalidGraphError, match=r"node 'h_new' \(tanh\): expects 1 input\(s\), has 2"):
        cell.validate()


def test_dangling_node_is_named():
    cell = _tanh_rnn()
    cell.add_node("orphan", Op.RELU, ("h",))
    with pytest.raises(InvalidGraphError, match=r"node 'orphan' \(relu\): dangling"):
        cell.validate()


def test_output_count_must_match_states():
    cell = _tanh_rnn()
    cell.outputs = ("h_new", "h_new")
    with pytest.raises(InvalidGraphError, match="2 outputs for 1 states"):
        cell.validate()


def test_width_mismatch_is_named():
    cell = Cell("bad", [StateSpec("h"), StateSpec("z", "1")])
    cell.add_node("g", Op.LINEAR, ("h",), {"width": "1"})
    cell.add_node("hx", Op.LINEAR, ("x",))
    cell.add_node("s", Op.ADD, ("hx", "g"))
    cell.outputs = ("g", "s")  # h' is a scalar, z' a vector: both wrong
    with pytest.raises(InvalidGraphError, match=r"node 'g' \(linear\): output for state 'h' has width 1"):
        cell.validate()


def test_linear_of_a_scalar_is_rejected():
    cell = Cell("bad", [StateSpec("h"), StateSpec("z", "1")])
    cell.add_node("w", Op.LINEAR, ("z",))
    cell.add_node("hn", Op.ADD, ("w", "x"))
    cell.outputs = ("hn", "z")
    with pytest.raises(InvalidGraphError, match=r"node 'w' \(linear\): a linear map needs a vector input"):
        cell.validate()


def test_unknown_input_and_bad_attrs():
    cell = _tanh_rnn()
    cell["h_new"].inputs = ("nowhere",)
    with pytest.raises(InvalidGraphError, match="reads unknown node 'nowhere'"):
        cell.validate()
    cell = _tanh_rnn()
    cell["h_new_W"].attrs["width"] = "7"
    with pytest.raises(InvalidGraphError, match=r"node 'h_new_W' \(linear\): width must be one of"):
        cell.validate()


def test_output_must_depend_on_x():
    with pytest.raises(InvalidGraphError, match="do not depend on the input x"):
        parse_cell("states h\nh' = tanh(W(h))")


def test_malformed_json_is_one_clear_error():
    with pytest.raises(InvalidGraphError, match="not valid JSON"):
        Cell.from_json("{nope")
    with pytest.raises(InvalidGraphError, match="malformed cell JSON"):
        Cell.from_json('{"states": [{"name": "h"}]}')
    with pytest.raises(InvalidGraphError, match="unsupported cell format"):
        Cell.from_json('{"format": "other/9", "states": [], "nodes": [], "outputs": []}')


@pytest.mark.parametrize(
    "text,message",
    [
        ("h' = tanh(W(x))", "a 'states' line is required"),
        ("states h\nh' = tanh(V(x))", "unknown function 'V'"),
        ("states h\nh' = tanh(W(x) + q)", "unknown name 'q'"),
        ("states h\nh' = tanh(W(x) + 2)", "the only constant is 1"),
        ("states h\nh' = tanh(x + b)", "more bias terms than"),
        ("states h, c\nh' = tanh(W(x) + W(h))", r"no equation gives the new value of state\(s\) \['c'\]"),
        ("states h\nh' = tanh(W(x)", "syntax error"),
    ],
)
def test_dsl_errors(text, message):
    with pytest.raises(DSLError, match=message):
        parse_cell(text)


def test_importing_the_ir_does_not_load_torch():
    code = "import sys, archsearch.ir, archsearch; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
