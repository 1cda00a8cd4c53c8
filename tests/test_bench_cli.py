"""`edgefuse bench`: its report carries every field the product promises, from one run (the fields are checked
here; timings are measured by the command and in bench/, never asserted)."""

from __future__ import annotations

import json

import pytest

from edgefuse.cli import main

QUANTILES = {"p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "mean_us", "n", "seconds"}

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


@pytest.fixture(scope="module")
def bundles(tiny_checkpoint, tmp_path_factory):
    """The tiny model as an FP32 bundle and INT8 wherever it passes the gate (strict): INT8 / FP32 from one run."""
    from edgefuse.build import build_bundle

    root = tmp_path_factory.mktemp("bench")
    subsets = [("camera", "lidar", "radar"), ("lidar", "radar"), ("camera", "radar"), ("camera", "lidar")]
    kw = dict(
        backend="ort",
        precision="int8",
        gate_fail="fp32",
        max_drop=100.0,
        calib_size=64,
        progress=False,
        subsets=subsets,
    )
    a = build_bundle(tiny_checkpoint, root / "chosen", **{**kw, "precision": "fp32"})
    b = build_bundle(tiny_checkpoint, root / "int8", strict=True, latency_iters=20, **kw)
    return a.root, b.root


def test_bench_reports_every_field_from_one_run(bundles, tmp_path, capsys):
    from edgefuse.benchmark import bench_bundle

    chosen, forced = bundles
    out = tmp_path / "report"
    args = ["bench", str(chosen), "--iters", "15", "--warmup", "2", "--swaps", "3", "--against", str(forced)]
    assert main([*args, "--out", str(out)]) == 0
    assert "## Cold start" in capsys.readouterr().out
    r = json.loads((out / "bench.json").read_text())
    assert r["format"] == "edgefuse-bench/1" and r["settings"]["threads"] == 1 and r["settings"]["warmup"] == 2
    assert r["settings"]["batches"] == [1, 8, 32] and r["settings"]["headline"] == "p50_us"
    m = r["machine"]
    assert m["cpu"] and m["cores"] >= 1 and isinstance(m["simd"], list)
    assert {"edgefuse", "numpy", "onnxruntime", "torch"} <= set(m["versions"])
    cold = r["cold_start"]
    assert cold["verify_ms"] > 0 and cold["files_verified"] > 4
    assert set(cold["load_ms"]) == set(cold["first_inference_ms"]) == set(r["precision"])
    assert r["calibration"] == {}  # an FP32 bundle; the INT8 one's facts:
    int8 = bench_bundle(forced, batches=(1,), iters=2, warmup=0, eager=False, runtime_iters=0, progress=False)
    int8 = int8["calibration"]
    assert int8["method"] == "minmax" and int8["size"] == 64
    assert "int8_quantization" in int8 and "int8_gate" in int8 and "latency" in int8
    assert r["peers"] == ["against", "edgefuse", "plain_ort", "torch_eager"]
    assert len(r["engines"]) == 4 * 3
    for row in r["engines"]:
        for peer in r["peers"]:
            assert QUANTILES <= set(row[peer]) and row[peer]["n"] == 15, (row["subset"], peer)
            assert row[peer]["p50_us"] <= row[peer]["p99_us"] <= row[peer]["p99.9_us"] <= row[peer]["max_us"]
    forced_precision = json.loads((forced / "manifest.json").read_text())["subsets"]
    for ratio in r["ratios"]:
        assert {"plain_ort_over_edgefuse", "torch_eager_over_edgefuse", "against_over_edgefuse"} <= set(ratio)
        pair = (r["precision"][ratio["subset"]], forced_precision[ratio["subset"]]["precision"])
        assert ("int8_over_fp32" in ratio) == (pair == ("fp32", "int8")), (ratio, pair)
    o = r["runtime"]["overhead"]
    assert o["infer"]["n"] == o["engine_run"]["n"] == 2000
    assert len(r["runtime"]["swaps"]) == 3 and all(w["n"] == 3 for w in r["runtime"]["swaps"].values())
    md = (out / "bench.md").read_text()
    assert "| camera+lidar+radar | 32 |" in md and "Overhead of `Runtime.infer()`" in md
    for png in ("latency_cdf.png", "peers.png", "accuracy.png"):
        assert _png(out / png), png


def test_bench_single_stream_runs_at_least_1024_queries_with_p90_headline(tiny_checkpoint, tmp_path):
    from edgefuse.benchmark import bench_bundle
    from edgefuse.build import build_bundle

    b = build_bundle(
        tiny_checkpoint, tmp_path / "b", backend="ort", precision="fp32", subsets=[("radar",)], progress=False
    )
    r = bench_bundle(b.root, duration=0.05, eager=False, runtime_iters=0, progress=False)
    assert r["settings"]["mode"] == "single-stream" and r["settings"]["headline"] == "p90_us"
    (row,) = r["engines"]
    assert row["batch"] == 1 and row["edgefuse"]["n"] >= 1024 and row["plain_ort"]["n"] >= 1024
    assert "PyTorch eager: not asked for (--no-eager)" in r["notes"]


def test_a_torch_bundle_without_cuda_says_why_it_has_no_cuda_peers(tiny_checkpoint, tmp_path):
    from edgefuse.benchmark import bench_bundle
    from edgefuse.build import build_bundle

    b = build_bundle(
        tiny_checkpoint, tmp_path / "t", backend="torch", precision="fp32", subsets=[("lidar",)], progress=False
    )
    r = bench_bundle(b.root, batches=(1,), iters=5, warmup=1, runtime_iters=0, progress=False)
    assert "CUDA-graph replay and torch.compile peers: no CUDA device here" in r["notes"]
    assert "plain ONNX Runtime: not applicable to a torch bundle" in r["notes"]
    (row,) = r["engines"]
    assert row["edgefuse"]["n"] == 5 and r["peers"] == ["edgefuse"]
