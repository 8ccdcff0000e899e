"""The generated backward of a window (archsearch.compiler._backward) equals autograd through the step.

Every check runs one window twice in float64: through :class:`GeneratedWindow` (the default with
gradients on) and through autograd on the generated step (``_window = None``, the path every cell
took before), and compares outputs, final states and the gradients of the input, the initial
state and every parameter to 1e-10 (relative to the largest value where that exceeds 1).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import archsearch
from archsearch.compiler import BatchedCellStack, compile_cell
from archsearch.ir import parse_cell



pytestmark = pytest.mark.usefixtures("uninitialized_memory_is_nan")


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal to 1e-10, relative to the tensor's largest value where that exceeds 1 (cells whose values
    explode, e.g. h' = h (1 - h) + ..., reach 1e6 within a few steps, beyond float64's absolute 1e-10)."""
    torch.testing.assert_close(got, want, rtol=0.0, atol=1e-10 * max(1.0, float(want.abs().max())))


def _window_and_autograd(layer, x, state, weights):
    """[outputs, final states, grads of x, initial state, parameters] with the generated window, then without."""
    runs = []
    window = layer._window
    for use in (window, None):
        layer._window = use
        xi = x.clone().requires_grad_()
        s0 = tuple(s.clone().requires_grad_() for s in state)
        y, final = layer(xi, s0)
        assert (type(y.grad_fn).__name__ == "GeneratedWindowBackward") == (use is not None)
        loss = (y * weights[0]).sum() + sum((s * w).sum() for s, w in zip(final, weights[1:]))
        layer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in layer.parameters()]
        state_grads = [s.grad if s.grad is not None else torch.zeros_like(s) for s in s0]  # an unread state: None
        runs.append([y.detach(), *(s.detach() for s in final), xi.grad, *state_grads, *grads])
    layer._window = window
    return runs


def assert_window_equals_autograd(cell, hidden: int = 5, steps: int = 6, batch: int = 3, slope: float = 1.7):
    layer = compile_cell(cell, hidden, hidden, seed=0, dtype=torch.float64).layers[0]
    if hasattr(layer, "slope"):
        layer.slope.fill_(slope)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps, batch, hidden, dtype=torch.float64, generator=g)
    state = tuple(torch.randn(batch, w, dtype=torch.float64, generator=g) for w in layer.state_widths)
    weights = [torch.randn(steps, batch, hidden, dtype=torch.float64, generator=g)]
    weights += [torch.randn(batch, w, dtype=torch.float64, generator=g) for w in layer.state_widths]
    for got, want in zip(*_window_and_autograd(layer, x, state, weights)):
        assert_close(got, want)


def assert_batched_window_equals_autograd(cell, k: int = 3, hidden: int = 4, steps: int = 5, batch: int = 2):
    """K slices with different weights through the batched generated window against autograd on the batched step."""
    stacks = [compile_cell(cell, hidden, hidden, seed=i, dtype=torch.float64) for i in range(k)]
    layer = BatchedCellStack.from_stacks(stacks).layers[0]
    layer.use_generated_backward(True)  # off by default for batched slices
    if hasattr(layer, "slope"):
        layer.slope.copy_(torch.tensor([0.5, 1.0, 3.0][:k], dtype=torch.float64).view(-1, 1, 1))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(k, steps, batch, hidden, dtype=torch.float64, generator=g)
    state = tuple(torch.randn(k, batch, w, dtype=torch.float64, generator=g) for w in layer.state_widths)
    weights = [torch.randn(k, steps, batch, hidden, dtype=torch.float64, generator=g)]
    weights += [torch.randn(k, batch, w, dtype=torch.float64, generator=g) for w in layer.state_widths]
    for got, want in zip(*_window_and_autograd(layer, x, state, weights)):
        assert_close(got, want)


@pytest.mark.parametrize("name", archsearch.seeds())
def test_every_seed(name):
    assert_window_equals_autograd(archsearch.seed(name))


@pytest.mark.parametrize("name", ["lstm", "gru", "gf-gru", "hm-lstm"])
def test_every_seed_batched(name):
    assert_batched_window_equals_autograd(archsearch.seed(name))


def _mutated(seed_name: str, rng: int, chain: int):
    cell = archsearch.seed(seed_name)
    for i in range(chain):
        cell, _ = archsearch.mutate(cell, rng=rng + i)
    return cell


@given(seed_name=st.sampled_from(sorted(archsearch.seeds())), rng=st.integers(0, 2**32 - 1), chain=st.integers(1, 4))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_mutated_cells(seed_name, rng, chain):
    assert_window_equals_autograd(_mutated(seed_name, rng, chain))


@given(seed_name=st.sampled_from(["lstm", "gru", "hm-lstm", "gf-lstm"]), rng=st.integers(0, 2**32 - 1),
       chain=st.integers(1, 3))
@settings(max_examples=10, deadline=None, derandomize=True)
def test_mutated_cells_batched(seed_name, rng, chain):
    assert_batched_window_equals_autograd(_mutated(seed_name, rng, chain))


# each cell exercises a rule of the generator the seeds do not all reach
EDGE_CELLS = {
    "straight-through step and relu": """
        states h
        g = step(sigmoid(W(x) + W(h) + b))
        h' = g * relu(W(x) + W(h) + b) + (1 - g) * h
    """,
    "hard sigmoid, annealed and fixed slope": """
        states h
        a = hard_sigmoid(W(x) + W(h) + b)
        h' = a * tanh(W(x) + b) + hard_sigmoid(W(h), slope=2.5) * h
    """,
    "scalar state and scalar gate (sums over units)": """
        states h, z:1
        g = sigmoid(w(x) + w(h) + b)
        h' = tanh(W(x) + g * W(h) + z * h)
        z' = g * z + (1 - g) * sigmoid(w(h))
    """,
    "raw x, a product of a node with itself, terms that cancel": """
        states h
        h' = tanh(x * x + W(h) + b) + x - x + h * h * identity(h)
    """,
    "a linear whose adjoint cancels (its gradient columns must stay zero)": """
        states h
        u = W(h)
        v = W(x)
        h' = tanh(W(x) + W(h) + b) + u - u + v - v
    """,
    "linears of intermediates and of linears": """
        states h, c
        c' = sigmoid(W(W(h) + b) + W(x)) * c + tanh(W(x) + b)
        h' = tanh(W(c') + b) * sigmoid(W(x) + W(h))
    """,
    "a state passed through, a state not read": """
        states h, c, m
        h' = tanh(W(x) + W(h) + b)
        c' = h
        m' = tanh(W(x))
    """,
}


@pytest.mark.parametrize("name", EDGE_CELLS)
def test_edge_cells(name):
    cell = parse_cell("cell edge\n" + EDGE_CELLS[name].strip().replace("\n        ", "\n"))
    assert_window_equals_autograd(cell)
    assert_batched_window_equals_autograd(cell)


def test_only_final_state_or_only_outputs_used():
    """Outputs the loss does not read get no gradient (None) into the window's backward."""
    stack = compile_cell(archsearch.seed("lstm"), 4, 4, seed=0, dtype=torch.float64)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    for pick in (lambda y, s: y.sum(), lambda y, s: s[1].sum()):
        grads = []
        for window in (stack.layers[0]._window, None):
            stack.layers[0]._window, keep = window, stack.layers[0]._window
            stack.zero_grad(set_to_none=True)
            pick(*stack(x)).backward()
            grads.append([p.grad.clone() for p in stack.parameters()])
            stack.layers[0]._window = keep
        for got, want in zip(*grads):
            assert_close(got, want)


def test_no_grad_and_torch_compile_paths_skip_the_window():
    stack = compile_cell(archsearch.seed("gru"), 4, 4, seed=0)
    x = torch.randn(3, 2, 4)
    with torch.no_grad():
        y, _ = stack(x)
    assert y.grad_fn is None
    assert type(stack(x)[0].grad_fn).__name__ == "GeneratedWindowBackward"
    stack.enable_torch_compile()  # compiles lazily, at the first call (not made here: it takes a minute)
    assert all(layer._window is None for layer in stack.layers)


def test_the_generated_backward_can_be_turned_off_per_module_and_per_process():
    stack = compile_cell(archsearch.seed("lstm"), 4, 4, seed=0)
    x = torch.randn(3, 2, 4)
    stack.use_generated_backward(False)
    assert type(stack(x)[0].grad_fn).__name__ != "GeneratedWindowBackward"
    stack.use_generated_backward(True)
    assert type(stack(x)[0].grad_fn).__name__ == "GeneratedWindowBackward"
    probe = ("import torch, archsearch; from archsearch.compiler import compile_cell; "
             "y = compile_cell(archsearch.seed('lstm'), 4, 4)(torch.randn(3, 2, 4))[0]; print(type(y.grad_fn).__name__)")
    for value, generated in (("0", False), ("1", True)):
        env = {**os.environ, "ARCHSEARCH_GENERATED_BACKWARD": value}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
        assert (out.strip() == "GeneratedWindowBackward") == generated, out


def test_batched_slices_train_through_the_generated_window_where_native_stages_run(monkeypatch):
    """By default batched slices use the generated window only with native stages (with torch ops autograd on the
    step is faster for them); True / False force it on / off."""
    from archsearch.compiler import _native

    stack = BatchedCellStack.from_stacks([compile_cell(archsearch.seed("gru"), 4, 4, seed=i) for i in range(2)])
    x = torch.randn(2, 3, 2, 4)
    generated = lambda: type(stack(x)[0].grad_fn).__name__ == "GeneratedWindowBackward"  # noqa: E731
    assert generated() == _native.available()
    monkeypatch.setattr(_native, "ENABLED", False)
    assert not generated()
    stack.use_generated_backward(True)
    assert generated()
    monkeypatch.setattr(_native, "ENABLED", True)
    stack.use_generated_backward(False)
    assert not generated()
    stack.use_generated_backward(None)
    assert generated() == _native.available()
