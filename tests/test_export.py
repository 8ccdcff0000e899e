"""Exported cells: standalone files that need only torch and equal the in-framework modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import archsearch
from archsearch.export import export_source

CHECK = textwrap.dedent(
    """
    import importlib.util, sys, torch
    from safetensors.torch import load_file, save_file
    spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not [m for m in sys.modules if m.startswith("archsearch")], "the exported file imported archsearch"
    cls = getattr(module, sys.argv[2])
    inputs = load_file(sys.argv[3])
    cell = cls(int(sys.argv[4]), int(sys.argv[5]), num_layers=int(sys.argv[6])).double()
    cell.load_state_dict(load_file(sys.argv[7]), strict=True)
    out, hx = cell(inputs["x"])
    hx = hx if isinstance(hx, tuple) else (hx,)
    save_file({"y": out.contiguous(), **{f"s{i}": s.contiguous() for i, s in enumerate(hx)}}, sys.argv[8])
    """
)


@pytest.mark.parametrize("name,input_size,layers", [("gru", 3, 2), ("lstm-b", 5, 1), ("hm-lstm", 4, 1), ("mut1", 6, 1)])
def test_exported_file_in_a_fresh_interpreter_equals_the_compiled_module(tmp_path, name, input_size, layers):
    cell = archsearch.seed(name)
    hidden = 6
    (tmp_path / "cell.py").write_text(export_source(cell, hidden, layers, class_name="Exported"))
    (tmp_path / "check.py").write_text(CHECK)
    torch.manual_seed(0)
    ref = archsearch.compile(cell, input_size, hidden, layers, init_scale=2.0, dtype=torch.float64)
    x = torch.randn(7, 3, input_size, dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
    save_file({"x": x}, tmp_path / "x.safetensors")
    args = [sys.executable, str(tmp_path / "check.py"), str(tmp_path / "cell.py"), "Exported", str(tmp_path / "x.safetensors"),
            str(input_size), str(hidden), str(layers), str(tmp_path / "w.safetensors"), str(tmp_path / "out.safetensors")]
    subprocess.run(args, check=True, capture_output=True, text=True)
    got = load_file(tmp_path / "out.safetensors")
    y, state = ref(x)
    assert torch.equal(got["y"], y)
    for i, s in enumerate(state):
        assert torch.equal(got[f"s{i}"], s)


def _load(tmp_path, cell, hidden, layers):
    path = tmp_path / "exported.py"
    path.write_text(export_source(cell, hidden, layers))
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"exported_{cell.name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exported_torch_lstm_loads_nn_lstm_weights(tmp_path):
    module = _load(tmp_path, archsearch.seed("torch-lstm"), 5, 2)
    torch.manual_seed(1)
    ref = torch.nn.LSTM(3, 5, 2, batch_first=True).double()
    cell = module.TorchLstm(3, 5, num_layers=2, batch_first=True).double()
    H = 5
    with torch.no_grad():
        for l, layer in enumerate(cell.layers):
            # our fused layout: x-linears i, f, g, o in rows; h-linears likewise (see the docstring's equations)
            layer.weight_x_b.copy_(getattr(ref, f"weight_ih_l{l}"))
            layer.bias_x_b.copy_(getattr(ref, f"bias_ih_l{l}"))
            layer.weight_h_b.copy_(getattr(ref, f"weight_hh_l{l}"))
            layer.bias_h_b.copy_(getattr(ref, f"bias_hh_l{l}"))
    assert cell.layers[0].weight_x_b.shape == (4 * H, 3)
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    y_ref, (h_ref, c_ref) = ref(x)
    y, (h, c) = cell(x)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-10, rtol=0)


def test_exported_gru_hx_is_a_tensor_like_nn_gru(tmp_path):
    module = _load(tmp_path, archsearch.seed("gru"), 4, 1)
    out, hx = module.Gru(4, 4)(torch.randn(3, 2, 4))
    assert isinstance(hx, torch.Tensor) and hx.shape == (1, 2, 4) and out.shape == (3, 2, 4)


def test_exported_module_compiles_with_torch_compile(tmp_path):
    """Dynamo traces the whole exported module without a graph break (backend 'eager': no C++ build here)."""
    module = _load(tmp_path, archsearch.seed("lstm"), 6, 1)
    cell = module.Lstm(4, 6)
    x = torch.randn(5, 2, 4)
    expected, _ = cell(x)
    compiled = torch.compile(cell, backend="eager", fullgraph=True)
    got, _ = compiled(x)
    torch.testing.assert_close(got, expected)


def test_export_refuses_other_sizes(tmp_path):
    module = _load(tmp_path, archsearch.seed("mut1"), 6, 1)
    with pytest.raises(ValueError, match="generated for hidden_size=6"):
        module.Mut1(6, 8)
    with pytest.raises(ValueError, match="input_size must equal hidden_size"):
        module.Mut1(5, 6)
