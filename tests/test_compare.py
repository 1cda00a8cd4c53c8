"""`edgefuse compare`: every strategy `edgefuse fusions` lists, trained, measured and exported; cached per strategy."""

from __future__ import annotations

import numpy as np
import pytest

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


def test_compare_by_default_runs_every_strategy_fusions_lists(small_scenes, tmp_path, monkeypatch):
    """The default set is exactly `edgefuse fusions`' list, in its order (each strategy's measurement is stubbed
    here; the next test measures four for real, and bench/results/cpu-2core/compare/ has all 17 exported)."""
    import edgefuse.compare as compare_mod
    from edgefuse.fusion import FAMILIES

    seen = []

    def one(data, fusion, *args):
        seen.append(fusion)
        return {"fusion": fusion, "_features": {"pca": np.zeros((2, 2), np.float32), "labels": np.zeros(2)}}

    monkeypatch.setattr(compare_mod, "_one", one)
    doc = compare_mod.compare(small_scenes, tmp_path, progress=False)
    assert seen == list(FAMILIES) and list(doc["strategies"]) == list(FAMILIES)


def test_compare_measures_each_strategy_and_resumes(small_scenes, tmp_path):
    """A mid, a late, the transformer and a missing-modality strategy trained (a few steps), measured, exported,
    calibrated and timed; a rerun with the same settings reads the cache."""
    from edgefuse.compare import compare, format_table, write_outputs

    fusions = ["gated", "late_poe", "transformer", "per_subset"]
    opts = {"max_steps": 3, "dim": 16}
    doc = compare(small_scenes, tmp_path, fusions, train_options=opts, calib_size=32, latency_iters=5, progress=False)
    assert list(doc["strategies"]) == fusions
    for name, r in doc["strategies"].items():
        assert set(r["accuracy"]) == {"all", "without camera", "without lidar", "without radar"}, name
        assert 0 <= r["robustness_auc"]["drop"] <= 1 and r["params"] > 0 and r["macs_per_frame"] > 0, name
        lat = r["latency"]
        assert lat["fp32_p50_us"] > 0 and lat["int8_p50_us"] > 0 and 0 <= lat["int8_accuracy"] <= 1, name
    assert doc["strategies"]["late_poe"]["features"] == "logits"
    assert doc["strategies"]["gated"]["features"] == "head input"
    paths = write_outputs(doc, tmp_path)
    assert _png(tmp_path / "accuracy_latency.png") and _png(tmp_path / "pca.png") and len(paths) == 4
    assert format_table(doc).count("\n") == len(fusions) + 2
    before = (tmp_path / "strategies" / "gated.json").stat().st_mtime_ns
    again = compare(small_scenes, tmp_path, fusions=["gated"], train_options=opts, calib_size=32, progress=False)
    assert (tmp_path / "strategies" / "gated.json").stat().st_mtime_ns == before  # resumed, not retrained
    assert again["strategies"]["gated"]["accuracy"] == doc["strategies"]["gated"]["accuracy"]
    pca = np.load(tmp_path / "strategies" / "gated.features.npz")["pca"]
    assert pca.shape == (len(small_scenes["test"]), 2)


def test_a_strategy_that_does_not_export_keeps_its_figures_and_says_why(small_scenes, tmp_path, monkeypatch):
    import edgefuse.compare as compare_mod

    def fail(*args):
        raise RuntimeError("Unsupported ONNX operator for this model\nmore detail")

    monkeypatch.setattr(compare_mod, "_latency", fail)
    doc = compare_mod.compare(
        small_scenes, tmp_path, ["late_mean"], train_options={"max_steps": 2, "dim": 8}, progress=False
    )
    r = doc["strategies"]["late_mean"]
    assert r["latency"] == {"error": "RuntimeError: Unsupported ONNX operator for this model"}
    assert r["accuracy"]["all"] >= 0
    assert "Unsupported ONNX operator" in compare_mod.format_table(doc)


def test_compare_names_an_unknown_strategy(small_scenes, tmp_path):
    from edgefuse.compare import compare
    from edgefuse.errors import EdgefuseError

    with pytest.raises(EdgefuseError, match=r"unknown fusion strategies \['nope'\]"):
        compare(small_scenes, tmp_path, fusions=["gated", "nope"])
