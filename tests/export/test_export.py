"""Per-subset and split ONNX export: checker, opset, TensorRT operator set, dynamic batch, equality with PyTorch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgefuse.checkpoint import load_checkpoint
from edgefuse.export import MAX_OPSET, TRT_SUPPORTED_OPS, check_graph, export_model, read_export, sample_inputs
from edgefuse.fusion import build_model
from tests.conftest import specs_n

#: the IR version torch's exporter writes (and the bundles carry); onnx's default, newer, is more
#: than an older onnxruntime loads (onnx 1.23 writes 14; onnxruntime 1.30 loads up to 13, 1.23 up to 11)
IR_VERSION = 10


def _ort(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_every_subset_graph_is_valid_and_matches_torch(exported, tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    rec = read_export(exported)
    assert list(rec["graphs"]) == ["camera", "lidar", "radar", "camera+lidar", "camera+radar", "lidar+radar", "camera+lidar+radar"]
    for key, g in rec["graphs"].items():
        m = onnx.load(str(exported / g["file"]))
        onnx.checker.check_model(m, full_check=True)
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) <= MAX_OPSET
        assert {n.op_type for n in m.graph.node} <= TRT_SUPPORTED_OPS
        assert [i.name for i in m.graph.input] == key.split("+")
        for i in m.graph.input:  # the batch axis is dynamic, the rest fixed
            dims = i.type.tensor_type.shape.dim
            assert dims[0].dim_param and all(d.dim_value > 0 for d in dims[1:])
        for batch in (1, 7):
            feeds = sample_inputs([s for s in model.specs if s.name in key.split("+")], batch, model.norm, seed=batch)
            with torch.no_grad():
                want = model({k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
            np.testing.assert_allclose(_ort(exported / g["file"], feeds), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fusion", ["early", "late_poe", "late_vote", "transformer", "per_subset", "imputation", "mfb", "attention"])
def test_other_strategies_export_and_match(fusion, tmp_path):
    torch.manual_seed(0)
    specs = specs_n(3)[:2] + [specs_n(5)[4]]  # image, signal, vector
    model = build_model(fusion, specs, num_classes=4, dim=16).eval()
    rec = export_model(model, tmp_path / "x", subsets=[("cam", "imu")], progress=False)
    g = rec["graphs"]["cam+imu"]
    assert g["max_abs_diff"] <= 1e-4
    feeds = sample_inputs([specs[0], specs[2]], 3, seed=3)
    with torch.no_grad():
        want = model({k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    np.testing.assert_allclose(_ort(tmp_path / "x" / g["file"], feeds), want, atol=1e-4, rtol=0)


def test_split_export_composes_to_the_model(tiny_checkpoint, tmp_path):
    model, _ = load_checkpoint(tiny_checkpoint)
    rec = export_model(model, tmp_path / "split", split=True, progress=False)
    assert sorted(rec["graphs"]) == ["encoder_camera", "encoder_lidar", "encoder_radar", "head"]
    feeds = sample_inputs(model.specs, 4, model.norm, seed=5)
    present = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)
    emb = np.stack([_ort(tmp_path / "split" / f"encoder_{n}.onnx", {n: feeds[n]}) for n in model.names], axis=1)
    emb[~present] = 0.0  # an absent sensor's encoder is not run: its row is ignored by the head
    got = _ort(tmp_path / "split" / "head.onnx", {"embeddings": emb, "present": present})
    with torch.no_grad():
        want = model({k: torch.from_numpy(v) for k, v in feeds.items()}, torch.from_numpy(present)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_split_needs_a_mid_fusion_model(tmp_path):
    model = build_model("late_mean", specs_n(2), num_classes=3).eval()
    with pytest.raises(ValueError, match="split export needs a mid-fusion model.*'late_mean'"):
        export_model(model, tmp_path / "s", split=True, progress=False)
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == []


def _graph(tmp_path, op):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.BOOL if op == "IsInf" else TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / f"{op}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), str(path))
    return path


def test_check_graph_rejects_operators_tensorrt_cannot_parse(tmp_path):
    assert check_graph(_graph(tmp_path, "Relu")) == ["Relu"]
    with pytest.raises(ValueError, match=r"operators \['IsInf'\] are not supported by TensorRT"):
        check_graph(_graph(tmp_path, "IsInf"))
