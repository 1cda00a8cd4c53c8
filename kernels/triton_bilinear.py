"""Bilinear fusion kernels: full bilinear ``z_k = x^T W_k y + b_k`` and low-rank MFB pooling.

* ``bilinear``: the outer product ``x y^T`` is formed tile by tile in registers and used as the
  A operand of a GEMM against ``W`` viewed as ``[O, K1*K2]``: the ``[B, K1*K2]`` outer product
  never exists in memory.
* ``mfb``: both projections ``U x`` and ``V y`` for a block of outputs x all their factors are
  accumulated in the same program; the product, the sum-pooling over factors, the signed
  square root and (when one block spans all outputs) the L2 normalisation happen in the
  epilogue. Wider outputs get one extra row-normalisation launch.

Order of this file: kernels, launchers (forward only: training takes the reference path).
"""

import torch
import triton
import triton.language as tl

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


@triton.jit
def _bilinear_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    B,
    K1,
    K2,
    O,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_o = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    m_ok, o_ok = offs_m < B, offs_o < O
    acc = tl.zeros((BLOCK_M, BLOCK_O), dtype=tl.float32)
    ii, jj = tl.arange(0, BLOCK_I), tl.arange(0, BLOCK_J)
    for i0 in range(0, K1, BLOCK_I):
        i = i0 + ii
        i_ok = i < K1
        xa = tl.load(x_ptr + offs_m[:, None] * K1 + i[None, :], mask=m_ok[:, None] & i_ok[None, :], other=0.0).to(
            tl.float32
        )
        for j0 in range(0, K2, BLOCK_J):
            j = j0 + jj
            j_ok = j < K2
            yb = tl.load(y_ptr + offs_m[:, None] * K2 + j[None, :], mask=m_ok[:, None] & j_ok[None, :], other=0.0).to(
                tl.float32
            )
            p = tl.reshape(xa[:, :, None] * yb[:, None, :], (BLOCK_M, BLOCK_I * BLOCK_J))
            ij = tl.reshape(i[:, None] * K2 + j[None, :], (BLOCK_I * BLOCK_J,))
            ij_ok = tl.reshape(i_ok[:, None] & j_ok[None, :], (BLOCK_I * BLOCK_J,))
            w = tl.load(w_ptr + offs_o[None, :] * K1 * K2 + ij[:, None], mask=ij_ok[:, None] & o_ok[None, :], other=0.0)
            acc = tl.dot(p.to(w.dtype), w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + offs_m[:, None] * O + offs_o[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=m_ok[:, None] & o_ok[None, :],
    )


@triton.jit
def _project_rows(
    x_ptr,
    w_ptr,
    K,
    offs_m,
    m_ok,
    rows,
    rows_ok,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    WIDTH: tl.constexpr,
):
    """``x[offs_m] @ w[rows]^T`` over all of K, fp32 accumulation: one MFB projection tile."""
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + kk
        a = tl.load(x_ptr + offs_m[:, None] * K + k[None, :], mask=m_ok[:, None] & (k[None, :] < K), other=0.0)
        w = tl.load(w_ptr + rows[None, :] * K + k[:, None], mask=(k[:, None] < K) & rows_ok[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _mfb_kernel(
    x_ptr,
    y_ptr,
    u_ptr,
    ub_ptr,
    v_ptr,
    vb_ptr,
    present_ptr,
    out_ptr,
    B,
    K1,
    K2,
    O,
    F,
    HAS_BIAS: tl.constexpr,
    HAS_PRESENT: tl.constexpr,
    NORMALIZE: tl.constexpr,
    FUSED_L2: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_o = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_f = tl.arange(0, BLOCK_F)
    m_ok, o_ok = offs_m < B, offs_o < O
    # weight rows of this block: output o, factor f -> row o * F + f (factors padded to a power of 2)
    rows = tl.reshape(offs_o[:, None] * F + offs_f[None, :], (BLOCK_O * BLOCK_F,))
    rows_ok = tl.reshape(o_ok[:, None] & (offs_f[None, :] < F), (BLOCK_O * BLOCK_F,))
    acc_u = _project_rows(x_ptr, u_ptr, K1, offs_m, m_ok, rows, rows_ok, PRECISION, BLOCK_M, BLOCK_K, BLOCK_O * BLOCK_F)
    acc_v = _project_rows(y_ptr, v_ptr, K2, offs_m, m_ok, rows, rows_ok, PRECISION, BLOCK_M, BLOCK_K, BLOCK_O * BLOCK_F)
    if HAS_BIAS:
        acc_u += tl.load(ub_ptr + rows, mask=rows_ok, other=0.0).to(tl.float32)[None, :]
        acc_v += tl.load(vb_ptr + rows, mask=rows_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_PRESENT:  # an absent side is the identity of the product
        px = tl.load(present_ptr + offs_m * 2, mask=m_ok, other=1) != 0
        py = tl.load(present_ptr + offs_m * 2 + 1, mask=m_ok, other=1) != 0
        acc_u = tl.where(px[:, None], acc_u, 1.0)
        acc_v = tl.where(py[:, None], acc_v, 1.0)
    prod = tl.where(rows_ok[None, :], acc_u * acc_v, 0.0)
    z = tl.sum(tl.reshape(prod, (BLOCK_M, BLOCK_O, BLOCK_F)), axis=2)
    if NORMALIZE:
        z = tl.where(z >= 0, 1.0, -1.0) * tl.sqrt(tl.abs(z) + 1e-12)
        if FUSED_L2:
            z = tl.where(o_ok[None, :], z, 0.0)
            z = z / tl.maximum(tl.sqrt(tl.sum(z * z, axis=1)), 1e-12)[:, None]
    tl.store(
        out_ptr + offs_m[:, None] * O + offs_o[None, :],
        z.to(out_ptr.dtype.element_ty),
        mask=m_ok[:, None] & o_ok[None, :],
    )


def _mfb_config(b: int, o: int, factors: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_O, BLOCK_K, num_warps) for MFB with ``b`` rows, ``o`` outputs.

    A program accumulates ``BLOCK_O * BLOCK_F`` rows of both U and V (two fp32 accumulators)
    for ``BLOCK_M`` input rows, so every program streams its slice of U and V once.

    * Edge batches (``b <= GEMM_ROWS``): one or a few 16-row tiles, bound by reading the
      weights. One block spanning all outputs would fuse the L2 norm but leave a handful of
      programs streaming all of U and V, so blocks narrow until the launch has MIN_PROGRAMS
      programs (never below tl.dot's 16 weight rows); the row norm is then a second launch.
    * Larger batches: 64-row tiles. With 16-row tiles every 16 rows re-read all of U and V
      (B/16 passes over the weights, ~15 flop per byte of tile traffic); 64 x 128 tiles give
      ~43, and 64 rows is the tile height of Hopper's warpgroup MMA. Two 64 x 128 fp32
      accumulators over 8 warps are 64 registers a thread; BLOCK_K = 64 (halved for fp32
      by ``_pipeline`` if the stages would not fit the shared-memory budget).
    """
    block_f = next_pow2(factors)
    floor = max(1, DOT_MIN // block_f)  # narrowest block tl.dot takes: 16 weight rows
    if b > GEMM_ROWS:
        block_o = max(floor, min(next_pow2(o), max(1, 128 // block_f)))
        return 64, block_o, 64, 8 if 64 * block_o * block_f > 64 * 64 else 4
    tiles_m = cdiv(b, 16)
    widest = max(floor, min(next_pow2(o), max(1, 256 // block_f)))
    if tiles_m * cdiv(o, widest) >= MIN_PROGRAMS:
        block_o = widest
    else:  # as narrow as gives MIN_PROGRAMS programs
        block_o = max(floor, min(widest, next_pow2(max(1, o * tiles_m // MIN_PROGRAMS))))
    return 16, block_o, 32, 4 if block_o * block_f <= 128 else 8


def bilinear_triton(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Launcher. ``x [B, K1]``, ``y [B, K2]``, ``weight [O, K1, K2]``, ``bias [O]`` -> ``[B, O]``."""
    b, k1, k2, o = checks.bilinear(x, y, weight, bias, kernel=True)
    out = torch.empty((b, o), device=x.device, dtype=x.dtype)
    block_m, block_o, block_i, block_j = 16, 64 if o > 32 else 32, 16, 16
    if min(block_m, block_o, block_i * block_j) < DOT_MIN:
        raise ValueError(f"bilinear: tl.dot needs blocks >= {DOT_MIN}")
    _, stages = pipeline(block_m, block_o, block_i * block_j, x.element_size())  # the K-step is fixed at I x J
    if b:
        grid = (cdiv(b, block_m), cdiv(o, block_o))
        launch(
            _bilinear_kernel,
            grid,
            x,
            y,
            weight,
            bias if bias is not None else out,
            out,
            b,
            k1,
            k2,
            o,
            HAS_BIAS=bias is not None,
            PRECISION=dot_precision(x.dtype),
            BLOCK_M=block_m,
            BLOCK_O=block_o,
            BLOCK_I=block_i,
            BLOCK_J=block_j,
            num_warps=4,
            num_stages=stages,
            enable_fp_fusion=FP_FUSION,
        )
    return out


def mfb_triton(
    x: torch.Tensor,
    y: torch.Tensor,
    u_w: torch.Tensor,
    u_b: torch.Tensor | None,
    v_w: torch.Tensor,
    v_b: torch.Tensor | None,
    factors: int,
    present: torch.Tensor | None = None,
    normalize: bool = True,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Launcher. ``x [B, K1]``, ``y [B, K2]``, ``u_w [O*factors, K1]``, ``v_w [O*factors, K2]``,
    optional biases and ``present [B, 2]`` bool -> ``[B, O]``. ``config`` (BLOCK_M, BLOCK_O,
    BLOCK_K, num_warps) overrides ``_mfb_config`` (tests reach both normalisation paths with it;
    the benchmark times alternatives)."""
    b, k1, k2, rows = checks.mfb(x, y, u_w, u_b, v_w, v_b, factors, present, kernel=True)
    o = rows // factors
    out = torch.empty((b, o), device=x.device, dtype=x.dtype)
    block_f = next_pow2(factors)
    block_m, block_o, block_k, warps = config or _mfb_config(b, o, factors)
    if min(block_m, block_o * block_f, block_k) < DOT_MIN:
        raise ValueError(
            f"mfb: tl.dot needs blocks >= {DOT_MIN}, got BLOCK_M={block_m}, "
            f"BLOCK_O*BLOCK_F={block_o * block_f}, BLOCK_K={block_k}"
        )
    fused_l2 = normalize and block_o >= o
    block_k, stages = pipeline(block_m, block_o * block_f, block_k, x.element_size())
    if b:
        grid = (cdiv(b, block_m), cdiv(o, block_o))
        launch(
            _mfb_kernel,
            grid,
            x,
            y,
            u_w,
            u_b if u_b is not None else out,
            v_w,
            v_b if v_b is not None else out,
            present if present is not None else out,
            out,
            b,
            k1,
            k2,
            o,
            factors,
            HAS_BIAS=u_b is not None,
            HAS_PRESENT=present is not None,
            NORMALIZE=normalize,
            FUSED_L2=fused_l2,
            PRECISION=dot_precision(x.dtype),
            BLOCK_M=block_m,
            BLOCK_O=block_o,
            BLOCK_F=block_f,
            BLOCK_K=block_k,
            num_warps=warps,
            num_stages=stages,
            enable_fp_fusion=FP_FUSION,
        )
        if normalize and not fused_l2:
            launch(_l2norm_rows_kernel, (b,), out, b, o, BLOCK_D=1024, num_warps=4, enable_fp_fusion=FP_FUSION)
    return out
