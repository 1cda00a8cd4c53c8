"""The interpreter's guard (tests/kernels/_guard.py) catches what a GPU would fault or race on,
and the tl.dot calls the GPU compiler would reject or the interpreter gets wrong.

Its kernels are interpreted whatever the machine (``InterpretedFunction``), on CPU tensors.
"""

import pytest
import torch
import triton.language as tl
from triton.runtime.errors import InterpreterError
from triton.runtime.interpreter import InterpretedFunction

from tests.kernels._guard import guard, interpreter_patches_undone


def _copy_py(src, dst, n, BLOCK: tl.constexpr, MASK_LOAD: tl.constexpr, MASK_STORE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    if MASK_LOAD:
        v = tl.load(src + offs, mask=ok, other=0.0)
    else:
        v = tl.load(src + offs)
    if MASK_STORE:
        tl.store(dst + offs, v, mask=ok)
    else:
        tl.store(dst + offs, v)


_copy = InterpretedFunction(_copy_py)


def _run(src, dst, mask_load=True, mask_store=True):
    _copy[(2,)](src, dst, src.numel(), BLOCK=8, MASK_LOAD=mask_load, MASK_STORE=mask_store)


def test_masked_accesses_pass_and_copy():
    src, dst = torch.arange(11, dtype=torch.float32), torch.zeros(11)
    with guard():
        _run(src, dst)
    assert torch.equal(dst, src)


@pytest.mark.parametrize("mask_load,mask_store,what", [(False, True, "load"), (True, False, "store")])
def test_a_dropped_mask_is_out_of_bounds(mask_load, mask_store, what):
    src, buf = torch.arange(11, dtype=torch.float32), torch.zeros(16)
    dst = buf[:11]  # the bare interpreter would write buf[11:16] without a word
    with (
        guard(),
        pytest.raises(
            InterpreterError,
            match=rf"OutOfBounds.*_copy_py, program \(1, 0, 0\): a {what} of 8 "
            r"masked-in lanes.*5 lanes fall outside",
        ),
    ):
        _run(src, dst, mask_load, mask_store)
    assert torch.equal(buf[:8], src[:8]), "program 0 ran"
    assert torch.equal(buf[8:], torch.zeros(8)), "program 1's store is refused whole, before it is made"


def test_a_view_is_bounded_by_its_elements_not_its_storage():
    """Reading past a slice into the rest of its tensor is caught: the GPU would read garbage
    there only by luck, and another kernel's output would be there on a real allocation."""
    whole = torch.arange(16, dtype=torch.float32)
    src = whole[:11]
    with guard(), pytest.raises(InterpreterError, match="OutOfBounds.*argument 'src'"):
        _run(src, torch.zeros(16), mask_load=False)


def _shifted_copy_py(src, dst, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    """Program p copies src block p to dst, SHIFT * p elements early: with SHIFT > 0, the blocks
    of neighbouring programs overlap in dst."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offs - tl.program_id(0) * SHIFT, tl.load(src + offs))


def _sum_neighbour_py(buf, BLOCK: tl.constexpr):
    """Program p writes its block, then reads program p - 1's: fine in the interpreter's order."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(buf + offs, offs.to(tl.float32))
    if pid > 0:
        tl.store(buf + offs, tl.load(buf + offs - BLOCK) + 1.0)


def test_two_programs_storing_one_element_race():
    src, dst = torch.arange(16, dtype=torch.float32), torch.zeros(16)
    with guard():
        InterpretedFunction(_shifted_copy_py)[(2,)](src, dst, SHIFT=0, BLOCK=8)  # disjoint blocks
        assert torch.equal(dst, src)
        with pytest.raises(
            InterpreterError,
            match=r"Race.*_shifted_copy_py, program \(1, 0, 0\): a store of 8 masked-in "
            r"lanes reaches 2 elements of argument 'dst' that program \(0, 0, 0\)",
        ):
            InterpretedFunction(_shifted_copy_py)[(2,)](src, dst, SHIFT=2, BLOCK=8)


def test_a_program_reading_what_another_stored_races():
    with (
        guard(),
        pytest.raises(InterpreterError, match=r"Race.*program \(1, 0, 0\): a load of 8 .* program \(0, 0, 0\)"),
    ):
        InterpretedFunction(_sum_neighbour_py)[(2,)](torch.zeros(16), BLOCK=8)


def _dot_py(a, b, c, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr):
    m, n, k = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
    x = tl.load(a + m[:, None] * K + k[None, :])
    y = tl.load(b + k[:, None] * N + n[None, :])
    tl.store(c + m[:, None] * N + n[None, :], tl.dot(x, y).to(c.dtype.element_ty))


@pytest.mark.parametrize(
    "m,n,k,dtype,error",
    [
        (16, 16, 16, torch.float16, None),
        (
            8,
            16,
            16,
            torch.float16,
            r"BadDot.*_dot_py: tl.dot of \[8, 16\] x \[16, 16\]; the GPU compiler needs M, N and K >= 16",
        ),
        (16, 16, 8, torch.float32, r"BadDot.*_dot_py: tl.dot of \[16, 8\] x \[8, 16\]"),
        (16, 16, 16, torch.bfloat16, r"BadDot.*_dot_py: tl.dot of bfloat16 operands"),
    ],
)
def test_dots_the_gpu_rejects_or_the_interpreter_gets_wrong_fail(m, n, k, dtype, error):
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    c = torch.empty(m, n, dtype=dtype)
    with guard():
        if error is None:
            InterpretedFunction(_dot_py)[(1,)](a, b, c, M=m, N=n, K=k)
            torch.testing.assert_close(c.float(), a.float() @ b.float(), rtol=1e-2, atol=1e-2)
        else:
            if min(m, n, k) < 16:  # the interpreters of Triton 3.0 to 3.2 reject these themselves, first
                error = f"({error}|must be >= 16|Input shapes should have M >= 16, N >= 16 and K >= 16)"
            with pytest.raises(InterpreterError, match=error):
                InterpretedFunction(_dot_py)[(1,)](a, b, c, M=m, N=n, K=k)


def test_the_guard_restores_the_interpreter():
    from triton.runtime import interpreter as ti

    def patched():
        return (
            ti.InterpreterBuilder.create_masked_load,
            ti.InterpreterBuilder.create_masked_store,
            ti.InterpreterBuilder.create_dot,
            ti.GridExecutor.__call__,
        )

    before = patched()
    with guard():
        assert all(a is not b for a, b in zip(patched(), before))
    assert patched() == before


def test_interpreter_patches_undone_restores_what_the_interpreter_rewrites():
    """What Triton 3.0-3.5's interpreter does to triton.language on a launch, done by hand:
    replaced functions and methods come back, added names go, an imported submodule stays."""
    import types

    originals = (tl.dtype.to_ir, tl.range, tl.core.reduce, tl.tensor.__repr__)
    had_index = "__index__" in vars(tl.tensor)
    with interpreter_patches_undone(always=True):  # (a no-op from Triton 3.6, whose interpreter needs none)
        tl.dtype.to_ir = lambda self, builder: None
        tl.range = tl.core.reduce = lambda *a, **k: None
        tl.tensor.__repr__ = lambda self: "interpreted"
        tl.tensor.__index__ = lambda self: 0
        tl.core._edgefuse_added = 1
        tl._edgefuse_submodule = types.ModuleType("triton.language._edgefuse_submodule")
    assert (tl.dtype.to_ir, tl.range, tl.core.reduce, tl.tensor.__repr__) == originals
    assert ("__index__" in vars(tl.tensor)) == had_index and not hasattr(tl.core, "_edgefuse_added")
    assert isinstance(tl._edgefuse_submodule, types.ModuleType)
    del tl._edgefuse_submodule


LEAK_SCRIPT = """
import os, sys
import torch
from tools import aot
from edgefuse.kernels.triton_gated import gated_fusion_triton
from tests.kernels import test_guard
from tests.kernels._guard import interpreter_patches_undone

src, dst = torch.arange(11, dtype=torch.float32), torch.zeros(11)
with interpreter_patches_undone():
    test_guard._run(src, dst)  # interpreted, whatever the machine
assert torch.equal(src, dst)
with aot.stand_in_gpu(90) as launches:  # compiled for sm_90 by Triton's JIT; runs nothing
    gated_fusion_triton(torch.randn(4, 3, 64), torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool))
print(sum(launches.values()))
"""


def test_a_kernel_compiles_for_the_gpu_after_an_interpreted_launch(tmp_path):
    """test_guard.py and test_masks.py interpret kernels in a GPU session too. Before Triton 3.6
    the interpreter's patches then broke every later compile in the process (a CompilationError
    in the GPU check's test_selfcheck.py with Triton 3.0-3.5); conftest.py undoes them after
    each test. Compiled here for a stand-in sm_90 GPU, in a process without the interpreter.
    Without the undo it fails on Triton 3.0 to 3.5, which tools/triton_versions.sh's interpreter
    tests run; from 3.6 (CI's 3.9) Triton undoes its own patches and the undo does nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EDGEFUSE_KERNELS")}
    env["TRITON_INTERPRET"] = "0"
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a compile, not a hit in Triton's cache
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", LEAK_SCRIPT], env=env, capture_output=True, text=True, timeout=300, cwd=root
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.split()[-1] == "1"  # the one launch reached the driver
