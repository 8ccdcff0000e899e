"""Exported cells: standalone files that need only torch, drop-ins for nn.LSTM/nn.GRU, equal to archsearch.compile.

The main test writes the export of every kind of cell, imports each in ONE fresh interpreter
(only torch and safetensors, for the data), and compares what it computes there with
``archsearch.compile`` here: sizes, layers, batch_first, dropout, unbatched input, state_dict
round trips, outputs and gradients (float64, exact), init, and nn.LSTM/nn.GRU weights.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import archsearch
from archsearch.compiler import _native
from archsearch.export import export_source
from archsearch.ir import parse_cell

# (cell, input_size, hidden_size, num_layers): both kinds of sizes, two layers where the cell allows them
CASES = [
    ("lstm", 13, 64, 2),
    ("gru", 7, 7, 2),
    ("mut1", 9, 9, 2),  # reads x_t without a linear map: input_size == hidden_size
    ("gf-lstm", 13, 64, 1),  # 3 layers inside: num_layers is 1
    ("hm-lstm", 7, 7, 1),
    ("torch-lstm", 13, 64, 2),
    ("torch-gru", 7, 5, 2),
]
STEPS, BATCH, DROPOUT = 3, 2, 0.5

# Linear(1.1, x) (the paper's diagonal offset) and a bias that starts at 1
DIAG_CELL = """
cell diag-cell
states h
z = sigmoid(W(x) + W(h) + b(1))
h' = z * tanh(W(x) + W(h, a=1.1) + b) + (1 - z) * h
"""

# Runs in a fresh interpreter: argv[1] is the folder with cases.json and the data files.
CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys, torch
    from pathlib import Path
    from safetensors.torch import load_file, save_file

    folder = Path(sys.argv[1])
    torch.set_num_threads(int(sys.argv[2]))  # the parent's count: float64 sums are split by thread

    def run(rnn, x, hx=None):
        y, hx = rnn(x, hx)
        return y, (hx,) if isinstance(hx, torch.Tensor) else hx

    def flat(prefix, states):
        return {f"{prefix}{i}": s.detach().contiguous() for i, s in enumerate(states)}

    for case in json.loads((folder / "cases.json").read_text()):
        spec = importlib.util.spec_from_file_location(case["module"], folder / case["file"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert not [m for m in sys.modules if m.startswith("archsearch")], "the exported file imported archsearch"
        cls = getattr(module, case["cls"])
        I, H, L, tag = case["input_size"], case["hidden_size"], case["layers"], case["tag"]
        data = {k: v.clone() for k, v in load_file(folder / f"in_{tag}.safetensors").items()}  # aligned
        weights = {k[2:]: v for k, v in data.items() if k.startswith("w.")}
        out = {}

        rnn = cls(I, H, num_layers=L).double()
        rnn.load_state_dict(weights, strict=True)
        x = data["x"].clone().requires_grad_(True)
        y, hx = run(rnn, x)
        loss = (y * data["gy"]).sum() + sum((s * data[f"gs{i}"]).sum() for i, s in enumerate(hx))
        loss.backward()
        out.update(y=y.detach(), gx=x.grad, **flat("s", hx))
        out.update({f"grad.{k}": p.grad for k, p in rnn.named_parameters()})
        # the state carried on, as in truncated BPTT
        out["y_again"] = run(rnn, data["x"], tuple(s.detach() for s in hx))[0].detach()

        first = cls(I, H, L, batch_first=True).double()
        first.load_state_dict(weights, strict=True)
        out["y_batch_first"] = run(first, data["x"].transpose(0, 1))[0].detach()

        y1, hx1 = run(rnn, data["x"][:, 0])  # unbatched (T, input_size), like nn.LSTM
        out.update(y_unbatched=y1.detach(), **flat("u", hx1))

        again = cls(I, H, L).double()
        again.load_state_dict(rnn.state_dict(), strict=True)  # round trip
        out["y_round_trip"] = run(again, data["x"])[0].detach()
        out.update({f"sd.{k}": v for k, v in rnn.state_dict().items()})

        if case["dropout"]:
            dropped = cls(I, H, L, dropout=case["dropout"]).double()
            dropped.load_state_dict(weights, strict=True)
            torch.manual_seed(7)
            out["y_dropout"] = run(dropped.train(), data["x"])[0].detach()
            out["y_dropout_eval"] = run(dropped.eval(), data["x"])[0].detach()

        torch.manual_seed(case["init_seed"])
        out.update({f"init.{k}": v for k, v in cls(I, H, L).state_dict().items()})

        if case["torch_like"]:
            torch.manual_seed(3)
            ref = getattr(torch.nn, case["torch_like"])(I, H, L).double()
            mine = cls(I, H, L).double()
            mine.load_state_dict(ref.state_dict(), strict=True)
            y_ref = ref(data["x"])[0]
            out.update(torch_y=y_ref.detach(), torch_mine=run(mine, data["x"])[0].detach())
            ref.load_state_dict(cls(I, H, L).double().state_dict(), strict=True)  # and back
        save_file({k: v.contiguous() for k, v in out.items()}, folder / f"out_{tag}.safetensors")
    print("ok")
    """
)


def _cell(name: str) -> archsearch.Cell:
    return parse_cell(DIAG_CELL) if name == "diag" else archsearch.seed(name)


def _write_cases(folder) -> list[dict]:
    cases = []
    for i, (name, input_size, hidden, layers) in enumerate(CASES):
        cell = _cell(name)
        (folder / f"cell_{i}.py").write_text(export_source(cell, 16, 1, class_name=f"Exported{i}"))
        tag = str(i)
        torch.manual_seed(i)
        ref = archsearch.compile(cell, input_size, hidden, layers, init_scale=2.0, dtype=torch.float64)
        x = torch.randn(STEPS, BATCH, input_size, dtype=torch.float64)
        y, state = ref(x)
        data = {"x": x, "gy": torch.randn_like(y), **{f"w.{k}": v for k, v in ref.state_dict().items()}}
        data.update({f"gs{j}": torch.randn_like(s) for j, s in enumerate(state)})
        save_file({k: v.contiguous() for k, v in data.items()}, folder / f"in_{tag}.safetensors")
        torch_like = {"torch-lstm": "LSTM", "torch-gru": "GRU"}.get(name)
        cases.append({"name": name, "module": f"exported_{i}", "file": f"cell_{i}.py", "cls": f"Exported{i}",
                      "input_size": input_size, "hidden_size": hidden, "layers": layers, "tag": tag,
                      "dropout": DROPOUT if layers > 1 else 0.0, "init_seed": 100 + i, "torch_like": torch_like})
    (folder / "cases.json").write_text(json.dumps(cases))
    return cases


def _exact(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert torch.equal(got, expected), f"{what}: max difference {(got - expected).abs().max().item():.3g}"


def _check_case(case: dict, folder) -> None:
    what = f"{case['name']} {case['input_size']}/{case['hidden_size']} x{case['layers']}"
    got = load_file(folder / f"out_{case['tag']}.safetensors")
    data = {k: v.clone() for k, v in load_file(folder / f"in_{case['tag']}.safetensors").items()}  # aligned memory
    cell = _cell(case["name"])
    I, H, L = case["input_size"], case["hidden_size"], case["layers"]
    ref = archsearch.compile(cell, I, H, L, dtype=torch.float64)
    ref.load_state_dict({k[2:]: v for k, v in data.items() if k.startswith("w.")}, strict=True)
    x = data["x"].clone().requires_grad_(True)
    y, state = ref(x)
    loss = (y * data["gy"]).sum() + sum((s * data[f"gs{i}"]).sum() for i, s in enumerate(state))
    loss.backward()
    _exact(got["y"], y.detach(), f"{what}: output")
    for i, s in enumerate(state):
        _exact(got[f"s{i}"], s.detach(), f"{what}: state {i}")
    _exact(got["gx"], x.grad, f"{what}: input gradient")
    for name, p in ref.named_parameters():
        _exact(got[f"grad.{name}"], p.grad, f"{what}: gradient of {name}")
    _exact(got["y_again"], ref(data["x"], tuple(s.detach() for s in state))[0].detach(), f"{what}: carried state")
    first = archsearch.compile(cell, I, H, L, dtype=torch.float64, batch_first=True)
    first.load_state_dict(ref.state_dict(), strict=True)
    y_first = first(data["x"].transpose(0, 1))[0].detach()
    _exact(got["y_batch_first"], y_first, f"{what}: batch_first")
    torch.testing.assert_close(y_first, y.detach().transpose(0, 1), atol=1e-14, rtol=0)
    y1, state1 = ref(data["x"][:, 0])  # unbatched: (T, H) and states (L, width), like nn.LSTM
    assert y1.shape == (STEPS, H) and all(s.shape[0] == L and s.dim() == 2 for s in state1)
    torch.testing.assert_close(y1, y[:, 0], atol=1e-14, rtol=0)
    _exact(got["y_unbatched"], y1.detach(), f"{what}: unbatched output")
    for i, s in enumerate(state1):
        _exact(got[f"u{i}"], s.detach(), f"{what}: unbatched state {i}")
    _exact(got["y_round_trip"], ref(data["x"])[0].detach(), f"{what}: state_dict round trip")
    sd = {k[3:]: v for k, v in got.items() if k.startswith("sd.")}
    assert sd.keys() == ref.state_dict().keys()
    ref.load_state_dict(sd, strict=True)  # the exported module's state_dict loads into archsearch.compile's
    if case["dropout"]:
        dropped = archsearch.compile(cell, I, H, L, dtype=torch.float64, dropout=case["dropout"])
        dropped.load_state_dict(ref.state_dict(), strict=True)
        torch.manual_seed(7)
        expected = dropped.train()(data["x"])[0].detach()
        _exact(got["y_dropout"], expected, f"{what}: dropout")
        assert not torch.equal(got["y_dropout"], y.detach()), f"{what}: dropout changed nothing while training"
        _exact(got["y_dropout_eval"], y.detach(), f"{what}: dropout in eval mode")
    torch.manual_seed(case["init_seed"])
    init = archsearch.compile(cell, I, H, L).state_dict()
    for k, v in init.items():
        _exact(got[f"init.{k}"], v, f"{what}: init of {k}")
    if case["torch_like"]:
        torch.testing.assert_close(got["torch_mine"], got["torch_y"], atol=1e-12, rtol=0)


def test_exports_in_a_fresh_interpreter_equal_the_compiled_modules(tmp_path, monkeypatch):
    """Bit for bit with the compiled module on torch ops (an export has no native stages); the compiled module's
    native stages (archsearch.compiler._native), where they run, agree to rounding."""
    cases = _write_cases(tmp_path)
    (tmp_path / "child.py").write_text(CHILD)
    run = subprocess.run([sys.executable, "child.py", str(tmp_path), str(torch.get_num_threads())], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for case in cases:
        got = load_file(tmp_path / f"out_{case['tag']}.safetensors")
        native = _compiled_output(case, tmp_path)
        torch.testing.assert_close(native, got["y"], rtol=0, atol=1e-12 * max(1.0, float(got["y"].abs().max())))
    monkeypatch.setattr(_native, "ENABLED", False)
    for case in cases:
        _check_case(case, tmp_path)


def _compiled_output(case: dict, folder) -> torch.Tensor:
    data = load_file(folder / f"in_{case['tag']}.safetensors")
    ref = archsearch.compile(_cell(case["name"]), case["input_size"], case["hidden_size"], case["layers"],
                             dtype=torch.float64)
    ref.load_state_dict({k[2:]: v.clone() for k, v in data.items() if k.startswith("w.")}, strict=True)
    with torch.no_grad():
        return ref(data["x"].clone())[0]


def test_an_exported_file_imports_only_torch_and_the_standard_library():
    source = export_source(archsearch.seed("hm-lstm"))
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"torch", "math", "os", "warnings", "dataclasses", "typing"}


def _load(tmp_path, cell, hidden=None, layers=1, class_name=None):
    path = tmp_path / f"{cell.name.replace('-', '_')}.py"
    path.write_text(export_source(cell, hidden, layers, class_name=class_name))
    spec = importlib.util.spec_from_file_location(f"exported_{cell.name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["lstm-b", "diag"])
def test_exported_init_equals_the_compiled_init(tmp_path, name):
    cell = _cell(name)
    module = _load(tmp_path, cell, class_name="Exported")
    torch.manual_seed(5)
    exported = module.Exported(6, 8, 2 if cell.depth == 1 else 1, init_scale=1.5).state_dict()
    torch.manual_seed(5)
    compiled = archsearch.compile(cell, 6, 8, 2 if cell.depth == 1 else 1, init_scale=1.5).state_dict()
    assert exported.keys() == compiled.keys()
    for key, value in compiled.items():
        assert torch.equal(exported[key], value), key


def test_exported_init_keeps_bias_inits_and_diagonal_offsets(tmp_path):
    """Init is part of the architecture: LSTM-b's forget bias starts at 1, Linear(1.1, x) at 1.1 + U."""
    lstm_b = _load(tmp_path, archsearch.seed("lstm-b")).LstmB(32, 256)
    weight, bias = lstm_b.layers[0].linear_params("f_W")
    assert abs(bias.mean().item() - 1.0) < 0.01 and weight.shape == (256, 32)
    diag = _load(tmp_path, parse_cell(DIAG_CELL)).DiagCell(256, 256)
    (slot,) = [s for s in diag.layout.slots if s.diag]
    assert slot.diag == 1.1
    weight, _ = diag.layers[0].linear_params(slot.name)
    assert abs(weight.diagonal().mean().item() - 1.1) < 0.01
    assert abs(weight.mean().item() - 1.1 / 256) < 0.01  # off the diagonal: U(-1/16, 1/16)


def test_bias_false_drops_every_bias_and_is_refused_where_a_bias_starts_at_one(tmp_path):
    gru = _load(tmp_path, archsearch.seed("torch-gru")).TorchGru(5, 6, bias=False)
    assert set(gru.state_dict()) == {"weight_ih_l0", "weight_hh_l0"}
    ref = torch.nn.GRU(5, 6, bias=False)
    gru.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(gru(x)[0], ref(x)[0])
    with pytest.raises(ValueError, match="cannot run with bias=False: the biases of f_W start away from zero"):
        _load(tmp_path, archsearch.seed("lstm-b")).LstmB(5, 6, bias=False)


def test_nn_lstm_interface_details(tmp_path):
    module = _load(tmp_path, archsearch.seed("lstm"), hidden=12)
    rnn = module.Lstm(4)  # hidden_size defaults to the exported one
    assert rnn.hidden_size == 12 and repr(rnn).startswith("Lstm(\n  4, 12\n")
    rnn.flatten_parameters()  # a no-op, as nn.LSTM's on CPU
    with pytest.warns(UserWarning, match="dropout"):
        module.Lstm(4, 6, dropout=0.3)
    with pytest.raises(ValueError, match=r"expected hx of shapes \[\(1, 2, 6\), \(1, 2, 6\)\]"):
        module.Lstm(4, 6)(torch.randn(3, 2, 4), (torch.zeros(1, 2, 6),))
    with pytest.raises(ValueError, match=r"expected input of shape"):
        module.Lstm(4, 6)(torch.randn(3, 2, 5))
    mut1 = _load(tmp_path, archsearch.seed("mut1")).Mut1
    with pytest.raises(ValueError, match="needs input_size == hidden_size"):
        mut1(5, 6)
    gf = _load(tmp_path, archsearch.seed("gf-lstm")).GfLstm
    with pytest.raises(ValueError, match="cannot be stacked"):
        gf(4, 4, num_layers=2)
    out, hx = gf(4, 5)(torch.randn(3, 2, 4))
    assert out.shape == (3, 2, 5) and [tuple(s.shape) for s in hx] == [(1, 2, 5)] * 6


def test_the_exported_module_defers_weight_gradients_like_the_compiled_one(tmp_path):
    module = _load(tmp_path, archsearch.seed("lstm"))
    rnn = module.Lstm(4, 6)
    assert rnn.layers[0]._deferred, "the recurrent weight's gradient is taken once per window"
    assert rnn.layers[0]._deferred == archsearch.compile(archsearch.seed("lstm"), 4, 6).layers[0]._deferred


def test_torch_export_of_an_exported_module(tmp_path):
    rnn = _load(tmp_path, archsearch.seed("torch-gru")).TorchGru(3, 4, num_layers=2).eval()
    x = torch.randn(2, 2, 3)
    program = torch.export.export(rnn, (x,))
    torch.testing.assert_close(program.module()(x)[0], rnn(x)[0], atol=0, rtol=0)


def test_exported_module_compiles_with_torch_compile(tmp_path):
    """Dynamo traces the whole exported module without a graph break (backend 'eager': no C++ build here)."""
    cell = _load(tmp_path, archsearch.seed("lstm")).Lstm(4, 6)
    x = torch.randn(5, 2, 4)
    expected, _ = cell(x)
    got, _ = torch.compile(cell, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(got, expected)


def test_cli_export_prints_the_class_and_how_to_construct_it(tmp_path, capsys, monkeypatch):
    from archsearch.cli import main

    assert main(["export", "lstm", "-o", str(tmp_path / "lstm_cell.py"), "--hidden-size", "9", "--layers", "2"]) == 0
    out = capsys.readouterr().out
    assert "class Lstm for cell 'lstm', nn.LSTM's interface" in out
    usage = [line.strip() for line in out.splitlines()[1:3]]
    assert usage[0] == "from lstm_cell import Lstm"
    assert usage[1].startswith("rnn = Lstm(input_size, hidden_size=9, num_layers=2)")
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {"input_size": 4}
    exec("\n".join(usage), namespace)  # the printed lines work as printed
    output, (h, c) = namespace["rnn"](torch.randn(3, 2, 4))
    assert output.shape == (3, 2, 9) and h.shape == c.shape == (2, 2, 9)


def test_a_language_model_swaps_nn_lstm_for_the_exported_class_in_one_line(tmp_path):
    """The README's before/after: same constructor call, and the LM's whole state_dict moves across strictly."""
    TorchLstm = _load(tmp_path, archsearch.seed("torch-lstm")).TorchLstm

    class LM(torch.nn.Module):
        def __init__(self, rnn_class):
            super().__init__()
            self.emb = torch.nn.Embedding(11, 6)
            self.rnn = rnn_class(6, 5, num_layers=2, dropout=0.5)  # the one line that changes
            self.out = torch.nn.Linear(5, 11)

        def forward(self, tokens, hidden=None):
            output, hidden = self.rnn(self.emb(tokens), hidden)
            return self.out(output), hidden

    before, after = LM(torch.nn.LSTM).eval(), LM(TorchLstm).eval()
    after.load_state_dict(before.state_dict(), strict=True)
    tokens = torch.randint(0, 11, (7, 3))
    (logits, (h, c)), (expected, (h_ref, c_ref)) = after(tokens), before(tokens)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(after(tokens, (h, c))[0], before(tokens, (h_ref, c_ref))[0])
    before.load_state_dict(after.state_dict(), strict=True)
