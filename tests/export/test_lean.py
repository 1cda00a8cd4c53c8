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
