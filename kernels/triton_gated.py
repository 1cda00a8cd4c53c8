"""Gated fusion in one pass: gates normalised over the present modalities and the weighted sum.

``feats [B, N, D]``, gate logits ``[B, N]`` (one gate per modality) or ``[B, N, D]`` (per
feature), presence ``mask [B, N]`` -> ``out [B, D]`` and ``empty [B]`` (rows with no present
modality: zeros, flagged, never NaN). One program per (row, block of D): it reads the N
feature vectors and logits once, so the op is bound by memory bandwidth.

The backward is one pass too: it recomputes the gates from the logits (cheaper than storing
them) and writes ``d feats`` and ``d logits``. With per-feature gates every column of D is
independent, so the grid is the forward's; with one gate per modality ``d logits`` sums over
D, so one program owns a whole row and walks D in blocks (no atomics, deterministic).

Order of this file: kernels (forward, backward), launchers, the autograd Function.
"""

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from edgefuse.kernels import checks
from edgefuse.kernels._launch import launch
from edgefuse.kernels.utils import FP_FUSION, cdiv, next_pow2


@triton.jit
def _gates(logits, present, SIGMOID: tl.constexpr):
    """(normalised gates, d gate / d logit factor) over the present rows of a [BLOCK_N, *] tile.

    softmax: d logit = g * (dg - sum(g dg)); sigmoid renormalised (g = s / S):
    d logit = s (1 - s) / S * (dg - sum(g dg)). The second value is g resp. s (1 - s) / S.
    """
    if SIGMOID:
        s = tl.where(present, tl.sigmoid(logits), 0.0)
        total = tl.maximum(tl.sum(s, axis=0), 1e-30)[None, :]
        g = s / total
        factor = s * (1.0 - s) / total
    else:
        shifted = tl.where(present, logits, -float("inf"))
        mx = tl.max(shifted, axis=0)
        mx = tl.where(mx == -float("inf"), 0.0, mx)  # a row with nothing present: avoid inf - inf
        e = tl.where(present, tl.exp(logits - mx[None, :]), 0.0)
        g = e / tl.maximum(tl.sum(e, axis=0), 1e-30)[None, :]
        factor = g
    return g, factor


@triton.jit
def _gated_kernel(
    feat_ptr,
    logit_ptr,
    mask_ptr,
    out_ptr,
    empty_ptr,
    N,
    D,
    PER_FEATURE: tl.constexpr,
    SIGMOID: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n_ok, d_ok = offs_n < N, offs_d < D
    present = (tl.load(mask_ptr + row * N + offs_n, mask=n_ok, other=0) != 0) & n_ok
    tile = present[:, None] & d_ok[None, :]
    if PER_FEATURE:
        logits = tl.load(logit_ptr + row * N * D + offs_n[:, None] * D + offs_d[None, :], mask=tile, other=0.0).to(
            tl.float32
        )
    else:
        logits = tl.load(logit_ptr + row * N + offs_n, mask=present, other=0.0).to(tl.float32)[:, None]
    w, _ = _gates(logits, present[:, None], SIGMOID)
    feats = tl.load(feat_ptr + row * N * D + offs_n[:, None] * D + offs_d[None, :], mask=tile, other=0.0).to(tl.float32)
    out = tl.sum(w * feats, axis=0)
    tl.store(out_ptr + row * D + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_ok)
    if pid_d == 0:
        any_present = tl.max(present.to(tl.int32), axis=0)
        tl.store(empty_ptr + row, any_present == 0)


@triton.jit
def _gated_bwd_kernel(
    feat_ptr,
    logit_ptr,
    mask_ptr,
    dout_ptr,
    dfeat_ptr,
    dlogit_ptr,
    N,
    D,
    PER_FEATURE: tl.constexpr,
    SIGMOID: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    present = (tl.load(mask_ptr + row * N + offs_n, mask=n_ok, other=0) != 0) & n_ok
    if PER_FEATURE:
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        tile = present[:, None] & d_ok[None, :]
        idx = row * N * D + offs_n[:, None] * D + offs_d[None, :]
        store = n_ok[:, None] & d_ok[None, :]
        logits = tl.load(logit_ptr + idx, mask=tile, other=0.0).to(tl.float32)
        g, factor = _gates(logits, present[:, None], SIGMOID)
        dout = tl.load(dout_ptr + row * D + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        feats = tl.load(feat_ptr + idx, mask=tile, other=0.0).to(tl.float32)
        dg = feats * dout
        dlogit = factor * (dg - tl.sum(g * dg, axis=0)[None, :])
        tl.store(dfeat_ptr + idx, (g * dout).to(dfeat_ptr.dtype.element_ty), mask=store)
        tl.store(dlogit_ptr + idx, dlogit.to(dlogit_ptr.dtype.element_ty), mask=store)
    else:
        logits = tl.load(logit_ptr + row * N + offs_n, mask=present, other=0.0).to(tl.float32)[:, None]
        g, factor = _gates(logits, present[:, None], SIGMOID)
        dg = tl.zeros((BLOCK_N, 1), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < D
            idx = row * N * D + offs_n[:, None] * D + offs_d[None, :]
            dout = tl.load(dout_ptr + row * D + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
            feats = tl.load(feat_ptr + idx, mask=present[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
            dg += tl.sum(feats * dout, axis=1)[:, None]
            tl.store(dfeat_ptr + idx, (g * dout).to(dfeat_ptr.dtype.element_ty), mask=n_ok[:, None] & d_ok[None, :])
        dlogit = factor * (dg - tl.sum(g * dg, axis=0)[None, :])
        tl.store(dlogit_ptr + row * N + offs_n[:, None], dlogit.to(dlogit_ptr.dtype.element_ty), mask=n_ok[:, None])


#: bytes one thread loads per vector instruction (128-bit loads), and per warp
VECTOR_BYTES = 16
WARP_BYTES = 32 * VECTOR_BYTES
#: values of one tensor a thread holds, at most, before warps also split the modality axis
THREAD_VALUES = 32


def _blocks(n: int, d: int, itemsize: int, widest: int = 1024) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps) for ``n`` modalities of width ``d``, ``itemsize``-byte
    features, BLOCK_D at most ``widest``: the backward's (the forward's is ``_forward_blocks``).

    Both kernels reduce over the modality axis (softmax max and sum, the weighted sum). Triton
    lays a [BLOCK_N, BLOCK_D] tile out with 16-byte vectors along D, 32 threads along D, then
    warps along D while they fit. num_warps is as many warps as one row of BLOCK_D takes at
    that width, so no warp holds another's modalities and the reductions stay in each thread's
    registers. More warps would split the modality axis, and each reduction would cross warps
    through shared memory, with a barrier: with Triton 3.9, 25 barriers in the per-feature
    forward for fp16 at D = 1024 with 8 warps, none with 4 (tools/gated_layouts.py lists every
    case; tests/tools/test_aot.py checks the launcher's choices from the compiled binaries).
    Only when a thread would hold more than THREAD_VALUES values of a tensor (from 5
    modalities in fp16, 9 in fp32) are warps added, up to 8, and those split the modality
    axis, to bound registers.
    """
    # the backward's 1024-wide blocks: one program reads N x 2-4 KiB per row, bytes in flight
    # for its walk over D with one gate per modality (the forward streams faster one warp wide)
    block_d = min(widest, next_pow2(d))
    block_n = next_pow2(n)
    row_warps = max(1, block_d * itemsize // WARP_BYTES)
    per_thread = block_n * block_d // (32 * row_warps)  # values of one tensor a thread holds with row_warps
    return block_n, block_d, min(8, row_warps * max(1, per_thread // THREAD_VALUES))


def _forward_blocks(n: int, d: int, itemsize: int) -> tuple[int, int, int]:
    """The forward's (BLOCK_N, BLOCK_D, num_warps): ``_blocks`` at most one warp's 16-byte
    vectors wide (256 values in fp16, 128 in fp32), so one warp holds a row.

    Measured on an H200 (bench/results/h200-2026-11-30/, runs 2 and 3), B = 4096, N = 3,
    per-feature gates, µs per call with nothing in L2 (bench_kernels' "cold"). fp16, D = 1024:
    18.8 and 19.2 at 256 wide over 1 warp; 20.9 and 21.5 at 1024 over 4 (``_blocks``' tile, the
    forward's before); 21.0 and 21.3 at 512 over 2; 22.8 and 23.2 at 1024 over 2; 25-26 at 128
    over 1 and at 512 over 1. fp16, D = 256: 7.6 and 7.7 at 256 over 1 (the choice before too),
    8.9 at 128 over 1. fp32, D = 1024: 28.9 at 128 over 1, 28.5-28.7 at 256 over 2, 512 over 4
    and 1024 over 8 (the choice before): a wash. Each of those timings also holds a clone of
    the 12 KB mask per call, the same for every tile (the benchmark made it inside the timed
    call then). The backward keeps ``_blocks``: with one gate
    per modality it walks D inside one program per row, where a wide tile keeps more bytes in
    flight."""
    return _blocks(n, d, itemsize, widest=max(1, WARP_BYTES // itemsize))


def _checked_blocks(
    n: int, d: int, itemsize: int, config: tuple[int, int, int] | None, default=_blocks
) -> tuple[int, int, int]:
    """``config`` (BLOCK_N, BLOCK_D, num_warps), checked, or ``default``'s choice when None."""
    if config is None:
        return default(n, d, itemsize)
    if config[0] < n or any(v < 1 or v & (v - 1) for v in config):
        raise ValueError(
            f"gated_fusion: config must be powers of two (BLOCK_N, BLOCK_D, num_warps) with BLOCK_N >= N={n}, got "
            f"{config}"
        )
    return config


def gated_fusion_triton(
    feats: torch.Tensor,
    logits: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "softmax",
    config: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward launcher; see the module docstring. ``mode`` is 'softmax' or 'sigmoid'.
    ``config``: (BLOCK_N, BLOCK_D, num_warps) instead of ``_forward_blocks``' (the benchmark
    times alternatives)."""
    checks.gated(feats, logits, mask, mode, kernel=True)
    b, n, d = feats.shape
    out = torch.empty((b, d), device=feats.device, dtype=feats.dtype)
    empty = torch.empty((b,), device=feats.device, dtype=torch.bool)
    if b == 0:
        return out, empty
    block_n, block_d, warps = _checked_blocks(n, d, feats.element_size(), config, _forward_blocks)
    launch(
        _gated_kernel,
        (b, cdiv(d, block_d)),
        feats,
        logits,
        mask,
        out,
        empty,
        n,
        d,
        PER_FEATURE=logits.dim() == 3,
        SIGMOID=mode == "sigmoid",
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=warps,
        enable_fp_fusion=FP_FUSION,
    )
    return out, empty


def gated_fusion_backward_triton(
    feats: torch.Tensor,
    logits: torch.Tensor,
    mask: torch.Tensor,
    dout: torch.Tensor,
    mode: str = "softmax",
    config: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward launcher: ``(d feats [B, N, D], d logits)`` (logits' shape and dtype) for ``dout [B, D]``.

    Absent modalities and empty rows get zero gradients, as from the reference. ``config`` as
    for the forward.
    """
    checks.gated(feats, logits, mask, mode, kernel=True)
    b, n, d = feats.shape
    if tuple(dout.shape) != (b, d):
        raise ValueError(f"gated_fusion backward: expected dout [{b}, {d}], got {list(dout.shape)}")
    checks.tensors("gated_fusion backward", feats, [("dout", dout)], ("dout",), kernel=True)
    return _backward(feats, logits, mask, dout, mode, config)


def _backward(feats, logits, mask, dout, mode, config=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward launch on checked arguments (the autograd Function's were checked by its forward)."""
    b, n, d = feats.shape
    dfeat = torch.empty_like(feats)
    dlogit = torch.empty_like(logits)
    if b == 0:
        return dfeat, dlogit
    per_feature = logits.dim() == 3
    block_n, block_d, warps = _checked_blocks(n, d, feats.element_size(), config)
    launch(
        _gated_bwd_kernel,
        (b, cdiv(d, block_d) if per_feature else 1),
        feats,
        logits,
        mask,
        dout,
        dfeat,
        dlogit,
        n,
        d,
        PER_FEATURE=per_feature,
        SIGMOID=mode == "sigmoid",
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=warps,
        enable_fp_fusion=FP_FUSION,
    )
    return dfeat, dlogit


class GatedFusionFunction(torch.autograd.Function):
    """Triton forward and backward: training on CUDA runs the fused kernels both ways."""

    @staticmethod
    def forward(ctx, feats, logits, mask, mode):  # noqa: D102 (torch.autograd.Function protocol)
        out, empty = gated_fusion_triton(feats, logits, mask, mode)
        ctx.save_for_backward(feats, logits, mask)
        ctx.mode = mode
        ctx.mark_non_differentiable(empty)
        return out, empty

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, _dempty):  # noqa: D102
        feats, logits, mask = ctx.saved_tensors
        dfeat, dlogit = _backward(feats, logits, mask, dout.contiguous(), ctx.mode)
        return (dfeat if ctx.needs_input_grad[0] else None), (dlogit if ctx.needs_input_grad[1] else None), None, None
