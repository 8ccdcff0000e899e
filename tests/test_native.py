"""Native elementwise stages (archsearch.compiler._native): the window they run equals the torch step's.

Each check runs one window through the generated native window function and through the torch
record step one step at a time, and compares outputs, final states, the states read at every step
and every recorded value (float64: 1e-12 relative to the largest value; float32: a few ulp of
libmvec's tanh/exp). The gradients through the native forward are checked against autograd by
tests/test_window_backward.py, which runs with native stages on wherever they are available.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import archsearch
from archsearch.compiler import _native, _runtime, compile_cell
from archsearch.compiler._batched import BatchedCellStack
from archsearch.compiler._module import cached_plan
from archsearch.compiler._native import NativeSteps, _even_rows
from archsearch.compiler._runtime import bind_native
from archsearch.ir import parse_cell
from test_window_backward import EDGE_CELLS, _mutated

pytestmark = [pytest.mark.skipif(not _native.available(), reason="no C compiler with libmvec here"),
              pytest.mark.usefixtures("uninitialized_memory_is_nan")]


def _layer(cell, hidden: int, dtype: torch.dtype, slope: float = 1.7):
    layer = compile_cell(cell, hidden, hidden, seed=0, dtype=dtype).layers[0]
    if hasattr(layer, "slope"):
        layer.slope.fill_(slope)
    return layer


def _torch_window(layer, xs, xp, state):
    """What GeneratedWindow's torch path computes: the record step one step at a time, stacked."""
    window = layer._generated_window
    seen, recorded, outputs = [], [], []
    for x_t, xp_t in zip(xs.unbind(0), xp.unbind(0)):
        seen.append(state)
        state, values = window.record_step(layer, x_t, xp_t, *state)
        recorded.append(values)
        outputs.append(state[0])
    return torch.stack(outputs), state, [torch.stack(s) for s in zip(*seen)], [torch.stack(v) for v in zip(*recorded)]


def _close(got, want, dtype):
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got, want, rtol=0.0, atol=tol * scale)


def assert_native_equals_torch(cell, dtype=torch.float64, hidden: int = 7, steps: int = 6, batch: int = 3):
    layer = _layer(cell, hidden, dtype)
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(steps, batch, hidden, dtype=dtype, generator=g)
    state = tuple(torch.randn(batch, w, dtype=dtype, generator=g) for w in layer.state_widths)
    with torch.no_grad():
        xp = layer.input_projections(xs)
        want = _torch_window(layer, xs, xp, state)
        native = layer._generated_window.native
        for record in (True, False):
            ys, final, seen, values, _ = bind_native(native, record, xs, xp, state, time_dim=0)(layer)
            _close(ys, want[0], dtype)
            for got, expected in zip(final, want[1], strict=True):
                _close(got, expected, dtype)
            for got, expected in zip(seen, want[2], strict=True):
                _close(got, expected, dtype)
            assert len(values) == (len(want[3]) if record else 0)
            for got, expected in zip(values, want[3]):
                _close(got, expected, dtype)


SLOPES = (0.5, 1.0, 3.0)  # one per slice: a batched stage reads its row's


def _batched_layer(cell, hidden: int, dtype: torch.dtype):
    stacks = [compile_cell(cell, hidden, hidden, seed=i, dtype=dtype) for i in range(len(SLOPES))]
    layer = BatchedCellStack.from_stacks(stacks).layers[0]
    if hasattr(layer, "slope"):
        layer.slope.copy_(torch.tensor(SLOPES, dtype=dtype).view(-1, 1, 1))
    return layer


def assert_batched_native_equals_torch(cell, dtype=torch.float64, hidden: int = 5, steps: int = 4, batch: int = 2):
    """K slices (different weights and slopes) through the batched native window against the batched torch step."""
    layer = _batched_layer(cell, hidden, dtype)
    k = len(SLOPES)
    g = torch.Generator().manual_seed(4)
    xs = torch.randn(k, steps, batch, hidden, dtype=dtype, generator=g)
    state = tuple(torch.randn(k, batch, w, dtype=dtype, generator=g) for w in layer.state_widths)
    with torch.no_grad():
        xp = layer.input_projections(xs)
        want = _torch_window(layer, xs.movedim(1, 0), xp.movedim(1, 0), state)
        for record in (True, False):
            ys, final, seen, values, _ = bind_native(layer._generated_window.native, record, xs, xp, state, 1)(layer)
            for got, expected in zip([ys, *final, *seen, *values], [want[0], *want[1], *want[2], *want[3]]):
                _close(got, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", archsearch.seeds())
def test_every_seed(name, dtype):
    assert_native_equals_torch(archsearch.seed(name), dtype)
    assert_batched_native_equals_torch(archsearch.seed(name), dtype)


@given(seed_name=st.sampled_from(sorted(archsearch.seeds())), rng=st.integers(0, 2**32 - 1), chain=st.integers(1, 4))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_mutated_cells(seed_name, rng, chain):
    assert_native_equals_torch(_mutated(seed_name, rng, chain))
    assert_batched_native_equals_torch(_mutated(seed_name, rng, chain))


@pytest.mark.parametrize("name", EDGE_CELLS)
def test_edge_cells(name):
    assert_native_equals_torch(parse_cell("cell edge\n" + EDGE_CELLS[name].strip().replace("\n        ", "\n")))


def _gradients(model, x):
    y, state = model(x)
    model.zero_grad(set_to_none=True)
    states = [state] if isinstance(state, tuple) else state  # a batched stack: one state tuple per layer
    (y.square().sum() + sum(s.sum() for layer in states for s in layer)).backward()
    return y.detach(), [p.grad for p in model.parameters()]


@pytest.mark.parametrize("name", ["gru", "gf-lstm"])
def test_a_compiled_module_runs_native_stages_where_it_can(monkeypatch, name):
    """Evaluation (no_grad) runs the native window; training runs the native window with recording and the
    native backward. Outputs and gradients agree with the torch ops (native stages off) to rounding."""
    calls = []
    bind = _runtime.bind_native

    def spy(native, record, *args):  # which native windows ran
        window = bind(native, record, *args)
        if window is not None:
            calls.append(record)
        return window

    monkeypatch.setattr(_runtime, "bind_native", spy)
    model = compile_cell(archsearch.seed(name), 6, 8, seed=0, dtype=torch.float64)
    backward = model.layers[0]._generated_window.native.backward
    model.layers[0]._generated_window.native.backward = lambda *a, **k: calls.append("backward") or backward(*a, **k)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    with torch.no_grad():
        y_eval = model(x)[0]
    y_native, grads_native = _gradients(model, x)
    assert calls == [False, True, "backward"]
    monkeypatch.setattr(_native, "ENABLED", False)
    with torch.no_grad():
        y_torch = model(x)[0]
    _, grads_torch = _gradients(model, x)
    assert calls == [False, True, "backward"]  # nothing native ran with native stages off
    torch.testing.assert_close(y_eval, y_torch, rtol=0, atol=1e-13)
    torch.testing.assert_close(y_native, y_torch, rtol=0, atol=1e-13)
    for got, want in zip(grads_native, grads_torch, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("name", ["gru", "hm-lstm"])
def test_batched_slices_train_through_native_stages(monkeypatch, name):
    """Batched training runs the native record window and the native backward (per-slice hard-sigmoid slopes);
    outputs and gradients agree with native stages off (autograd through the batched step)."""
    calls = []
    bind = _runtime.bind_native
    monkeypatch.setattr(_runtime, "bind_native", lambda native, record, *a: calls.append(record) or bind(native, record, *a))
    stack = BatchedCellStack.from_stacks([compile_cell(archsearch.seed(name), 4, 6, seed=i, dtype=torch.float64)
                                          for i in range(len(SLOPES))])
    stack.set_slope(torch.tensor(SLOPES, dtype=torch.float64))
    x = torch.randn(len(SLOPES), 5, 2, 4, dtype=torch.float64)
    y_native, grads_native = _gradients(stack, x)
    with torch.no_grad():
        y_eval = stack(x)[0]
    assert calls == [True, False]
    monkeypatch.setattr(_native, "ENABLED", False)
    y_torch, grads_torch = _gradients(stack, x)
    torch.testing.assert_close(y_native, y_torch, rtol=0, atol=1e-13)
    torch.testing.assert_close(y_eval, y_torch, rtol=0, atol=1e-13)
    for got, want in zip(grads_native, grads_torch, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("slices, batch", [(1, 3), (3, 1), (1, 1)])
def test_one_slice_or_one_row_still_runs_native_stages(monkeypatch, slices, batch):
    """A batched group of one setting (or a batch of one row) has dimensions of size 1, whose strides
    ``contiguous()`` leaves as they were: the stages still run, and agree with torch ops."""
    ran = []
    bind = _runtime.bind_native
    monkeypatch.setattr(_runtime, "bind_native", lambda *a: ran.append(bind(*a) is not None) or bind(*a))
    stack = BatchedCellStack.from_stacks([compile_cell(archsearch.seed("hm-lstm"), 4, 6, seed=i, dtype=torch.float64)
                                          for i in range(slices)])
    x = torch.randn(slices, 5, batch, 4, dtype=torch.float64)
    y_native, grads_native = _gradients(stack, x)
    assert ran == [True]
    monkeypatch.setattr(_native, "ENABLED", False)
    y_torch, grads_torch = _gradients(stack, x)
    torch.testing.assert_close(y_native, y_torch, rtol=0, atol=1e-13)
    for got, want in zip(grads_native, grads_torch, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * max(1.0, float(want.abs().max())))


def test_rows_must_be_evenly_spaced_by_the_row_stride():
    moved = torch.randn(1, 35, 20, 8).movedim(1, 0).contiguous()  # (T, 1, B, w): the size-1 dim keeps its stride
    assert moved.stride(1) != 20 * 8 and _even_rows(moved)
    assert _even_rows(torch.randn(35, 3, 20, 8)) and _even_rows(torch.randn(35, 20, 8))
    assert _even_rows(torch.randn(35, 3, 20, 8)[:, :, ::2])  # every other row: still one stride apart
    assert not _even_rows(torch.randn(35, 3, 20, 8)[:, :, :10])  # each slice's first half: a gap between slices
    assert not _even_rows(torch.randn(35, 20, 3, 8).transpose(1, 2))  # slices inside rows
    lone_row = torch.randn(35, 3, 8).unsqueeze(2)  # (T, K, 1, w): rows are the slices, 8 apart
    assert _even_rows(lone_row)
    assert not _even_rows(torch.as_strided(lone_row, lone_row.shape, (24, 8, 1000, 1)))  # stride(-2) is not theirs
    assert not _even_rows(torch.randn(35, 20, 8)[..., ::2])  # units not contiguous


def test_tensors_the_stages_cannot_read_fall_back_to_torch():
    layer = _layer(archsearch.seed("lstm"), 4, torch.float32)
    native = layer._generated_window.native
    xs = torch.randn(3, 2, 4)
    xp = layer.input_projections(xs).detach()
    state = layer.initial_state(2)
    assert native.kernels_for(xs, xp, state) is not None
    assert native.kernels_for(xs.half(), xp.half(), tuple(s.half() for s in state)) is None  # no half kernels
    assert native.kernels_for(xs, xp, tuple(s.double() for s in state)) is None  # mixed dtypes
    assert native.kernels_for(xs, xp[0], state) is None  # not time-major (T, B, P)


def test_a_stage_that_does_not_compile_falls_back_with_a_warning(caplog):
    plan = cached_plan(archsearch.seed("lstm").validate(), 4)
    broken = NativeSteps(None, None, None, plan.native.c_source + "\nthis is not C;\n", plan.native.stages, False)
    xs, state = torch.randn(2, 1, 4), (torch.zeros(1, 4), torch.zeros(1, 4))
    with caplog.at_level(logging.WARNING, logger="archsearch.compiler._native"):
        assert broken.kernels_for(xs, torch.randn(2, 1, 16), state) is None
    assert "did not compile" in caplog.text
    assert broken.kernels_for(xs, torch.randn(2, 1, 16), state) is None  # and it does not try again


def test_no_text_of_the_cell_reaches_the_c_source():
    cell = parse_cell("cell mine\nstates hidden_state_evil, memory_evil\n"
                      "gate_evil = sigmoid(W(x) + W(hidden_state_evil) + b)\n"
                      "memory_evil' = memory_evil * gate_evil + tanh(W(x) + b)\n"
                      "hidden_state_evil' = tanh(memory_evil') * gate_evil")
    source = cached_plan(cell, 8).native.c_source
    assert "evil" not in source and "mine" not in source
    assert_native_equals_torch(cell)


def test_native_stages_can_be_turned_off_per_process_and_say_why_they_are_off():
    code = "from archsearch.compiler import _native; print(_native.available(), _native.describe())"
    for env, expected in (({"ARCHSEARCH_NATIVE": "0"}, "False off (ARCHSEARCH_NATIVE=0)"),
                          ({"ARCHSEARCH_NATIVE": "1"}, "True on"),
                          ({"CC": "/no/such/cc"}, "False off (cannot run the C compiler '/no/such/cc': No such file")):
        run = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                             check=True)
        assert run.stdout.strip().startswith(expected)


def test_the_search_says_whether_its_workers_run_native_stages(tmp_path):
    """The first line of a CPU search (in-process workers) on stderr; with native stages off it runs anyway."""
    command = [sys.executable, "-m", "archsearch", "search", "--preset", "quick", "--db",
               f"sqlite:///{tmp_path}/s.db", "--max-evaluations", "1", "--no-live"]
    run = subprocess.run(command, env={**os.environ, "ARCHSEARCH_NATIVE": "0"}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "native elementwise stages: off (ARCHSEARCH_NATIVE=0)" in run.stderr


def test_in_place_ops_on_the_outputs_do_not_change_the_gradients():
    """The native window's outputs are copies of its buffers: an in-place op on them (nn.Dropout(inplace=True))
    leaves the states the backward reads alone, as on torch ops."""
    model = compile_cell(archsearch.seed("lstm"), 4, 5, seed=0, dtype=torch.float64)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    grads = []
    for in_place in (False, True):
        y, (h, c) = model(x)
        if in_place:
            y.mul_(2.0)
            h.zero_()
        model.zero_grad(set_to_none=True)
        c.square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_a_module_that_ran_native_stages_can_be_deep_copied():
    """copy.deepcopy (the batched trainer copies its model to drop diverged slices) shares the compiled stages."""
    import copy

    model = compile_cell(archsearch.seed("gru"), 4, 5, seed=0, dtype=torch.float64)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    y, _ = model(x)
    twin = copy.deepcopy(model)
    assert twin.layers[0]._native is model.layers[0]._native
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], y.detach(), rtol=0, atol=0)
