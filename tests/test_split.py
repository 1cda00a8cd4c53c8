"""Split bundles: an encoder per sensor + a masked fusion head, built FP32 and INT8, gated per subset, run."""

import json
import shutil

import numpy as np
import pytest

from edgefuse.build import build_bundle
from edgefuse.bundle import BundleError, load_bundle
from edgefuse.cli import main
from edgefuse.errors import EdgefuseError
from edgefuse.gate import AccuracyGateError
from edgefuse.inference import subset_accuracy
from edgefuse.runtime import ManualClock, Policy, Runtime, SensorPolicy
from edgefuse.runtime.select import softmax

SUBSETS = ["camera", "lidar", "radar", "camera+lidar", "camera+radar", "lidar+radar", "camera+lidar+radar"]


@pytest.fixture(scope="module")
def split_bundles(tiny_checkpoint, small_scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    out = {}
    for precision in ("fp32", "int8"):
        out[precision] = root / precision
        build_bundle(
            tiny_checkpoint,
            out[precision],
            precision=precision,
            split=True,
            data=small_scenes,
            calib_size=64,
            max_drop=100.0,
            progress=False,
        )
    return out


def test_a_split_bundle_has_an_encoder_per_sensor_a_head_and_every_subsets_accuracy(split_bundles):
    b = load_bundle(split_bundles["int8"])
    m = b.manifest
    assert b.kind == "split" and m["precision"] == "int8" and m["embedding_dim"] == 16
    assert sorted(m["encoders"]) == ["camera", "lidar", "radar"]
    cam = m["encoders"]["camera"]
    assert cam["engine"] == "engines/encoder_camera.int8.onnx" and cam["inputs"][0]["shape"] == [-1, 3, 16, 16]
    assert cam["outputs"] == [{"name": "embedding", "shape": [-1, 16], "dtype": "float32"}]
    assert cam["calibration"]["report"] in m["files"] and cam["calibration"]["size"] == 64
    assert [i["name"] for i in m["head"]["inputs"]] == ["embeddings", "present"]
    assert m["head"]["inputs"][1] == {"name": "present", "shape": [-1, 3], "dtype": "bool"}
    assert list(b.subsets) == SUBSETS
    for entry in b.subsets.values():
        assert {"fp32", "int8", "agreement", "drop_points"} <= set(entry["accuracy"]) and "engine" not in entry
    assert len([f for f in m["files"] if f.endswith(".onnx") and ".ort-" not in f]) == 4


def test_fp32_split_serves_each_subset_with_the_models_own_accuracy(split_bundles, tiny_checkpoint, small_scenes):
    """The composed pipeline (encoders, then the head with the mask) is the model: same accuracy on every subset."""
    from edgefuse.checkpoint import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    want = subset_accuracy(model, small_scenes["test"])
    got = {k: v["accuracy"]["fp32"] for k, v in load_bundle(split_bundles["fp32"]).subsets.items()}
    assert got == pytest.approx(want, abs=1.5 / len(small_scenes["test"]))  # at most one sample flips


def test_the_gate_falls_back_the_costliest_engine_first_or_fails_the_build(tiny_checkpoint, small_scenes, tmp_path):
    b = build_bundle(
        tiny_checkpoint,
        tmp_path / "fb",
        precision="int8",
        split=True,
        data=small_scenes,
        calib_size=32,
        max_drop=-1.0,
        gate_fail="fp32",
        progress=False,
    )  # every subset "fails": engines go back one by one
    gate = b.manifest["int8_gate"]
    assert (
        sorted(gate["rejected"])
        == sorted(gate["fallback_order"])
        == ["encoder_camera", "encoder_lidar", "encoder_radar", "head"]
    )
    assert all(e["precision"] == "fp32" for e in [*b.manifest["encoders"].values(), b.manifest["head"]])
    assert all(v["precision"] == "fp32" and v["accuracy"]["drop_points"] == 0 for v in b.subsets.values())
    with pytest.raises(AccuracyGateError, match="INT8 accuracy gate failed"):
        build_bundle(
            tiny_checkpoint,
            tmp_path / "err",
            precision="int8",
            split=True,
            data=small_scenes,
            calib_size=32,
            max_drop=-1.0,
            progress=False,
        )
    assert not (tmp_path / "err").exists()


def test_split_needs_a_mid_fusion_model_and_fp32_or_int8(tiny_checkpoint, small_scenes, tmp_path):
    from edgefuse.train import TrainConfig, train

    ck = tmp_path / "late"
    train(
        small_scenes,
        TrainConfig(fusion="late_mean", epochs=1, min_steps=0, dim=8),
        out=ck,
        progress=False,
        source="sensorscenes",
    )
    with pytest.raises(EdgefuseError, match="a split bundle needs a mid-fusion model .* got fusion 'late_mean'"):
        build_bundle(ck, tmp_path / "b", split=True, data=small_scenes, progress=False)
    with pytest.raises(EdgefuseError, match="split bundles are built in fp32"):
        build_bundle(tiny_checkpoint, tmp_path / "b", backend="torch", precision="fp16", split=True, data=small_scenes)


def test_a_split_bundle_missing_its_head_is_refused(split_bundles, tmp_path):
    bad = tmp_path / "b"
    shutil.copytree(split_bundles["fp32"], bad)
    doc = json.loads((bad / "manifest.json").read_text())
    del doc["files"][doc["head"]["engine"]]
    (bad / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="the head engine 'engines/head.fp32.onnx' is not listed"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="load it with load_split_engines"):
        load_bundle(split_bundles["fp32"]).load_engines()


def _compose(bundle_path, frames):
    """What the split pipeline computes for ``frames`` (sensor -> one sample), run by hand."""
    b = load_bundle(bundle_path)
    encoders, head = b.load_split_engines()
    names = b.modality_names
    emb = np.zeros((1, len(names), b.manifest["embedding_dim"]), np.float32)
    present = np.zeros((1, len(names)), bool)
    for i, n in enumerate(names):
        if n in frames:
            emb[0, i] = encoders[n].run({n: frames[n][None]})["embedding"][0]
            present[0, i] = True
    return head.run({"embeddings": emb, "present": present})["logits"][0]


def test_the_runtime_encodes_on_push_and_runs_only_the_head_on_infer(split_bundles, small_scenes):
    test = small_scenes["test"]
    clock = ManualClock(0.0)
    with Runtime.from_bundle(split_bundles["int8"], clock=clock, threads=1) as rt:
        assert rt.split and sorted(rt.engines) == ["encoder_camera", "encoder_lidar", "encoder_radar", "head"]
        runs = {k: 0 for k in rt.engines}
        for k, e in rt.engines.items():  # count the backend's runs
            e._run = lambda feeds, _k=k, _run=e._run: (runs.__setitem__(_k, runs[_k] + 1), _run(feeds))[1]
        frames = {k: v[3] for k, v in test.inputs.items()}
        for n in ("camera", "radar"):
            clock.advance(0.001)
            rt.push(n, frames[n])
        assert runs == {"encoder_camera": 1, "encoder_lidar": 0, "encoder_radar": 1, "head": 0}
        r = rt.infer()
        r2 = rt.infer()
        assert runs["head"] == 2 and runs["encoder_camera"] == 1  # inference reruns no encoder
        assert r.engine == "head[camera+radar]" and r.used == ("camera", "radar")
        want = _compose(split_bundles["int8"], {n: frames[n] for n in ("camera", "radar")})
        np.testing.assert_allclose(r.probabilities, softmax(want.astype(np.float64)), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(r2.logits, r.logits)
        assert r.expected_accuracy == load_bundle(split_bundles["int8"]).subsets["camera+radar"]["accuracy"]["int8"]


def test_no_embedding_older_than_its_sensors_timeout_reaches_the_head(split_bundles, small_scenes):
    test = small_scenes["test"]
    clock = ManualClock(0.0)
    quick = Policy(default=SensorPolicy(recover_frames=1, recover_s=0.0))  # back on one frame
    with Runtime.from_bundle(split_bundles["fp32"], policy=quick, clock=clock, threads=1) as rt:
        for k, v in test.inputs.items():
            rt.push(k, v[0])
        clock.advance(0.099)  # camera (30 Hz) times out at 66.7 ms, radar (20 Hz) at 100 ms, lidar at 200 ms
        r = rt.infer()
        assert r.used == ("lidar", "radar") and r.ages == {"lidar": pytest.approx(0.099), "radar": pytest.approx(0.099)}
        clock.advance(0.2)
        assert rt.infer().status.value == "NO_SENSORS"
        # a frame accepted while its encoder lags: only the embedding's own timestamp counts
        clock.advance(0.01)
        rt.push("lidar", test.inputs["lidar"][1])
        rt._embedding_t["lidar"] = clock() - 0.25  # as if the newest embedding were of an older frame
        r = rt.infer()
        assert r.status.value == "NO_SENSORS" and r.live == ("lidar",)


def test_edgefuse_build_split_and_info_on_the_command_line(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", str(tiny_checkpoint), "--split", "--precision", "fp32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "encoder camera" in text and "head" in text and "serving 7 subsets" in text
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "split bundle: 3 encoders + a head (16-wide embeddings)" in text and "camera+lidar+radar" in text


def test_a_torch_split_bundle_runs_each_part_of_the_checkpoint(tiny_checkpoint, small_scenes, split_bundles, tmp_path):
    b = build_bundle(
        tiny_checkpoint,
        tmp_path / "t",
        backend="torch",
        precision="fp32",
        split=True,
        data=small_scenes,
        progress=False,
    )
    m = b.manifest
    assert m["encoders"]["lidar"] == {**m["encoders"]["lidar"], "engine": "engines/torch", "part": "encoder:lidar"}
    assert m["head"]["part"] == "head" and len(b.subsets) == 7
    test = small_scenes["test"]
    frames = {k: v[5] for k, v in test.inputs.items()}
    results = {}
    for kind, path in (("torch", tmp_path / "t"), ("ort", split_bundles["fp32"])):
        clock = ManualClock(0.0)
        with Runtime.from_bundle(path, clock=clock, threads=1) as rt:
            results[kind] = rt.step(frames)
    assert results["torch"].engine == results["ort"].engine == "head[camera+lidar+radar]"
    np.testing.assert_allclose(results["torch"].probabilities, results["ort"].probabilities, atol=1e-4)
