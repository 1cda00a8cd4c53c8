"""Kernel tests run with poisoned allocations (tests/kernels/_guard.py): ``torch.empty`` returns
NaN, so a kernel that leaves part of its output unwritten (an absent modality's zero row, a
tile's tail) fails every time, not only when the allocator hands back dirty memory.
tools/guard_mutants.py shows what the bare interpreter makes of such kernels.
"""

import pytest

pytest.register_assert_rewrite("tests.kernels._mutants")  # its cases' asserts say what differed

from tests.kernels._guard import interpreter_patches_undone, poisoned_allocations  # noqa: E402


@pytest.fixture(autouse=True)
def _poisoned_allocations():
    with poisoned_allocations():
        yield


@pytest.fixture(autouse=True)
def _interpreter_patches_undone():
    """A test that interprets kernels on a GPU machine leaves the kernels compilable (_guard.py)."""
    with interpreter_patches_undone():
        yield
