"""Lean per-subset graphs: gated fusion's gate in one Gemm (and, optionally, the input normalisation folded
into the encoders' first layers) give the model's function (the export check) in fewer ONNX Runtime nodes;
the model's own formulation stays one flag away."""

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgefuse.checkpoint import load_checkpoint
from edgefuse.export import export_model, fold_normalization, sample_inputs


def _ort_nodes(path, tmp):
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp / (path.stem + ".opt.onnx"))
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return len(onnx.load(so.optimized_model_filepath).graph.node)


def test_folding_the_normalisation_keeps_the_function_and_leaves_the_model_alone(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_normalization(model)
    x = {k: torch.from_numpy(v) for k, v in sample_inputs(model.specs, 8, model.norm, seed=3).items()}
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert type(folded.encoders["radar"].norm).__name__ == "Identity"  # a vector encoder absorbs mean and std
    assert type(folded.encoders["camera"].norm).__name__ == "_Shift"  # a padded conv absorbs the scale only


def test_lean_graphs_run_fewer_nodes_and_match_the_models_own(tiny_checkpoint, tmp_path):
    model, _ = load_checkpoint(tiny_checkpoint)
    subsets = [("camera",), ("camera", "lidar", "radar")]
    own = export_model(model, tmp_path / "own", subsets=subsets, lean=False, progress=False)
    lean = export_model(model, tmp_path / "lean", subsets=subsets, progress=False, fold_norm=True)  # checked
    assert lean["lean"] and not own["lean"]
    for key in ("camera", "camera+lidar+radar"):
        a = tmp_path / "own" / own["graphs"][key]["file"]
        b = tmp_path / "lean" / lean["graphs"][key]["file"]
        assert _ort_nodes(b, tmp_path) < _ort_nodes(a, tmp_path), key
        feeds = {k: v[:4] for k, v in sample_inputs(model.specs, 4, model.norm, seed=5).items() if k in key.split("+")}
        ra = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        rb = ort.InferenceSession(str(b), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        np.testing.assert_allclose(rb, ra, atol=1e-4)


def test_wide_gated_subsets_keep_the_models_own_gate(tiny_checkpoint, tmp_path, monkeypatch):
    """Past LEAN_GATE_MAX_WIDTH sensors x width, the dense gate Gemm (k^2 D^2 MACs, FP32 in INT8) costs more
    than the nodes it saves: such subsets export in the model's own form, while narrower ones stay lean."""
    import edgefuse.export as export

    model, _ = load_checkpoint(tiny_checkpoint)
    monkeypatch.setattr(export, "LEAN_GATE_MAX_WIDTH", 2 * model.dim)  # two sensors lean, three not
    rec = export_model(
        model, tmp_path / "x", subsets=[("camera", "lidar"), ("camera", "lidar", "radar")], progress=False
    )

    def has_dense_gate(key):
        graph = onnx.load(str(tmp_path / "x" / rec["graphs"][key]["file"])).graph
        return any(i.name.endswith("w_gate") for i in graph.initializer)

    assert has_dense_gate("camera+lidar")
    assert not has_dense_gate("camera+lidar+radar")


def test_the_dense_gate_weight_stays_fp32_in_every_int8_form(tiny_checkpoint, tmp_path):
    """Quantizing every weight (TensorRT's placement, min_weights 0) still leaves the lean gate weight FP32: ONNX
    Runtime would dequantize it at every run."""
    from edgefuse.calibration.quantize import weighted_nodes

    model, _ = load_checkpoint(tiny_checkpoint)
    rec = export_model(model, tmp_path / "x", subsets=[("camera", "lidar")], progress=False)
    path = tmp_path / "x" / rec["graphs"]["camera+lidar"]["file"]
    graph = onnx.load(str(path)).graph
    gate = [n.name for n in graph.node if any(i.endswith("w_gate") for i in n.input)]
    assert gate
    for min_weights in (0, 8192):
        names, total = weighted_nodes(path, min_weights)
        assert names and not set(gate) & set(names), min_weights
