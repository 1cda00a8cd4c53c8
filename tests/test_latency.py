"""Latency-aware precision: each subset keeps the fastest engine that passes the accuracy gate, timed on the
build machine or read from a profile the device wrote (edgefuse profile); INT8 quantization chosen per
backend (ONNX Runtime: only the large weights)."""

import json

import onnx
import pytest

from edgefuse.build import build_bundle
from edgefuse.calibration import calibrate_export
from edgefuse.cli import main
from edgefuse.errors import EdgefuseError
from edgefuse.latency import NOISE, candidates_of, choose, profile, read_profile, time_graphs


def _t(p50):
    return {"1": {"p50_us": p50, "p90_us": p50 * 1.2, "n": 10}}


def test_the_fastest_passing_candidate_wins_and_int8_must_beat_the_noise():
    assert choose({"fp32": _t(100), "int8": _t(80)}, ["int8", "fp32"])[0] == "int8"
    chosen, why = choose({"fp32": _t(100), "int8": _t(97)}, ["int8", "fp32"])  # within the 5 % noise
    assert chosen == "fp32" and "0.97x" in why
    chosen, why = choose({"fp32": _t(100), "int8": _t(150)}, ["int8", "fp32"])
    assert chosen == "fp32" and "int8 p50 150 us (1.50x)" in why
    assert choose({"fp32": _t(100), "int8": _t(50)}, ["fp32"])[0] == "fp32"  # INT8 failed the gate
    assert choose({"fp32": _t(100), "int8": _t(150)}, ["int8", "fp32"], strict="int8")[0] == "int8"
    assert NOISE == 0.05


def test_timing_is_interleaved_per_batch(calibrated):
    cands = candidates_of(calibrated)
    assert set(cands["camera+lidar+radar"]) == {"fp32", "int8"}
    t = time_graphs(cands["camera+lidar+radar"], batches=(1, 4), iters=20, warmup=2)
    assert set(t) == {"fp32", "int8"} and set(t["fp32"]) == {"1", "4"}
    assert all(v["n"] == 20 and v["p90_us"] >= v["p50_us"] > 0 for d in t.values() for v in d.values())


def test_only_large_weights_are_quantized_for_onnx_runtime(exported, small_scenes, tmp_path):
    rec = calibrate_export(
        exported, small_scenes, tmp_path / "cal", size=64, max_drop=100.0, progress=False, min_weights=8192
    )
    assert rec["min_weights"] == 8192
    full = rec["subsets"]["camera+lidar+radar"]
    assert 0 < full["quantized_nodes"]["quantized"] < full["quantized_nodes"]["of"]
    g = onnx.load(str(tmp_path / "cal" / full["int8_file"]))
    inits = {i.name: i for i in g.graph.initializer}
    weighted = [n for n in g.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    produced = {o: n for n in g.graph.node for o in n.output}
    quantized = [n for n in weighted if n.input[0] in produced and produced[n.input[0]].op_type == "DequantizeLinear"]
    assert len(quantized) == full["quantized_nodes"]["quantized"]
    for n in quantized:  # each quantized node's weight (behind its DequantizeLinear) has >= 8192 values
        w = produced[n.input[1]].input[0]
        assert w in inits and len(onnx.numpy_helper.to_array(inits[w]).reshape(-1)) >= 8192


@pytest.fixture(scope="module")
def timed_bundle(tiny_checkpoint, small_scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("latency") / "bundle"
    build_bundle(
        tiny_checkpoint, out, precision="int8", data=small_scenes, calib_size=64, max_drop=100.0,
        progress=False, latency_iters=30,
    )  # fmt: skip
    return out


def test_the_manifest_shows_every_candidate_and_no_engine_is_slower_than_fp32(timed_bundle):
    m = json.loads((timed_bundle / "manifest.json").read_text())
    assert m["latency"]["source"] == "the build machine" and m["latency"]["batches"] == [1, 32]
    assert m["int8_quantization"]["min_weights"] == 8192
    for key, e in m["subsets"].items():
        lat = e["latency"]
        c = lat["candidates"]
        assert set(c) == {"fp32", "int8"} and {"batch1", "batch32"} <= set(c["fp32"])
        assert c["fp32"]["accuracy"] is not None and c["int8"]["accuracy"] is not None
        assert lat["chosen"] == e["precision"] and lat["why"]
        assert e["engine"].endswith(f".{e['precision']}.onnx")
        chosen = c[lat["chosen"]]["batch1"]["p50_us"]
        assert chosen <= c["fp32"]["batch1"]["p50_us"] * (1 + NOISE), key  # never slower than FP32


def test_a_device_profile_decides_and_strict_demands_int8(tiny_checkpoint, small_scenes, tmp_path, capsys):
    # the device's profile (here written by hand): INT8 twice as fast for two subsets, slower for the rest
    from edgefuse.latency import machine

    fast = {"camera", "camera+lidar+radar"}
    subsets = ["camera", "lidar", "radar", "camera+lidar", "camera+radar", "lidar+radar", "camera+lidar+radar"]
    prof = {
        "format": "edgefuse-latency-profile/1",
        "device": {**machine(), "cpu": "Cortex-A78AE (Jetson Orin)"},
        "threads": 1,
        "batches": [1],
        "graphs": {k: {"fp32": _t(100.0), "int8": _t(50.0 if k in fast else 130.0)} for k in subsets},
    }
    path = tmp_path / "orin.json"
    path.write_text(json.dumps(prof))
    kw = dict(precision="int8", data=small_scenes, calib_size=64, max_drop=100.0, progress=False)
    kw["subsets"] = [("camera",), ("radar",), ("camera", "lidar", "radar")]  # two fast in INT8 on the device, one not
    b = build_bundle(tiny_checkpoint, tmp_path / "b", latency_profile=path, **kw)
    assert {k for k, e in b.subsets.items() if e["precision"] == "int8"} == fast
    assert b.manifest["latency"]["timed_on"]["cpu"] == "Cortex-A78AE (Jetson Orin)"
    s = build_bundle(tiny_checkpoint, tmp_path / "s", latency_profile=path, strict=True, **kw)
    assert all(e["precision"] == "int8" for e in s.subsets.values())
    del prof["graphs"]["radar"]
    path.write_text(json.dumps(prof))
    with pytest.raises(EdgefuseError, match=r"no timings for subsets \['radar'\]"):
        build_bundle(tiny_checkpoint, tmp_path / "x", latency_profile=path, **kw)
    path.write_text("{}")
    with pytest.raises(EdgefuseError, match="expected format 'edgefuse-latency-profile/1'"):
        read_profile(path)


def test_edgefuse_profile_times_a_calibration_folder_with_the_device_install_only(calibrated, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", str(calibrated), "--out", str(out), "--iters", "10", "--batches", "1"]) == 0
    doc = read_profile(out)
    assert set(doc["graphs"]) == set(candidates_of(calibrated)) and doc["batches"] == [1]
    assert all(set(v) == {"fp32", "int8"} for v in doc["graphs"].values())
    assert "[7/7] camera+lidar+radar" in capsys.readouterr().out
    assert main(["profile", str(tmp_path), "--out", str(out)]) == 2
    assert "expected a calibration folder" in capsys.readouterr().err
    direct = profile(calibrated, iters=5, progress=False)
    assert direct["device"]["onnxruntime"]
