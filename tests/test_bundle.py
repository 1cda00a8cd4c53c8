"""Bundles: build (ort int8 / fp32, torch), manifest, verification, corruption, atomicity, CLI, no-torch loading."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgefuse.build import build_bundle
from edgefuse.bundle import MANIFEST, BundleError, load_bundle
from edgefuse.cli import main

SUBSETS = [("radar",), ("camera", "lidar", "radar")]


@pytest.fixture(scope="module")
def int8_bundle(tiny_checkpoint, small_scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "int8"
    build_bundle(
        tiny_checkpoint,
        out,
        backend="ort",
        precision="int8",
        subsets=SUBSETS,
        data=small_scenes,
        calib_size=128,
        max_drop=100.0,
        progress=False,
        strict=True,  # INT8 engines even where FP32 runs faster on this machine
        latency_iters=20,
    )
    return out


def test_manifest_describes_every_subset(int8_bundle):
    b = load_bundle(int8_bundle)
    m = b.manifest
    assert m["schema_version"] == 1 and m["edgefuse_version"] and m["backend"] == "ort" and m["precision"] == "int8"
    assert [s["name"] for s in m["modalities"]] == ["camera", "lidar", "radar"]
    assert list(m["subsets"]) == ["radar", "camera+lidar+radar"]
    full = m["subsets"]["camera+lidar+radar"]
    assert full["engine"] == "engines/camera+lidar+radar.int8.onnx"
    assert [i["name"] for i in full["inputs"]] == ["camera", "lidar", "radar"]
    assert full["inputs"][0]["shape"] == [-1, 3, 16, 16] and full["outputs"][0]["shape"] == [-1, 6]
    assert {"fp32", "int8", "agreement"} <= set(full["accuracy"])
    assert full["calibration"]["method"] == "minmax" and full["calibration"]["size"] == 128
    assert all(len(h) == 64 for h in m["files"].values())
    assert full["engine"] in m["files"] and full["calibration"]["report"] in m["files"]
    assert "trt_cache" not in full["calibration"]  # an ONNX Runtime bundle: no TensorRT would read one


def test_engines_load_warm_and_run(int8_bundle, small_scenes):
    b = load_bundle(int8_bundle)
    engines = b.load_engines(threads=1, optimized_cache=True)
    assert set(engines) == {"radar", "camera+lidar+radar"}
    x = small_scenes["test"].inputs
    out = engines["camera+lidar+radar"].run({k: v[:10] for k, v in x.items()})["logits"]
    assert out.shape == (10, 6) and np.isfinite(out).all()
    assert engines["radar"].run({"radar": x["radar"][:3]})["logits"].shape == (3, 6)


def _copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def test_flipped_byte_in_an_engine_is_caught(int8_bundle, tmp_path, monkeypatch):
    b = _copy(int8_bundle, tmp_path)
    f = b / "engines" / "radar.int8.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    constructed = []
    monkeypatch.setattr("edgefuse.engines.load_engine", lambda *a, **k: constructed.append(a))
    with pytest.raises(BundleError, match=r"file 'engines/radar.int8.onnx' is corrupted"):
        load_bundle(b).load_engines()
    assert constructed == []  # nothing loaded


def test_deleted_engine_and_bad_manifests(int8_bundle, tmp_path):
    b = _copy(int8_bundle, tmp_path)
    (b / "engines" / "radar.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"file 'engines/radar.int8.onnx' listed in manifest.json is missing"):
        load_bundle(b)
    b2 = _copy(int8_bundle, tmp_path / "2")
    doc = json.loads((b2 / MANIFEST).read_text())
    (b2 / MANIFEST).write_text(json.dumps({**doc, "schema_version": 99}))
    with pytest.raises(BundleError, match="unknown bundle schema version 99; this edgefuse reads version 1"):
        load_bundle(b2)
    doc["subsets"]["radar"]["modalities"] = ["sonar"]
    (b2 / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"subset 'radar' names unknown modality \['sonar'\]"):
        load_bundle(b2)
    (b2 / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(b2)
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path / "nowhere")


def test_failed_build_leaves_no_bundle(tiny_checkpoint, small_scenes, int8_bundle, tmp_path):
    before = {p.name: p.stat().st_mtime for p in int8_bundle.rglob("*")}
    with pytest.raises(ValueError, match="INT8 accuracy gate failed"):
        build_bundle(
            tiny_checkpoint,
            int8_bundle,
            subsets=SUBSETS[:1],
            data=small_scenes,
            calib_size=64,
            max_drop=-1.0,
            progress=False,
        )
    assert {p.name: p.stat().st_mtime for p in int8_bundle.rglob("*")} == before  # the old bundle is untouched
    assert sorted(p.name for p in int8_bundle.parent.iterdir()) == ["int8"]  # no temp folders left
    with pytest.raises(ValueError, match="backend 'ort' builds precisions"):
        build_bundle(tiny_checkpoint, tmp_path / "x", precision="fp16", progress=False)
    assert not (tmp_path / "x").exists()


def test_fp32_and_torch_bundles(tiny_checkpoint, small_scenes, tmp_path):
    fp32 = build_bundle(
        tiny_checkpoint, tmp_path / "fp32", precision="fp32", subsets=SUBSETS[:1], data=small_scenes, progress=False
    )
    assert set(fp32.subsets["radar"]["accuracy"]) >= {"fp32"} and "calibration" not in fp32.subsets["radar"]
    tb = build_bundle(
        tiny_checkpoint,
        tmp_path / "torch",
        backend="torch",
        precision="fp32",
        subsets=SUBSETS,
        data=small_scenes,
        progress=False,
    )
    eng = tb.load_engine("radar")
    x = small_scenes["test"].inputs["radar"][:4]
    np.testing.assert_allclose(
        eng.run({"radar": x})["logits"], fp32.load_engine("radar").run({"radar": x})["logits"], atol=1e-4
    )


def test_torch_fp16_bundle_gates_each_subset(tiny_checkpoint, small_scenes, tmp_path, capsys):
    """--backend torch --precision fp16: FP32 and FP16 accuracy per subset in the manifest, the
    engines run in float16; a subset over --max-drop fails the build (nothing written) or, with
    --gate-fallback fp32, runs in FP32 and the manifest says why."""
    b = build_bundle(
        tiny_checkpoint,
        tmp_path / "h",
        backend="torch",
        precision="fp16",
        subsets=SUBSETS,
        data=small_scenes,
        max_drop=100.0,
        progress=False,
    )
    assert b.manifest["fp16_gate"] == {"max_drop_points": 100.0, "on_fail": "error", "rejected": []}
    for key, entry in b.subsets.items():
        acc = entry["accuracy"]
        assert entry["precision"] == "fp16" and "fp16_rejected" not in entry
        assert {"fp32", "fp16", "agreement", "drop_points", "device", "n"} <= set(acc)
        assert acc["drop_points"] == pytest.approx((acc["fp32"] - acc["fp16"]) * 100) and acc["agreement"] >= 0.95
    with pytest.warns(RuntimeWarning, match="'fp16' on the CPU runs slower"):  # the bundle serves a GPU; CI has none
        eng = b.load_engine("radar", device="cpu")
    assert (
        eng.precision == "fp16"
        and eng.run({"radar": small_scenes["test"].inputs["radar"][:3]})["logits"].dtype == np.float32
    )

    from edgefuse.gate import AccuracyGateError

    with pytest.raises(
        AccuracyGateError, match=r"FP16 accuracy gate failed: 2 subset\(s\) dropped more than --max-drop -1000.0"
    ):
        build_bundle(
            tiny_checkpoint,
            tmp_path / "x",
            backend="torch",
            precision="fp16",
            subsets=SUBSETS,
            data=small_scenes,
            max_drop=-1000.0,
            progress=False,
        )
    assert not (tmp_path / "x").exists()
    assert (
        main(
            [
                "build",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "f"),
                "--backend",
                "torch",
                "--precision",
                "fp16",
                "--subsets",
                "radar",
                "--max-drop",
                "-1000",
                "--gate-fallback",
                "fp32",
            ]
        )
        == 0
    )
    assert (
        "built 1 torch engines (0 fp16, 1 fp32 after failing the FP16 gate of --max-drop -1000.0)"
        in capsys.readouterr().out
    )
    f = load_bundle(tmp_path / "f")
    assert f.manifest["fp16_gate"]["rejected"] == ["radar"] and f.subsets["radar"]["precision"] == "fp32"
    assert f.subsets["radar"]["fp16_rejected"]["max_drop_points"] == -1000.0
    assert f.load_engine("radar").precision == "fp32"


def test_trt_bundles_build_without_tensorrt_and_load_only_with_it(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """A TensorRT bundle is portable (ONNX graphs; the device compiles the plans), so a host without TensorRT
    builds it; loading its engines where tensorrt is missing is a clear error naming the install."""
    from edgefuse.engines import BackendUnavailable

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises, installed or not
    out = tmp_path / "t"
    args = ["build", str(tiny_checkpoint), "--backend", "trt", "--precision", "fp32", "--subsets", "lidar"]
    assert main([*args, "--out", str(out)]) == 0
    b = load_bundle(out)
    assert b.subsets["lidar"]["engine"] == "engines/lidar.fp32.onnx" and "trt" in b.manifest
    with pytest.raises(BackendUnavailable, match=r"needs the tensorrt package: pip install 'edgefuse\[trt\]'"):
        b.load_engines()


def test_cli_export_calibrate_build(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "g"), "--subsets", "lidar,camera+lidar"]) == 0
    assert sorted(p.name for p in (tmp_path / "g").glob("*.onnx")) == ["camera+lidar.onnx", "lidar.onnx"]
    assert (
        main(["calibrate", str(tmp_path / "g"), "--out", str(tmp_path / "c"), "--size", "64", "--max-drop", "100"]) == 0
    )
    assert (tmp_path / "c" / "lidar.trtcache").is_file()
    assert (
        main(
            [
                "build",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "b"),
                "--subsets",
                "lidar",
                "--calib-size",
                "64",
                "--max-drop",
                "100",
                "--strict",
            ]
        )
        == 0
    )
    assert "built 1 ort int8 engines; timed on the build machine" in capsys.readouterr().out
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "s"), "--split"]) == 0
    assert (tmp_path / "s" / "head.onnx").is_file()


def test_a_device_loads_and_runs_a_bundle_without_torch(int8_bundle):
    code = (
        "import sys, numpy as np\n"
        "from edgefuse.bundle import load_bundle\n"
        f"b = load_bundle({str(int8_bundle)!r})\n"
        "e = b.load_engines(threads=1)['radar']\n"
        "out = e.run({'radar': np.zeros((2, 64), np.float32)})['logits']\n"
        "assert out.shape == (2, 6)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_bundle_constructs_every_engine_before_warming_any(int8_bundle, monkeypatch):
    """So a shared TensorRT block is at its final size before any engine captures a CUDA graph."""
    from edgefuse.bundle import Bundle

    events = []
    real = Bundle.load_engine

    def load_engine(self, subset, **kw):
        engine = real(self, subset, **kw)
        events.append(("construct", subset))
        warm = engine.warmup
        engine.warmup = lambda *a, **k: (events.append(("warm", subset)), warm(*a, **k))[1]
        return engine

    monkeypatch.setattr(Bundle, "load_engine", load_engine)
    engines = load_bundle(int8_bundle).load_engines()
    kinds = [k for k, _ in events]
    n = len(engines)
    assert n >= 2 and kinds == ["construct"] * n + ["warm"] * n
    for e in engines.values():
        e.close()


def test_int8_fallback_keeps_fp32_engines_for_subsets_that_fail_the_gate(
    tiny_checkpoint, small_scenes, tmp_path, capsys
):
    """A subset whose INT8 graph loses more than --max-drop points keeps its FP32 engine (with
    --int8-fallback fp32) instead of failing the build; the manifest says which and why."""
    with pytest.raises(ValueError, match="gate_fail must be one of"):
        build_bundle(tiny_checkpoint, tmp_path / "x", gate_fail="fp16", progress=False)
    # every subset fails a gate of -1000 points; one that passes everything keeps INT8
    out = tmp_path / "b"
    b = build_bundle(
        tiny_checkpoint,
        out,
        subsets=SUBSETS,
        data=small_scenes,
        calib_size=64,
        max_drop=-1000.0,
        gate_fail="fp32",
        progress=False,
    )
    assert b.manifest["int8_gate"] == {
        "max_drop_points": -1000.0,
        "on_fail": "fp32",
        "rejected": ["radar", "camera+lidar+radar"],
    }
    for key, entry in b.subsets.items():
        assert (
            entry["precision"] == "fp32"
            and entry["engine"] == f"engines/{key}.fp32.onnx"
            and "calibration" not in entry
        )
        assert entry["int8_rejected"]["max_drop_points"] == -1000.0
        assert entry["int8_rejected"]["drop_points"] == pytest.approx(entry["accuracy"]["drop_points"])
    fp32 = build_bundle(
        tiny_checkpoint, tmp_path / "fp32", precision="fp32", subsets=SUBSETS[:1], data=small_scenes, progress=False
    )
    x = {"radar": small_scenes["test"].inputs["radar"][:5]}
    np.testing.assert_allclose(
        load_bundle(out).load_engine("radar").run(x)["logits"], fp32.load_engine("radar").run(x)["logits"], atol=1e-5
    )  # the FP32 graph, not the Q/DQ one
    kept = build_bundle(
        tiny_checkpoint,
        tmp_path / "k",
        subsets=SUBSETS[:1],
        data=small_scenes,
        calib_size=64,
        max_drop=100.0,
        gate_fail="fp32",
        progress=False,
        strict=True,
    )
    assert kept.subsets["radar"]["precision"] == "int8" and kept.manifest["int8_gate"]["rejected"] == []
    assert (
        main(
            [
                "build",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "c"),
                "--subsets",
                "lidar",
                "--calib-size",
                "64",
                "--max-drop",
                "-1000",
                "--int8-fallback",
                "fp32",
            ]
        )
        == 0
    )
    assert (
        "built 1 ort engines (0 int8, 1 fp32 after failing the INT8 gate of --max-drop -1000.0)"
        in capsys.readouterr().out
    )
