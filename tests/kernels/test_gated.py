"""gated_fusion (Triton) against the float64 reference; masks with all, none and some present."""

import pytest
import torch

from edgefuse.kernels.reference import gated_fusion_reference
from edgefuse.kernels.triton_gated import gated_fusion_triton
from tests.conftest import KERNEL_DEVICE as DEV
from tests.kernels._tol import assert_close


def _case(b, n, d, per_feature, dtype, mask_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, d, generator=g).to(dtype).to(DEV)
    logits = (torch.randn(b, n, d, generator=g) if per_feature else torch.randn(b, n, generator=g)).mul(2).to(dtype).to(DEV)
    if mask_kind == "all":
        mask = torch.ones(b, n, dtype=torch.bool)
    elif mask_kind == "none":
        mask = torch.zeros(b, n, dtype=torch.bool)
    else:
        mask = torch.rand(b, n, generator=g) > 0.4
        mask[0] = False  # at least one empty row
        mask[-1, 0] = True  # at least one non-empty row
    return feats, logits, mask.to(DEV)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,n,d", [(1, 1, 5), (3, 2, 17), (17, 5, 70), (4, 3, 1100)])
@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("mask_kind", ["all", "none", "some"])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_matches_reference(dtype, b, n, d, per_feature, mask_kind, mode):
    feats, logits, mask = _case(b, n, d, per_feature, dtype, mask_kind, seed=b * n + d)
    out, empty = gated_fusion_triton(feats, logits, mask, mode)
    ref, ref_empty = gated_fusion_reference(feats.double(), logits.double(), mask, mode)
    assert torch.isfinite(out).all()
    assert torch.equal(empty, ref_empty) and torch.equal(empty, ~mask.any(1))
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    assert_close(out, ref, dtype, n)


def test_a_dropped_mask_would_fail_these_tests():
    """The comparison is sensitive: treating every modality as present gives a different answer."""
    feats, logits, mask = _case(17, 5, 70, False, torch.float32, "some", seed=1)
    wrong, _ = gated_fusion_triton(feats, logits, torch.ones_like(mask), "softmax")
    ref, _ = gated_fusion_reference(feats.double(), logits.double(), mask, "softmax")
    with pytest.raises(AssertionError):
        assert_close(wrong, ref, torch.float32, 5)


def test_launcher_rejects_bad_inputs():
    feats, logits, mask = _case(3, 2, 8, False, torch.float32, "all")
    with pytest.raises(ValueError, match=r"logits \[3, 2\] or \[3, 2, 8\]"):
        gated_fusion_triton(feats, logits[:, :1].contiguous(), mask)
    with pytest.raises(ValueError, match="mask"):
        gated_fusion_triton(feats, logits, mask.int())
    with pytest.raises(ValueError, match="contiguous"):
        gated_fusion_triton(feats.transpose(0, 1).contiguous().transpose(0, 1), logits, mask)
    with pytest.raises(ValueError, match="mode"):
        gated_fusion_triton(feats, logits, mask, "relu")
