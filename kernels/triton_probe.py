"""The smallest Triton kernel: dispatch builds, loads and runs it once per process, at the first
call on CUDA tensors (``ops.kernel_load_error``), before any fused op launches.

Triton builds every kernel with the ``ptxas`` in its wheel, and the GPU's driver must load what
that ``ptxas`` wrote. A driver older than that ``ptxas``'s CUDA may refuse it: "device kernel
image is invalid", at the first launch, from inside a model's forward. This kernel meets the same
compile and load one launch earlier, where dispatch can still take the reference ops instead.
"""

import torch
import triton
import triton.language as tl

#: the elements the probe writes; ``EXPECTED`` is what a working GPU leaves there
N = 16
EXPECTED = [3 * i + 1 for i in range(N)]


@triton.jit
def _iota(out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, offs * 3 + 1)


def run(device: torch.device | str) -> None:
    """Compile, load and run the kernel on ``device`` and read its result back; raises what
    Triton or the driver raised, or a ``RuntimeError`` when the kernel ran but wrote
    something else."""
    out = torch.full((N,), -1, dtype=torch.int32, device=device)
    _iota[(1,)](out, BLOCK=N, enable_fp_fusion=True)  # (set, as every launch sets it: Triton 3.9 warns otherwise)
    got = out.tolist()  # waits for the kernel
    if got != EXPECTED:
        raise RuntimeError(f"Triton's test kernel ran but wrote {got[:4]}... instead of {EXPECTED[:4]}...")
