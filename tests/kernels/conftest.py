"""Kernel tests run with poisoned allocations: ``torch.empty`` and friends return NaN (floats) or
the largest integer, not whatever the memory held.

A kernel that leaves part of its output unwritten (an absent modality's zero row, a tile's tail)
then fails every time. Without it, it fails only when the allocator hands back dirty memory: a
GPU's caching allocator does, while fresh CPU pages are zeros. (Dropping the projection's
zero-row store for an absent modality gave a wrong result in 4 of 20 unpoisoned runs on the
development VM, and in 20 of 20 poisoned: a one-off count.) PyTorch's own switch does the filling: deterministic mode with
``torch.utils.deterministic.fill_uninitialized_memory``, warn-only so no op is refused.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _poisoned_allocations():
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
