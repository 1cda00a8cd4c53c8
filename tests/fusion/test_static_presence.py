"""Per-subset graphs: when every row has the same modalities, the mid-fusion ops that have a
``forward_static`` compute over those modalities alone; it must equal the masked path."""

import itertools

import onnx
import pytest
import torch

from edgefuse.fusion.ops import AdaptiveGate, GatedFusion, SumFusion

N, D, B = 4, 8, 5


@pytest.mark.parametrize(
    "make",
    [
        lambda: GatedFusion(N, D),
        lambda: GatedFusion(N, D, gate="sigmoid"),
        lambda: AdaptiveGate(N, D),
        lambda: SumFusion(N, D),
    ],
    ids=["gated_softmax", "gated_sigmoid", "adaptive_gate", "sum"],
)
def test_forward_static_equals_the_masked_forward_for_every_subset(make):
    torch.manual_seed(0)
    op = make().eval()
    with torch.no_grad():
        for p in op.parameters():
            p.normal_(0, 0.5)
        e = torch.randn(B, N, D)
        for r in range(1, N + 1):
            for present in itertools.combinations(range(N), r):
                mask = torch.zeros(B, N, dtype=torch.bool)
                mask[:, list(present)] = True
                e_sub = e.clone()
                absent = [i for i in range(N) if i not in present]
                e_sub[:, absent] = 0.0  # what the projection gives an absent modality
                torch.testing.assert_close(
                    op.forward_static(e_sub, list(present)),
                    op(e_sub, mask),
                    rtol=1e-5,
                    atol=1e-6,
                    msg=f"present={present}",
                )


def test_exported_gated_subset_graph_has_no_mask_arithmetic(exported):
    for name in ("camera+lidar+radar", "camera+radar", "lidar"):
        ops = [n.op_type for n in onnx.load(str(exported / f"{name}.onnx")).graph.node]
        assert "Where" not in ops and "ReduceMax" not in ops, (name, sorted(set(ops)))
        assert "Softmax" in ops or name == "lidar", (name, sorted(set(ops)))
