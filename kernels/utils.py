"""Helpers the Triton kernel files share: launch arithmetic, tile planning, precision choice, a row-norm kernel.

One home for what more than one kernel file uses (as Liger-Kernel's ``ops/utils.py``); a
kernel file never imports another kernel file's names.
"""

import torch
import triton
import triton.language as tl

DOT_MIN = 16  # tl.dot needs M, N, K >= 16 on the GPU (the interpreter does not check)

#: shared memory one launch may plan for, bytes: under the smallest per-block limit of the
#: GPUs edgefuse targets (99 KiB on sm_86/89/120, the RTX parts; Jetson Orin sm_87 and A100
#: have 163 KiB, H100/H200 227 KiB). The compiler's real usage of every launch the benchmarks
#: make is checked against it per architecture, without a GPU, by tools/aot.py.
SHARED_BUDGET = 96 * 1024
#: what the compiler may add to the operand stages the plan counts (the mbarriers of
#: asynchronous copies and MMAs; on Blackwell the tensor-memory address: 16 bytes beyond a full
#: plan on sm_110 with TF32), still under the 99 KiB limit (tests/tools/test_aot.py checks
#: every compiled binary against both).
SHARED_OVERHEAD = 1024
MAX_STAGES = 3  # Triton's default software-pipeline depth on CUDA
#: every launch passes this as ``enable_fp_fusion``: a*b+c contracts to one FMA, as in nvcc's
#: code (eager PyTorch's kernels). Pinned, not left to Triton's default, which Triton 3.9 warns
#: about on every first compile and 3.10 turns off.
FP_FUSION = True


# Launch arithmetic in plain Python: triton.cdiv and triton.next_power_of_2 are JIT-callable
# wrappers costing microseconds each, and at edge batches the launcher's host time is the
# kernel's latency.
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision`` for inputs of ``dtype``, chosen as torch chooses for its
    own CUDA matmuls (``nn.Linear`` included). fp16 and bf16 run on tensor cores whatever it
    says. fp32 runs on TF32 tensor cores only where the user allowed TF32 for CUDA matmuls:
    ``torch.set_float32_matmul_precision("high")``, ``torch.backends.cuda.matmul.allow_tf32 =
    True``, or from torch 2.9 ``torch.backends.cuda.matmul.fp32_precision = "tf32"``.
    Otherwise, as by torch's default, exact fp32 ("ieee", FMAs). Read on every fp32 launch
    (under a microsecond: bench/bench_launch_overhead.py times it), so a change takes effect on
    the next call."""
    if dtype != torch.float32:
        return "tf32"
    matmul = torch.backends.cuda.matmul
    try:
        setting = matmul.fp32_precision  # torch >= 2.9: "tf32", "ieee", or "none" (never set: ieee)
    except AttributeError:  # torch < 2.9 (reading allow_tf32 from 2.9 on can raise: mixed APIs)
        return "tf32" if matmul.allow_tf32 else "ieee"
    return "tf32" if setting == "tf32" else "ieee"


def pipeline(block_m: int, block_n: int, block_k: int, itemsize: int) -> tuple[int, int]:
    """(BLOCK_K, num_stages) such that every pipeline stage's A and B tiles fit SHARED_BUDGET.

    The compiled kernel keeps up to ``num_stages`` K-steps of both operand tiles in shared
    memory; BLOCK_K halves (down to tl.dot's 16) until at least two stages fit, so loads of
    the next K-step overlap the current dot.
    """

    def tile(bk: int) -> int:
        return (block_m * bk + bk * block_n) * itemsize

    while block_k > DOT_MIN and 2 * tile(block_k) > SHARED_BUDGET:
        block_k //= 2
    return block_k, max(1, min(MAX_STAGES, SHARED_BUDGET // tile(block_k)))


#: fewest programs one launch should have to keep a GPU's SMs busy (H100/H200: 132 SMs;
#: Orin: 16). Below it, narrow tiles beat a fused epilogue. Chosen by reasoning, not yet
#: measured: bench/gpu_check.sh is the measurement that should tune it.
MIN_PROGRAMS = 64
#: batches above this are GEMM-shaped (training, offline scoring): 64-row tiles, the height of
#: Hopper's warpgroup MMA and Blackwell's tensor-memory MMA (aot.GEMM_MMA)
GEMM_ROWS = 64


@triton.jit
def _l2norm_rows_kernel(y_ptr, R, D, BLOCK_D: tl.constexpr):
    """In-place L2 normalisation of R rows of width D (used when D spans several tiles). Its name is the
    binary's name in the AOT records (tools/aot.py)."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    sq = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        v = tl.load(y_ptr + row * D + start + offs, mask=start + offs < D, other=0.0).to(tl.float32)
        sq += v * v
    inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(sq, axis=0)), 1e-12)
    for start in range(0, D, BLOCK_D):
        m = start + offs < D
        v = tl.load(y_ptr + row * D + start + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * D + start + offs, (v * inv).to(y_ptr.dtype.element_ty), mask=m)
