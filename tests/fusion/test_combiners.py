"""Late-fusion combiners and fusion operators, on hand-made numbers."""

import math

import pytest
import torch

from edgefuse.fusion.models import _vote
from edgefuse.fusion.ops import masked_mean
from edgefuse.kernels.reference import gated_fusion_reference, masked_softmax


def test_vote_majority_and_confidence_tie_break():
    # 3 heads, 3 classes: two vote class 1, one votes class 0 -> class 1
    p = torch.tensor([[[0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.9, 0.05, 0.05]]])
    assert _vote(p, torch.ones(1, 3, dtype=torch.bool)).argmax(-1).item() == 1
    # tie 1-1 (third head absent): the more confident voter wins (0.9 for class 0 over 0.7)
    p2 = torch.tensor([[[0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.0, 0.0, 1.0]]])
    out = _vote(p2, torch.tensor([[True, True, False]]))
    assert out.argmax(-1).item() == 0
    assert torch.allclose(out.sum(-1), torch.ones(1))


def test_masked_softmax_ignores_absent_and_never_nans():
    logits = torch.tensor([[1.0, 100.0, 2.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    w = masked_softmax(logits, mask)
    e = math.exp(1.0) / (math.exp(1.0) + math.exp(2.0))
    torch.testing.assert_close(w[0], torch.tensor([e, 0.0, 1 - e]))
    assert torch.equal(w[1], torch.zeros(3))


def test_gated_reference_empty_row_is_zero_and_flagged():
    feats = torch.randn(2, 3, 4)
    logits = torch.randn(2, 3)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    for mode in ("softmax", "sigmoid"):
        out, empty = gated_fusion_reference(feats, logits, mask, mode)
        assert torch.isfinite(out).all() and empty.tolist() == [False, True]
        assert torch.equal(out[1], torch.zeros(4))
        g = (
            torch.softmax(logits[0, :2], 0)
            if mode == "softmax"
            else torch.sigmoid(logits[0, :2]) / torch.sigmoid(logits[0, :2]).sum()
        )
        torch.testing.assert_close(out[0], (g[:, None] * feats[0, :2]).sum(0))


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == pytest.approx(2.0)


def test_adaptive_gate_weights_cover_present_modalities_only():
    from edgefuse.fusion.ops import AdaptiveGate

    torch.manual_seed(0)
    gate = AdaptiveGate(3, 8)
    e = torch.randn(4, 3, 8)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    w = gate.gates(e, mask)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    assert torch.equal(w[~mask], torch.zeros(int((~mask).sum())))
    torch.testing.assert_close(gate(e, mask), (w.unsqueeze(-1) * e).sum(1))
