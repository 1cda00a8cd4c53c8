"""Public fusion ops: choose the Triton kernel or the torch reference for each call."""

from __future__ import annotations

import os
from typing import Sequence

import torch

from edgefuse.kernels import reference as ref

_CHOICES = ("triton", "interpret", "reference")


def backend(t: torch.Tensor) -> str:
    """'triton' or 'reference' for a call on ``t`` (EDGEFUSE_KERNELS overrides)."""
    forced = os.environ.get("EDGEFUSE_KERNELS", "").strip().lower()
    if forced:
        if forced not in _CHOICES:
            raise ValueError(f"EDGEFUSE_KERNELS must be one of {_CHOICES}, got {forced!r}")
        return "reference" if forced == "reference" else "triton"
    return "triton" if t.is_cuda else "reference"


def fused_projection(
    xs: Sequence[torch.Tensor | None],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    act: str = "none",
    normalize: bool = False,
) -> torch.Tensor:
    return ref.fused_projection_reference(xs, weights, bias, act, normalize)


def bilinear(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return ref.bilinear_reference(x, y, weight, bias)


def mfb(x, y, u_w, u_b, v_w, v_b, factors: int, present: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    return ref.mfb_reference(x, y, u_w, u_b, v_w, v_b, factors, present, normalize)


def gated_fusion(feats: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, mode: str = "softmax"):
    return ref.gated_fusion_reference(feats, logits, mask, mode)
