"""Calibration: Q/DQ form, TensorRT cache round trip, reader, report, accuracy gate."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgefuse.calibration import (
    StratifiedReader,
    calibrate_export,
    check_qdq,
    read_trt_cache,
    trt_version_code,
    write_trt_cache,
)
from edgefuse.calibration.calibrate import tensor_ranges
from edgefuse.gate import AccuracyGateError, GateResult, enforce


def test_int8_graphs_are_symmetric_qdq_with_scalar_activation_scales(calibrated):
    import json

    rec = json.loads((calibrated / "calibration.json").read_text())
    for key, entry in rec["subsets"].items():
        m = onnx.load(str(calibrated / entry["int8_file"]))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        ops = [n.op_type for n in m.graph.node]
        assert "MatMulInteger" not in ops and "ConvInteger" not in ops and "QLinearConv" not in ops
        assert ops.count("QuantizeLinear") > 0
        per_channel = 0
        for n in m.graph.node:
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            zp, scale = inits[n.input[2]], inits[n.input[1]]
            assert zp.dtype == np.int8 and not zp.any(), (key, n.name)
            if n.op_type == "DequantizeLinear" and n.input[0] in inits:
                per_channel += scale.size > 1  # weights: one scale per output channel
            else:
                assert scale.size == 1, (key, n.name)
        assert per_channel > 0
        assert entry["qdq_nodes"] == check_qdq(calibrated / entry["int8_file"])


def test_gated_gate_exports_as_a_2d_matmul_kept_fp32_in_int8(exported, calibrated):
    """The lean graph's gate is one MatMul with a constant 2-D weight (not an Einsum, not a batched 3-D
    MatMul). Calibration with every weight quantized (TensorRT's placement) still leaves that weight FP32
    (``_fp32_kept``: quantized, it cost accuracy, and ONNX Runtime dequantized it at every run), while the
    encoders' weights get per-channel DequantizeLinears."""
    fp32 = onnx.load(str(exported / "camera+lidar+radar.onnx"))
    ops = [n.op_type for n in fp32.graph.node]
    assert "Einsum" not in ops and ops.count("MatMul") >= 1
    m = onnx.load(str(calibrated / "camera+lidar+radar.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    gate = [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1].endswith("w_gate")]
    assert len(gate) == 1 and gate[0].input[1] in inits and inits[gate[0].input[1]].dtype == np.float32
    weighted = 0
    for n in m.graph.node:
        w = producers.get(n.input[1]) if n.op_type in ("Gemm", "Conv") else None
        if w is not None and w.op_type == "DequantizeLinear" and w.input[0] in inits:
            assert inits[w.input[0]].dtype == np.int8 and inits[w.input[1]].size > 1  # per channel
            weighted += 1
    assert weighted >= 3


def test_trt_cache_round_trips_exact_float32_scales(tmp_path):
    rng = np.random.default_rng(0)
    scales = {f"t{i}": float(np.float32(s)) for i, s in enumerate(rng.uniform(1e-4, 3.0, size=20))}
    scales["relu_out/x.1"] = float(np.float32(0.0123))
    header, back = read_trt_cache(write_trt_cache(scales, tmp_path / "c.cache", trt_version="10.3.0"))
    assert header == "TRT-100300-EntropyCalibration2"
    assert back == scales
    line = (tmp_path / "c.cache").read_text().splitlines()[1]
    name, hexbits = line.split(": ")
    assert len(hexbits) == 8 and int(hexbits, 16) >= 0


def test_trt_cache_of_a_calibrated_graph_matches_its_qdq_scales(calibrated):
    from edgefuse.calibration import activation_scales

    _, scales = read_trt_cache(calibrated / "camera+lidar+radar.trtcache")
    assert scales == activation_scales(calibrated / "camera+lidar+radar.int8.onnx") and scales


def test_trt_version_codes():
    assert trt_version_code("10.3.0") == 100300
    assert trt_version_code("11.4.0.106") == 110400
    assert trt_version_code("8.6.1") == 8601


def test_reader_batches_and_rewinds():
    r = StratifiedReader({"a": np.arange(70, dtype=np.float32).reshape(70, 1)}, batch_size=32, progress=False)
    sizes = []
    while (b := r.get_next()) is not None:
        sizes.append(len(b["a"]))
    assert sizes == [32, 32, 6] and len(r) == 3
    r.rewind()
    assert r.get_next()["a"][0, 0] == 0
    with pytest.raises(ValueError, match="different sample counts"):
        StratifiedReader({"a": np.zeros((3, 1)), "b": np.zeros((4, 1))})


def test_saturation_counts_histogram_mass_beyond_amax():
    class TD:
        def __init__(self, lo, hi):
            self.range_value = (np.float32(lo), np.float32(hi))

    ranges = {"x": TD(-2.0, 2.0), "zero": TD(0.0, 0.0)}
    edges = np.linspace(0.0, 4.0, 9)  # |x| histogram, bins of 0.5
    counts = np.array([10, 10, 10, 10, 5, 3, 1, 1])  # 10 of 50 values beyond 2.0
    out = tensor_ranges(ranges, {"x": (counts, edges), "zero": (np.array([7]), np.array([0.0, 1e-9]))})
    assert out["x"].saturated_pct == pytest.approx(20.0)
    assert out["x"].scale == pytest.approx(2.0 / 127)
    assert out["zero"].saturated_pct == 0.0  # an all-zero tensor saturates nothing


def test_gate_fails_with_a_clear_message_and_writes_nothing(exported, small_scenes, tmp_path):
    enforce([GateResult("a", 0.9, 0.895, 0.99, 100)], max_drop=1.0)
    enforce(
        [GateResult("a", 0.8360, 0.8260, 0.99, 2000)], max_drop=1.0
    )  # exactly 1 point (1.0000000000000009 in floats)
    with pytest.raises(
        AccuracyGateError,
        match=r"1 subset\(s\) dropped more than --max-drop 1.0 points: b: 0.9000 -> 0.8500 \(5.00 points\)",
    ):
        enforce([GateResult("a", 0.9, 0.9, 1.0, 100), GateResult("b", 0.9, 0.85, 0.9, 100)], max_drop=1.0)
    with pytest.raises(AccuracyGateError, match="INT8 accuracy gate failed"):
        calibrate_export(exported, small_scenes, tmp_path / "out", size=64, max_drop=-1.0, progress=False)
    assert list(tmp_path.iterdir()) == []  # no output, no temp folder left behind


def test_calibration_records_reports_per_subset(calibrated):
    import json

    rec = json.loads((calibrated / "calibration.json").read_text())
    assert rec["method"] == "minmax" and rec["size"] == 128
    assert len(rec["subsets"]) == 7
    for entry in rec["subsets"].values():
        rep = json.loads((calibrated / entry["report"]).read_text())
        assert rep["tensors"] and all(
            {"lowest", "highest", "amax", "scale", "saturated_pct"} <= set(t) for t in rep["tensors"].values()
        )
        assert set(entry["accuracy"]) >= {"fp32", "int8", "agreement"}


def test_an_onnxruntime_too_old_to_calibrate_is_a_clear_error(monkeypatch):
    """onnxruntime < 1.27 (all Python 3.10 has) lacks quantize_static's precomputed ranges:
    importing the calibration says which release it needs and which it found."""
    import importlib
    import sys

    import onnxruntime
    import onnxruntime.quantization.calibrate as ort_calibrate

    monkeypatch.delattr(ort_calibrate, "save_tensors_data")
    monkeypatch.delitem(sys.modules, "edgefuse.calibration.quantize", raising=False)
    with pytest.raises(
        ImportError, match=rf"needs onnxruntime >= 1\.27 .*found onnxruntime {onnxruntime.__version__}"
    ) as err:
        importlib.import_module("edgefuse.calibration.quantize")
    assert isinstance(err.value, ValueError)  # a BackendUnavailable: the CLI prints it as an error line


def test_an_onnxruntime_too_old_to_calibrate_still_builds_torch_bundles(tiny_checkpoint, tmp_path):
    """On Python 3.10 (JetPack 6) onnxruntime is older than calibration needs. A torch bundle
    exports and calibrates nothing, so it builds there, FP16 gate included; an INT8 build
    fails at once (before minutes of export) with quantize's error; importing
    edgefuse.calibration itself works."""
    import subprocess
    import sys

    code = f"""
import onnxruntime.quantization.calibrate as c
del c.save_tensors_data  # what onnxruntime < 1.27 lacks
import edgefuse.calibration
from edgefuse.build import build_bundle
b = build_bundle({str(tiny_checkpoint)!r}, {str(tmp_path / "torch")!r}, backend="torch", precision="fp16",
                 subsets=[("radar",)], max_drop=100.0, progress=False)
assert b.subsets["radar"]["precision"] == "fp16", b.subsets
import sys
assert "edgefuse.calibration.quantize" not in sys.modules
try:
    build_bundle({str(tiny_checkpoint)!r}, {str(tmp_path / "int8")!r}, subsets=[("radar",)], progress=False)
except ImportError as e:
    assert "needs onnxruntime >= 1.27" in str(e), e
    assert "edgefuse.export" not in sys.modules  # it failed before exporting
else:
    raise AssertionError("an INT8 build ran without calibration")
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)
    assert not (tmp_path / "int8").exists()
