"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64():
    """Run the test with torch's default dtype float64 (exact comparisons), then restore it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def uninitialized_memory_is_nan():
    """torch.empty and friends return NaN-filled tensors (deterministic mode), so a buffer that generated code
    allocates uninitialized and then fails to write shows up in the results instead of passing as zeros."""
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(old)
