"""gated_fusion (Triton) against the float64 reference; masks with all, none and some present."""

import pytest
import torch

from edgefuse.kernels.reference import gated_fusion_reference
from edgefuse.kernels.triton_gated import gated_fusion_backward_triton, gated_fusion_triton
from tests.conftest import KERNEL_DEVICE as DEV
from tests.kernels._tol import assert_close


def _case(b, n, d, per_feature, dtype, mask_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, d, generator=g).to(dtype).to(DEV)
    logits = (
        (torch.randn(b, n, d, generator=g) if per_feature else torch.randn(b, n, generator=g)).mul(2).to(dtype).to(DEV)
    )
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
    with pytest.raises(ValueError, match=r"BLOCK_N >= N=2, got \(1, 8, 1\)"):  # would leave a modality out
        gated_fusion_triton(feats, logits, mask, config=(1, 8, 1))
    with pytest.raises(ValueError, match="powers of two"):
        gated_fusion_triton(feats, logits, mask, config=(2, 12, 1))


def _reference_grads(feats, logits, mask, mode, dout):
    f64, l64 = feats.double().requires_grad_(), logits.double().requires_grad_()
    out, _ = gated_fusion_reference(f64, l64, mask, mode)
    out.backward(dout.double())
    return f64.grad, l64.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,n,d", [(1, 1, 5), (3, 2, 17), (17, 5, 70), (2, 3, 1100)])
@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("mask_kind", ["all", "none", "some"])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_backward_matches_reference_autograd(dtype, b, n, d, per_feature, mask_kind, mode):
    """The Triton backward kernel against float64 autograd through the reference."""
    feats, logits, mask = _case(b, n, d, per_feature, dtype, mask_kind, seed=7 * b + n + d)
    dout = torch.randn(b, d, generator=torch.Generator().manual_seed(d)).to(dtype).to(DEV)
    dfeat, dlogit = gated_fusion_backward_triton(feats, logits, mask, dout, mode)
    ref_df, ref_dl = _reference_grads(feats, logits, mask, mode, dout)
    assert torch.isfinite(dfeat).all() and torch.isfinite(dlogit).all()
    assert_close(dfeat, ref_df, dtype, n)
    # d logit sums over D when there is one gate per modality
    assert_close(dlogit, ref_dl, dtype, n * (1 if per_feature else d))
    absent = ~mask  # absent modalities and empty rows: exactly zero gradient
    assert not dfeat[absent].any() and not dlogit[absent].any()


def test_autograd_function_trains_through_the_kernels(monkeypatch):
    """ops.gated_fusion with requires_grad runs the Triton forward and backward, not the reference."""
    import edgefuse.kernels.triton_gated as tg
    from edgefuse.kernels import gated_fusion

    monkeypatch.setenv("EDGEFUSE_KERNELS", "triton" if DEV == "cuda" else "interpret")
    calls = []
    real = tg._backward  # the backward launch the autograd Function makes
    monkeypatch.setattr(tg, "_backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    feats, logits, mask = _case(5, 3, 9, False, torch.float32, "some", seed=3)
    feats.requires_grad_()
    logits.requires_grad_()
    out, empty = gated_fusion(feats, logits, mask)
    (out * out).sum().backward()
    assert calls == [1] and not empty.requires_grad
    ref_df, ref_dl = _reference_grads(feats.detach(), logits.detach(), mask, "softmax", 2 * out.detach())
    assert_close(feats.grad, ref_df, torch.float32, 3)
    assert_close(logits.grad, ref_dl, torch.float32, 3 * 9)


def test_a_wrong_gate_derivative_would_fail_the_backward_test():
    """Sensitivity: the softmax Jacobian is not the sigmoid one (the tests tell the modes apart)."""
    feats, logits, mask = _case(17, 5, 70, False, torch.float32, "some", seed=2)
    dout = torch.randn(17, 70, generator=torch.Generator().manual_seed(0)).to(DEV)
    _, wrong = gated_fusion_backward_triton(feats, logits, mask, dout, "sigmoid")
    _, ref_dl = _reference_grads(feats, logits, mask, "softmax", dout)
    with pytest.raises(AssertionError):
        assert_close(wrong, ref_dl, torch.float32, 5 * 70)


def test_backward_launcher_rejects_a_bad_dout():
    feats, logits, mask = _case(3, 2, 8, False, torch.float32, "all")
    with pytest.raises(ValueError, match=r"dout \[3, 8\]"):
        gated_fusion_backward_triton(feats, logits, mask, torch.zeros(3, 7, device=DEV))
