"""Fused multi-modality projection: ``y[:, i] = act(x_i W_i^T + b_i)`` for N modalities in ONE launch.

Grouped GEMM: program (tile, g) computes one [BLOCK_M, BLOCK_N] tile of modality g. The
per-modality metadata (input pointer, weight pointer, K_i) is passed as kernel arguments
(up to ``MAX_GROUPS`` per launch) and selected by ``program_id(1)``: no device-side table
to upload per call, so the launch is capturable in a CUDA graph and runs in the interpreter.
Optional L2 normalisation of each output row happens in the epilogue when one tile spans
the whole row (BLOCK_N >= D); otherwise a second, row-wise kernel normalises.

At edge batches with few output tiles the K loop is split over several programs (split-K):
each stores an fp32 partial, and one small epilogue launch per group of modalities sums the
partials and applies bias, activation and the L2 norm (see ``_split_k``).

Training runs the kernel too (``ProjectionFunction``): its forward is the launch above without
activation or norm, giving the pre-activations ``[B, N, D]``; torch applies the activation and
the norm to all N rows at once, and the backward is two matmuls per present modality.

Order of this file: kernels, launcher, the autograd Function.
"""

import functools
from typing import Sequence

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from edgefuse.kernels import checks
from edgefuse.kernels._launch import launch
from edgefuse.kernels.utils import (
    DOT_MIN,
    FP_FUSION,
    GEMM_ROWS,
    MIN_PROGRAMS,
    _l2norm_rows_kernel,
    cdiv,
    dot_precision,
    next_pow2,
    pipeline,
)

MAX_GROUPS = 8


@triton.jit
def _tanh(y):
    """tanh in float32, to a few ulp over the whole range (not every Triton 3.x has tl.tanh).
    ``2 sigmoid(2y) - 1`` is off by about 1e-7 absolute, so by 1e-4 relative at |y| = 1e-3;
    a row of such values, L2-normalised, turns that into 1e-4 absolute. Below |y| = 0.25, the
    Taylor polynomial to y^13 (next term < 2e-12); above, ``(1 - e) / (1 + e)`` with
    ``e = exp(-2|y|) <= 1`` (no overflow, no cancellation past 0.25); odd."""
    a = tl.abs(y)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    s = a * a
    small = a * (
        1.0
        + s
        * (
            -0.3333333333333333
            + s
            * (
                0.13333333333333333
                + s
                * (
                    -0.05396825396825397
                    + s * (0.021869488536155203 + s * (-0.008863235529902197 + s * 0.003592128036572481))
                )
            )
        )
    )
    t = tl.where(a < 0.25, small, big)
    return tl.where(y < 0.0, -t, t)


@triton.jit
def _apply_act(y, ACT: tl.constexpr):
    if ACT == 1:
        y = tl.maximum(y, 0.0)
    elif ACT == 2:
        y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
    elif ACT == 3:
        y = _tanh(y)
    return y


@triton.jit
def _select(g, v0, v1, v2, v3, v4, v5, v6, v7, NUM: tl.constexpr):
    v = v0
    if NUM > 1:
        if g == 1:
            v = v1
    if NUM > 2:
        if g == 2:
            v = v2
    if NUM > 3:
        if g == 3:
            v = v3
    if NUM > 4:
        if g == 4:
            v = v4
    if NUM > 5:
        if g == 5:
            v = v5
    if NUM > 6:
        if g == 6:
            v = v6
    if NUM > 7:
        if g == 7:
            v = v7
    return v


# PRESENT (bit g: modality g has input) is a runtime argument that Triton must not specialise
# (it would for values 1 and multiples of 16): a sensor that drops out or comes back changes
# it, and must not make the JIT compile a new binary in the middle of a run.
@triton.jit(do_not_specialize=["PRESENT"])
def _fused_projection_kernel(
    x0,
    x1,
    x2,
    x3,
    x4,
    x5,
    x6,
    x7,
    w0,
    w1,
    w2,
    w3,
    w4,
    w5,
    w6,
    w7,
    k0,
    k1,
    k2,
    k3,
    k4,
    k5,
    k6,
    k7,
    bias_ptr,
    out_ptr,
    ws_ptr,
    B,
    D,
    N_TOTAL,
    G_OFFSET,
    PRESENT,
    NUM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr,
    NORMALIZE: tl.constexpr,
    PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    tiles_n = tl.cdiv(D, BLOCK_N)
    pid_m, pid_n = pid // tiles_n, pid % tiles_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = offs_m < B, offs_n < D
    out_ptrs = out_ptr + offs_m[:, None].to(tl.int64) * N_TOTAL * D + (G_OFFSET + g) * D + offs_n[None, :]
    out_mask = m_ok[:, None] & n_ok[None, :]
    if ((PRESENT >> g) & 1) == 0:  # absent modality: a zero row, masked out downstream
        if SPLIT_K == 1:  # (split: the epilogue kernel writes it)
            tl.store(out_ptrs, tl.zeros((BLOCK_M, BLOCK_N), dtype=out_ptr.dtype.element_ty), mask=out_mask)
    else:
        x_ptr = _select(g, x0, x1, x2, x3, x4, x5, x6, x7, NUM)
        w_ptr = _select(g, w0, w1, w2, w3, w4, w5, w6, w7, NUM)
        K = _select(g, k0, k1, k2, k3, k4, k5, k6, k7, NUM)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        offs_k = tl.arange(0, BLOCK_K)
        k_tiles = tl.cdiv(K, BLOCK_K)
        k_first, k_last = 0, k_tiles
        if SPLIT_K > 1:  # this program's share of the K tiles (a share may be empty: acc stays 0)
            per = tl.cdiv(k_tiles, SPLIT_K)
            k_first = tl.program_id(2) * per
            k_last = tl.minimum(k_first + per, k_tiles)
        for k in range(k_first, k_last):
            kk = k * BLOCK_K + offs_k
            k_ok = kk < K
            a = tl.load(
                x_ptr + offs_m[:, None].to(tl.int64) * K + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0
            )
            # W is [D, K] (nn.Linear): read a [BLOCK_K, BLOCK_N] tile of W^T
            w = tl.load(
                w_ptr + offs_n[None, :].to(tl.int64) * K + kk[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0.0
            )
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if SPLIT_K > 1:  # a partial sum, fp32, to ws[split, m, group, n]; _split_k_epilogue finishes
            ws_ptrs = (
                ws_ptr
                + (tl.program_id(2) * B + offs_m[:, None].to(tl.int64)) * N_TOTAL * D
                + (G_OFFSET + g) * D
                + offs_n[None, :]
            )
            tl.store(ws_ptrs, acc, mask=out_mask)
        else:
            if HAS_BIAS:
                b = tl.load(bias_ptr + (G_OFFSET + g) * D + offs_n, mask=n_ok, other=0.0).to(tl.float32)
                acc = acc + b[None, :]
            acc = _apply_act(acc, ACT)
            if NORMALIZE:  # BLOCK_N >= D here: the whole row is in this tile
                acc = tl.where(n_ok[None, :], acc, 0.0)
                norm = tl.sqrt(tl.sum(acc * acc, axis=1))
                acc = acc / tl.maximum(norm, 1e-12)[:, None]
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=["PRESENT"])
def _split_k_epilogue(
    ws_ptr,
    bias_ptr,
    out_ptr,
    B,
    D,
    N_TOTAL,
    G_OFFSET,
    PRESENT,
    HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr,
    NORMALIZE: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program per (row, modality): sum the SPLIT_K partials, then bias, activation and
    the L2 norm (BLOCK_D >= D: the row is in registers), and store in the output dtype."""
    m = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    offs = tl.arange(0, BLOCK_D)
    ok = offs < D
    col = (G_OFFSET + g) * D + offs
    out_ptrs = out_ptr + m * N_TOTAL * D + col
    if ((PRESENT >> g) & 1) == 0:
        tl.store(out_ptrs, tl.zeros((BLOCK_D,), dtype=out_ptr.dtype.element_ty), mask=ok)
    else:
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for s in range(SPLIT_K):
            acc += tl.load(ws_ptr + (s * B + m) * N_TOTAL * D + col, mask=ok, other=0.0)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + col, mask=ok, other=0.0).to(tl.float32)
        acc = _apply_act(acc, ACT)
        if NORMALIZE:
            acc = tl.where(ok, acc, 0.0)
            acc = acc / tl.maximum(tl.sqrt(tl.sum(acc * acc, axis=0)), 1e-12)
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def _config(b: int, d: int, normalize: bool, n: int = 1) -> tuple[int, int, int, int, bool]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, fused_norm).

    Edge batches (1-32 rows) make the projection a set of GEMVs bound by reading the weights:
    BLOCK_M = 16 wastes the least, and narrow BLOCK_N spreads the weights over many programs.
    The L2 norm fuses into the epilogue only when one tile can span the row (D <= 1024) and
    the launch still has MIN_PROGRAMS programs; otherwise a row-norm launch follows.

    Above GEMM_ROWS rows a fused tile must also be GEMM-shaped (64 rows, D <= 256). A tile
    spanning D = 1024 has to stay 16 rows tall, and at B = 4096 that costs twice over: every
    16 rows re-read all the weights (16 flop per byte of tile traffic, against 43 for 64 x 128
    tiles), and a 16-row tile cannot use Hopper's warpgroup MMA (it compiles to ``mma.sync``:
    ``python -m tools.aot`` lists each binary's tensor-core instructions). The
    row-norm launch that replaces the fused epilogue is one more pass over the output, small
    beside the GEMM at those batches.
    """
    wide = max(DOT_MIN, next_pow2(d))
    # a fused tile spans the row: 16 rows tall where D > 256 so its fp32 accumulator (16 x D)
    # fits in registers (64 x 1024 would be 256 KiB per program, the whole register file); one
    # such tile per block of rows and modality
    fused_m = 16 if wide > 256 else 32 if b <= GEMM_ROWS else 64
    fused = normalize and d <= 1024 and (b <= GEMM_ROWS or fused_m == 64) and cdiv(b, fused_m) * n >= MIN_PROGRAMS
    if fused:
        block_m, block_n = fused_m, wide
    else:
        block_m = 16 if b <= 16 else 32 if b <= GEMM_ROWS else 64
        if cdiv(b, block_m) * n * cdiv(d, 64) >= MIN_PROGRAMS or d <= 32:
            block_n = min(wide, 64 if b <= GEMM_ROWS else 128)
        else:
            block_n = min(wide, 32)
    block_k = 64 if block_n <= 256 else 32
    warps = 4 if block_m * block_n <= 64 * 64 else 8
    return block_m, block_n, block_k, warps, fused


#: split-K aims for this many programs at edge batches (H200: 132 SMs, two programs each)
SPLIT_TARGET = 256
MAX_SPLIT = 16
#: split-K partials are fp32 and cross memory twice: keep them under this share of the weight bytes
SPLIT_TRAFFIC = 0.25
#: the split-K epilogue holds a whole row in registers
SPLIT_MAX_D = 4096


def _split_k(programs: int, b: int, d: int, n: int, k_max: int, k_sum: int, block_k: int, itemsize: int) -> int:
    """How many programs share each tile's K loop (1: none).

    At edge batches the projection is a set of GEMVs that stream the weights once; with few
    output tiles (3 modalities at D = 256 give 24 programs, at D = 1024 96) only a fraction
    of the SMs issue loads, and each program's loads in flight bound its bandwidth.
    Splitting K multiplies the programs; each writes an fp32 partial and a small epilogue
    launch sums them (and applies bias, activation, L2 norm). The split doubles while under
    SPLIT_TARGET programs, while every share keeps >= 2 K tiles of the widest input, and
    while the partials' traffic stays under SPLIT_TRAFFIC of the weight bytes (which rules it
    out as B grows).
    """
    if programs >= SPLIT_TARGET or d > SPLIT_MAX_D:
        return 1
    split = 1
    while (
        programs * split < SPLIT_TARGET
        and split < MAX_SPLIT
        and cdiv(k_max, block_k) >= 4 * split
        and 2 * split * b * n * 4 <= SPLIT_TRAFFIC * k_sum * itemsize
    ):
        split *= 2
    return split


@functools.lru_cache(maxsize=512)
def _plan(b: int, d: int, n: int, normalize: bool, itemsize: int, config: tuple | None, k_max: int, k_sum: int):
    """Everything about a launch that depends only on shapes, computed once per shape:
    (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, fused_norm, programs along axis 0,
    split_k). ``config``: 5 values (as ``_config``; no split) or 6 (with split_k)."""
    block_m, block_n, block_k, warps, fused_norm, *split = config or _config(b, d, normalize, n)
    if min(block_m, block_n, block_k) < DOT_MIN:  # the GPU compiler rejects these; the interpreter would not
        raise ValueError(
            f"fused_projection: tl.dot needs blocks >= {DOT_MIN}, config gave {(block_m, block_n, block_k)}"
        )
    block_k, stages = pipeline(block_m, block_n, block_k, itemsize)
    fused_norm = normalize and fused_norm and block_n >= d
    programs = cdiv(b, block_m) * cdiv(d, block_n)
    if split:
        split_k = split[0]
    elif config is None and not fused_norm:
        split_k = _split_k(programs * min(n, MAX_GROUPS), b, d, n, k_max, k_sum, block_k, itemsize)
    else:
        split_k = 1
    if split_k > 1 and d > SPLIT_MAX_D:
        raise ValueError(f"fused_projection: split-K needs D <= {SPLIT_MAX_D}, got D={d}")
    return block_m, block_n, block_k, warps, stages, fused_norm, programs, split_k


def fused_projection_triton(
    xs: Sequence[torch.Tensor | None],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    act: str = "none",
    normalize: bool = False,
    config: tuple[int, int, int, int, bool] | None = None,
) -> torch.Tensor:
    """Launcher. ``xs[i]`` ``[B, K_i]`` (None = absent), ``weights[i]`` ``[D, K_i]``, ``bias`` ``[N, D]``.

    Returns ``[B, N, D]`` in the inputs' dtype. Raises ValueError on mismatched shapes,
    dtypes, devices or non-contiguous tensors. ``config`` overrides ``_config`` (tests).
    """
    ref = checks.projection(xs, weights, bias, act, kernel=True)  # raises ValueError naming what is wrong
    n, d, b = len(xs), weights[0].shape[0], ref.shape[0]
    out = torch.empty((b, n, d), device=ref.device, dtype=ref.dtype)
    if b == 0:
        return out
    ks = [w.shape[1] for w in weights]
    block_m, block_n, block_k, warps, stages, fused_norm, programs, split_k = _plan(
        b, d, n, normalize, ref.element_size(), None if config is None else tuple(config), max(ks), sum(ks)
    )
    precision = dot_precision(ref.dtype)
    has_bias = bias is not None
    ws = torch.empty((split_k, b, n, d), device=ref.device, dtype=torch.float32) if split_k > 1 else out
    for start in range(0, n, MAX_GROUPS):  # one launch per 8 modalities (one launch for N <= 8)
        stop = min(n, start + MAX_GROUPS)
        present, xp, wp, kp = 0, [], [], []
        for j in range(start, stop):
            x, w = xs[j], weights[j]
            if x is not None:
                present |= 1 << (j - start)
            xp.append(ref if x is None else x)
            wp.append(w)
            kp.append(w.shape[1])
        pad = MAX_GROUPS - (stop - start)
        launch(
            _fused_projection_kernel,
            (programs, stop - start, split_k),
            *xp,
            *([ref] * pad),
            *wp,
            *([weights[0]] * pad),
            *kp,
            *([kp[0]] * pad),
            bias if has_bias else out,
            out,
            ws,
            b,
            d,
            n,
            start,
            present,
            NUM=stop - start,
            HAS_BIAS=has_bias,
            ACT=checks.ACTS[act],
            NORMALIZE=fused_norm,
            PRECISION=precision,
            SPLIT_K=split_k,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            num_warps=warps,
            num_stages=stages,
            enable_fp_fusion=FP_FUSION,
        )
        if split_k > 1:
            block_d = max(16, next_pow2(d))
            launch(
                _split_k_epilogue,
                (b, stop - start),
                ws,
                bias if has_bias else out,
                out,
                b,
                d,
                n,
                start,
                present,
                HAS_BIAS=has_bias,
                ACT=checks.ACTS[act],
                NORMALIZE=normalize,
                SPLIT_K=split_k,
                BLOCK_D=block_d,
                num_warps=4 if block_d <= 1024 else 8,
                enable_fp_fusion=FP_FUSION,
            )
    if normalize and not fused_norm and split_k == 1:
        launch(
            _l2norm_rows_kernel, (b * n,), out, b * n, d, BLOCK_D=1024, num_warps=4, enable_fp_fusion=FP_FUSION
        )  # zero rows stay zero
    return out


class ProjectionFunction(torch.autograd.Function):
    """``x_i W_i^T + b_i`` for N modalities, ``[B, N, D]`` (absent ``x_i`` = None: zeros), differentiable.

    ``apply(bias, n, *xs, *weights)``. The forward is one grouped-GEMM launch (no activation,
    no norm: ``ops.fused_projection`` applies those with torch, which differentiates them).
    The backward is ``dx_i = dz_i W_i`` and ``dW_i = dz_i^T x_i`` per present modality, and
    ``db_i = sum over rows of dz_i`` (zero for an absent one): at training batches these are
    GEMMs that cuBLAS runs well, so the kernel's gain is the forward's one launch for N.
    """

    @staticmethod
    def forward(ctx, bias, n, *tensors):  # noqa: D102 (torch.autograd.Function protocol)
        xs, weights = list(tensors[:n]), list(tensors[n:])
        ctx.n, ctx.bias_dtype = n, None if bias is None else bias.dtype
        ctx.save_for_backward(*xs, *weights)
        return fused_projection_triton(xs, weights, bias, "none", False)

    @staticmethod
    @once_differentiable
    def backward(ctx, dz):  # noqa: D102
        n, saved, needs = ctx.n, ctx.saved_tensors, ctx.needs_input_grad
        xs, weights = saved[:n], saved[n:]
        dxs = [None if x is None or not needs[2 + i] else dz[:, i] @ w for i, (x, w) in enumerate(zip(xs, weights))]
        dws = [None if x is None or not needs[2 + n + i] else dz[:, i].t() @ x for i, x in enumerate(xs)]
        dbias = None
        if needs[0]:
            dbias = dz.sum(0, dtype=torch.float32)
            absent = [i for i, x in enumerate(xs) if x is None]
            if absent:  # an absent modality's row is zeros whatever the bias
                dbias[absent] = 0.0
            dbias = dbias.to(ctx.bias_dtype)
        return (dbias, None, *dxs, *dws)


def fused_projection_train(
    xs: Sequence[torch.Tensor | None],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    act: str = "none",
    normalize: bool = False,
) -> torch.Tensor:
    """``fused_projection_triton``'s result, differentiable: one launch for the N pre-activations
    (``ProjectionFunction``), then torch's activation and norm over ``[B, N, D]`` at once (an
    absent modality's zero row stays zero through both)."""
    from edgefuse.kernels.reference import act_normalize

    return act_normalize(ProjectionFunction.apply(bias, len(xs), *xs, *weights), act, normalize)
