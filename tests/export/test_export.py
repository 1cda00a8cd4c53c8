"""Per-subset and split ONNX export: checker, opset, TensorRT operator set, dynamic batch, equality with PyTorch."""

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgefuse.checkpoint import load_checkpoint
from edgefuse.export import MAX_OPSET, TRT_SUPPORTED_OPS, check_graph, export_model, read_export, sample_inputs
from edgefuse.fusion import build_model
from tests.conftest import save_onnx, specs_n


def _ort(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_every_subset_graph_is_valid_and_matches_torch(exported, tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    rec = read_export(exported)
    assert list(rec["graphs"]) == [
        "camera",
        "lidar",
        "radar",
        "camera+lidar",
        "camera+radar",
        "lidar+radar",
        "camera+lidar+radar",
    ]
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


@pytest.mark.parametrize(
    "fusion", ["early", "late_poe", "late_vote", "transformer", "per_subset", "imputation", "mfb", "attention"]
)
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
    save_onnx(g, path)
    return path


def test_check_graph_rejects_operators_tensorrt_cannot_parse(tmp_path):
    assert check_graph(_graph(tmp_path, "Relu")) == ["Relu"]
    with pytest.raises(ValueError, match=r"operators \['IsInf'\] are not supported by TensorRT"):
        check_graph(_graph(tmp_path, "IsInf"))


def test_the_export_check_covers_batch_one(tmp_path):
    """A graph right at the checked batch but wrong at batch 1 (here: doubled when batch == 1)
    must show in the recorded difference: edge devices run batch 1."""
    from onnx import TensorProto, helper

    from edgefuse.export import _max_diff

    def c(name, v):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [1], [v]))

    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        c("zero", 0),
        c("one", 1),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Equal", ["batch", "one"], ["is_one"]),
        helper.make_node("Cast", ["is_one"], ["extra"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "extra"], ["more"]),
        helper.make_node("Add", ["x", "more"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "batch_one.onnx"
    save_onnx(g, path)
    x = np.arange(20, dtype=np.float32).reshape(5, 4) + 1.0
    np.testing.assert_array_equal(_ort(path, {"x": x}), x)  # right at batch 5 ...
    assert _max_diff(path, {"x": x}, x) == pytest.approx(4.0)  # ... and the check sees row 0 doubled at batch 1


def test_an_exporter_failure_names_the_graph_and_the_torch_and_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError(
            "\x1b[96mConstraints violated (batch)!\x1b[0m\n  - Not all values of batch ..."
        )  # coloured, as torch does

    monkeypatch.setattr(torch.onnx, "export", fail)
    model = build_model("late_mean", specs_n(2), num_classes=3).eval()
    match = (
        rf"cam\.onnx: torch\.onnx\.export failed under torch {re.escape(torch.__version__)} "
        r"\(RuntimeError: Constraints violated \(batch\)!\)"
    )
    with pytest.raises(ValueError, match=match) as e:
        export_model(model, tmp_path / "x", subsets=[("cam",)], progress=False)
    assert "edgefuse's export is tested with torch" in str(e.value) and "\x1b" not in str(e.value)
    assert isinstance(e.value.__cause__, RuntimeError)  # the exporter's whole error stays chained
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "version, status, says",
    [
        ("2.9.1+cu128", "bad", "pytorch/pytorch#172903"),
        ("2.5.1+cu124", "bad", "2.5.1's exporter fails on every fusion strategy"),
        ("2.3.0a0+nv24.03", "bad", "torch < 2.6 is older than"),  # JetPack 6.0's build
        ("2.13.0+cpu", "tested", "this one included: the cause is in this model"),
        ("2.99.0", "unknown", "not 2.99.0"),
        ("main", "unknown", "this torch's version ('main') does not say which it is"),  # a source build's odd version
    ],
)
def test_export_failure_advice_by_torch_version(version, status, says):
    from edgefuse.export import export_failure_advice, torch_export_status

    assert torch_export_status(version)[0] == status
    assert says in export_failure_advice(version)
