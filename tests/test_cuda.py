"""The CUDA path: compiled cells, the trainer and the batched trainer on a GPU agree with the CPU.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import archsearch
from archsearch.compiler import compile_cell
from archsearch.tasks import get_task
from archsearch.train import HyperParams, scale_config, train_batched, train_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CONFIG = scale_config("ci").with_overrides(
    max_epochs=2, patience=1, decay_epochs=1,
    epoch_positions=20 * 35 * 2, valid_positions=20 * 35, test_positions=20 * 35,
)


@pytest.mark.parametrize("name", ["lstm", "gru", "gf-lstm", "hm-lstm"])
def test_compiled_cell_on_cuda_equals_cpu(name):
    """Forward and every gradient of the same weights on both devices (float64)."""
    cpu = compile_cell(archsearch.seed(name), 6, 8, seed=0, dtype=torch.float64)
    gpu = compile_cell(archsearch.seed(name), 6, 8, seed=0, dtype=torch.float64).cuda()
    x = torch.randn(11, 3, 6, dtype=torch.float64)
    y_cpu, _ = cpu(x)
    y_gpu, _ = gpu(x.cuda())
    assert y_gpu.is_cuda
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-10, rtol=1e-10)
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    for (n, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-9, rtol=1e-9, msg=n)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_compiled_torch_layout_equals_cudnn(kind, monkeypatch):
    """torch-lstm / torch-gru with nn.LSTM / nn.GRU's weights give cuDNN's outputs (float32 tolerance)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # cuDNN's RNNs may use TF32 (1e-3) by default
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    ref = (nn.LSTM if kind == "lstm" else nn.GRU)(16, 32).cuda()
    stack = compile_cell(archsearch.seed(f"torch-{kind}"), 16, 32).cuda()
    gates = ["i", "f", "g", "o"] if kind == "lstm" else ["r", "z", "n"]
    with torch.no_grad():
        layer = stack.layers[0]
        for k, gate in enumerate(gates):
            rows = slice(k * 32, (k + 1) * 32)
            for node, part in ((f"{gate}_W", "ih"), (f"{gate}_W_1", "hh")):
                weight, bias = layer.linear_params(node)
                weight.copy_(getattr(ref, f"weight_{part}_l0")[rows])
                bias.copy_(getattr(ref, f"bias_{part}_l0")[rows])
    x = torch.randn(20, 5, 16, device="cuda")
    y_ref, _ = ref(x)
    y, _ = stack(x)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_training_on_cuda_follows_the_cpu_run(name, float64):
    """The same seed gives the same losses on both devices (float64; only the summation order differs)."""
    cell, task, hp = archsearch.seed(name), get_task("arithmetic"), HyperParams(0.5, 1.0, 5.0, 1, 5000)
    on_cpu, _ = train_model(cell, task, hp, CONFIG, seed=2)
    on_gpu, model = train_model(cell, task, hp, CONFIG, seed=2, device="cuda")
    assert next(model.parameters()).is_cuda
    assert [h["loss"] for h in on_gpu.history] == pytest.approx([h["loss"] for h in on_cpu.history], rel=1e-6)
    assert _close(on_gpu.valid, on_cpu.valid) and _close(on_gpu.test, on_cpu.test)


def test_batched_slices_on_cuda_equal_unbatched_cuda_runs(float64):
    cell, task = archsearch.seed("lstm"), get_task("arithmetic")
    hps = [HyperParams(0.5, 1.0, 5.0, 1, 5000), HyperParams(1.0, 0.7, 1.0, 1, 5000),
           HyperParams(1e300, 2.8, 20.0, 1, 5000)]  # the last one diverges: it must not disturb the others
    results = train_batched(cell, task, hps, CONFIG, [3, 1, 4], device="cuda")
    assert results[2].diverged
    for hp, seed, got in zip(hps[:2], [3, 1], results[:2]):
        alone, _ = train_model(cell, task, hp, CONFIG, seed=seed, device="cuda")
        assert [h["loss"] for h in got.history] == pytest.approx([h["loss"] for h in alone.history], rel=1e-9)
        assert _close(got.valid, alone.valid) and _close(got.test, alone.test)


def test_a_search_on_cuda_records_results(tmp_path):
    from archsearch.executors import InProcessExecutor
    from archsearch.search import SearchConfig, SearchDriver
    from archsearch.storage import open_storage

    tiny = {"max_epochs": 1, "epoch_positions": 1400, "valid_positions": 700, "test_positions": 700,
            "param_scale": 0.02}
    config = SearchConfig(name="gpu", tasks=("arithmetic",), seeds=("lstm", "gru"), scale="tiny",
                          train_overrides=tiny, filter_overrides={**tiny, "param_scale": 0.1},
                          settings_per_task=2, init_settings_per_task=2, filter_threshold=0.0, seed=1,
                          device="cuda", batch_settings=2)
    url = f"sqlite:///{tmp_path}/gpu.db"
    with InProcessExecutor(1) as executor:
        SearchDriver(open_storage(url), config, executor, max_evaluations=8).run()
    evals = open_storage(url, read_only=True).evaluations()
    finished = [e for e in evals if e.status in ("done", "failed")]
    assert len(finished) == 8 and not [e.error for e in finished if e.error and "cuda" in e.error.lower()]
    assert [e for e in finished if e.status == "done" and e.metric is not None]
