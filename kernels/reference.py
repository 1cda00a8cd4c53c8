"""Pure-torch references for every edgefuse kernel: the CPU path, the autograd path and the test oracle."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

#: How far a kernel's output may be from this module's result computed in float64 (FlagGems'
#: scheme; the tests and ``edgefuse kernels --check`` use it): relative, and absolute per product
#: term, scaled by the square root of the reduction length and by the result's magnitude.
RTOL = {torch.float32: 1.3e-6, torch.float16: 1e-3, torch.bfloat16: 0.016}
ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def tolerance(ref64: torch.Tensor, dtype: torch.dtype, reduce_len: int = 1) -> tuple[float, float]:
    """``(rtol, atol)`` for a ``dtype`` result against ``ref64`` after ``reduce_len``-term sums."""
    scale = max(1.0, float(ref64.abs().max())) if ref64.numel() else 1.0
    return RTOL[dtype], ATOL[dtype] * math.sqrt(reduce_len) * scale


def error_over_tolerance(out: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype, reduce_len: int = 1) -> float:
    """The worst ``|out - ref64| / (atol + rtol |ref64|)``: <= 1 is within ``tolerance``; inf for
    a NaN or infinite output."""
    out = out.detach().cpu().double()
    if not bool(torch.isfinite(out).all()):
        return math.inf
    if not out.numel():
        return 0.0
    rtol, atol = tolerance(ref64, dtype, reduce_len)
    r = ref64.cpu().double()
    return float(((out - r).abs() / (atol + rtol * r.abs())).max())


def _act(y: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return torch.relu(y)
    if act == "gelu":
        return F.gelu(y)  # exact (erf) GELU, as the kernels compute it
    if act == "tanh":
        return torch.tanh(y)
    return y


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is narrower (float16, bfloat16), as the kernels accumulate; float32
    and float64 (the tests' oracle) as they are. Sums, norms and logs of float16 values run in
    it: a floor such as 1e-12 underflows to 0 in float16, and a zero row would give 0/0."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def act_normalize(y: torch.Tensor, act: str, normalize: bool, eps: float = 1e-12) -> torch.Tensor:
    """``act(y)``, then (if ``normalize``) each row over the last dimension L2-normalised, the
    norm ``widened`` as the kernels' epilogue takes it (a zero row, such as an absent
    modality's or one ReLU zeroed, stays zero in float16)."""
    y = _act(y, act)
    if not normalize:
        return y
    acc = widened(y)
    return (acc / acc.norm(dim=-1, keepdim=True).clamp_min(eps)).to(y.dtype)


def fused_projection_reference(
    xs: Sequence[torch.Tensor | None],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    act: str = "none",
    normalize: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """``y[:, i] = act(x_i W_i^T + b_i)`` (then L2-normalised rows if ``normalize``); absent x_i -> zeros."""
    present = [x for x in xs if x is not None]
    b, d = present[0].shape[0], weights[0].shape[0]
    rows = []
    for i, (x, w) in enumerate(zip(xs, weights)):
        if x is None:
            rows.append(present[0].new_zeros((b, d)))
            continue
        # the bias in any float dtype, as the kernel reads it (a no-op when it is x's, so graphs are unchanged)
        rows.append(act_normalize(F.linear(x, w, None if bias is None else bias[i].to(x.dtype)), act, normalize, eps))
    return torch.stack(rows, dim=1)  # stack, not slice assignment: exports without a scatter


def bilinear_reference(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``z_k = x^T W_k y + b_k`` (torch.nn.functional.bilinear)."""
    return F.bilinear(x, y, weight, bias)


def mfb_reference_pool(z: torch.Tensor, factors: int, normalize: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """Sum-pool ``z [B, O*factors]`` over consecutive groups of ``factors``; signed sqrt + L2 if
    ``normalize``; ``widened``, as the kernel pools."""
    pooled = (
        widened(z).view(z.shape[0], z.shape[1] // factors, factors).sum(-1)
    )  # (not -1: B = 0 has no inferable size)
    if normalize:
        pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + eps)
        pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(eps)
    return pooled.to(z.dtype)


def mfb_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    u_w: torch.Tensor,
    u_b: torch.Tensor | None,
    v_w: torch.Tensor,
    v_b: torch.Tensor | None,
    factors: int,
    present: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """MFB: ``pool((U x + bu) * (V y + bv))``; an absent side (``present[:, i]`` False) is the identity 1."""
    ux, vy = F.linear(x, u_w, u_b), F.linear(y, v_w, v_b)
    if present is not None:
        ux = torch.where(present[:, :1], ux, torch.ones_like(ux))
        vy = torch.where(present[:, 1:2], vy, torch.ones_like(vy))
    return mfb_reference_pool(ux * vy, factors, normalize)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over ``dim`` restricted to ``mask`` (broadcast from ``[B, N]``); a row with nothing
    present gives zeros, never NaN. Finite arithmetic only (no -inf), so it exports cleanly."""
    m = mask
    while m.dim() < logits.dim():
        m = m.unsqueeze(-1)
    m = m.expand_as(logits)
    shifted = logits.masked_fill(~m, torch.finfo(logits.dtype).min)
    e = torch.exp(shifted - shifted.amax(dim=dim, keepdim=True)) * m
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)


def gated_fusion_reference(
    feats: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, mode: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gates normalised over the present modalities, weighted sum ``[B, D]`` and the empty-row flag ``[B]``.

    ``mode='softmax'``: softmax of the logits over present modalities. ``mode='sigmoid'``:
    ``sigmoid(logits)`` renormalised to sum to 1 over present modalities. Rows with no
    present modality give zeros. An absent modality's features and logits are never read, as
    the kernel's masked loads never read them: a NaN or inf there (a dead sensor's slot)
    changes nothing, where a gate of 0 times NaN would have made the row NaN.
    """
    g_logits = logits if logits.dim() == 3 else logits.unsqueeze(-1)
    absent = ~mask.unsqueeze(-1)
    wide = widened(feats).masked_fill(absent, 0)  # as the kernel; float64 stays (the oracle)
    if mode == "softmax":
        gates = masked_softmax(g_logits.to(wide.dtype), mask, dim=1)
    else:
        e = torch.sigmoid(g_logits.to(wide.dtype).masked_fill(absent, 0)) * mask.unsqueeze(-1)
        gates = e / e.sum(dim=1, keepdim=True).clamp_min(1e-30)
    out = (gates * wide).sum(dim=1)
    return out.to(feats.dtype), ~mask.any(dim=1)
