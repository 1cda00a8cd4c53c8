"""Tolerances for kernel tests: the reference runs in float64 (FlagGems' scheme)."""

import math

import torch

RTOL = {torch.float32: 1.3e-6, torch.float16: 1e-3, torch.bfloat16: 0.016}
# per-element absolute error of one product term, scaled by sqrt(reduction length) below
ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_close(out: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype, reduce_len: int = 1) -> None:
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    scale = max(1.0, float(ref64.abs().max())) if ref64.numel() else 1.0
    torch.testing.assert_close(
        out.double().cpu(), ref64.cpu(), rtol=RTOL[dtype], atol=ATOL[dtype] * math.sqrt(reduce_len) * scale
    )
