"""Gated fusion in one pass: gates normalised over the present modalities and the weighted sum.

``feats [B, N, D]``, gate logits ``[B, N]`` (one gate per modality) or ``[B, N, D]`` (per
feature), presence ``mask [B, N]`` -> ``out [B, D]`` and ``empty [B]`` (rows with no present
modality: zeros, flagged, never NaN). One program per (row, block of D): it reads the N
feature vectors and logits once, so the op is bound by memory bandwidth.

Order of this file: kernel, launcher (forward only: training takes the reference path).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from edgefuse.kernels.triton_projection import cdiv, check_tensors, next_pow2


@triton.jit
def _gated_kernel(
    feat_ptr, logit_ptr, mask_ptr, out_ptr, empty_ptr, N, D,
    PER_FEATURE: tl.constexpr, SIGMOID: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n_ok, d_ok = offs_n < N, offs_d < D
    present = (tl.load(mask_ptr + row * N + offs_n, mask=n_ok, other=0) != 0) & n_ok
    tile = present[:, None] & d_ok[None, :]
    if PER_FEATURE:
        logits = tl.load(logit_ptr + row * N * D + offs_n[:, None] * D + offs_d[None, :], mask=tile, other=0.0).to(tl.float32)
    else:
        logits = tl.load(logit_ptr + row * N + offs_n, mask=present, other=0.0).to(tl.float32)[:, None]
    if SIGMOID:
        w = tl.where(present[:, None], tl.sigmoid(logits), 0.0)
    else:
        shifted = tl.where(present[:, None], logits, -float("inf"))
        mx = tl.max(shifted, axis=0)
        mx = tl.where(mx == -float("inf"), 0.0, mx)  # a row with nothing present: avoid inf - inf
        w = tl.where(present[:, None], tl.exp(logits - mx[None, :]), 0.0)
    total = tl.sum(w, axis=0)
    w = w / tl.maximum(total, 1e-30)[None, :]
    feats = tl.load(feat_ptr + row * N * D + offs_n[:, None] * D + offs_d[None, :], mask=tile, other=0.0).to(tl.float32)
    out = tl.sum(w * feats, axis=0)
    tl.store(out_ptr + row * D + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_ok)
    if pid_d == 0:
        any_present = tl.max(present.to(tl.int32), axis=0)
        tl.store(empty_ptr + row, any_present == 0)


def gated_fusion_triton(
    feats: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, mode: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher; see the module docstring. ``mode`` is 'softmax' or 'sigmoid'."""
    if mode not in ("softmax", "sigmoid"):
        raise ValueError(f"gated_fusion: mode must be 'softmax' or 'sigmoid', got {mode!r}")
    if feats.dim() != 3:
        raise ValueError(f"gated_fusion: expected feats [B, N, D], got {list(feats.shape)}")
    b, n, d = feats.shape
    if tuple(logits.shape) not in ((b, n), (b, n, d)):
        raise ValueError(f"gated_fusion: expected logits [{b}, {n}] or [{b}, {n}, {d}], got {list(logits.shape)}")
    if tuple(mask.shape) != (b, n) or mask.dtype != torch.bool:
        raise ValueError(f"gated_fusion: expected mask [{b}, {n}] bool, got {list(mask.shape)} {mask.dtype}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"gated_fusion: expected floating-point logits, got {logits.dtype}")
    check_tensors("gated_fusion", feats, [("feats", feats), ("logits", logits), ("mask", mask)], any_dtype=("logits", "mask"))
    out = torch.empty((b, d), device=feats.device, dtype=feats.dtype)
    empty = torch.empty((b,), device=feats.device, dtype=torch.bool)
    if b == 0:
        return out, empty
    # 1024-wide blocks: one program reads N x 4 KiB (fp32) per row, enough bytes in flight
    # per SM to stream at bandwidth while keeping the grid (B x D/1024) large at B >= 64
    block_d = min(1024, next_pow2(d))
    block_n = next_pow2(n)
    grid = (b, cdiv(d, block_d))
    _gated_kernel[grid](
        feats, logits, mask, out, empty, n, d,
        PER_FEATURE=logits.dim() == 3, SIGMOID=mode == "sigmoid", BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=4 if block_d * block_n <= 2048 else 8,
    )
    return out, empty
