"""Tolerances for kernel tests: the reference runs in float64 (FlagGems' scheme, ``reference.tolerance``)."""

import torch

from edgefuse.kernels.reference import tolerance


def assert_close(out: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype, reduce_len: int = 1) -> None:
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    rtol, atol = tolerance(ref64, dtype, reduce_len)
    torch.testing.assert_close(out.double().cpu(), ref64.cpu(), rtol=rtol, atol=atol)
