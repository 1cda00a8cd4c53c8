"""`edgefuse compare`: every strategy `edgefuse fusions` lists, trained, measured and exported; cached per strategy."""

from __future__ import annotations

import numpy as np
import pytest

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


def test_compare_covers_every_strategy_and_resumes(small_scenes, tmp_path):
    """Every strategy `edgefuse fusions` lists is trained (a few steps), measured and exported, or says why not."""
    from edgefuse.compare import compare, format_table, write_outputs
    from edgefuse.fusion import FAMILIES

    opts = {"max_steps": 3, "dim": 16}
    doc = compare(small_scenes, tmp_path, train_options=opts, calib_size=32, latency_iters=5, progress=False)
    assert list(doc["strategies"]) == list(FAMILIES)
    for name, r in doc["strategies"].items():
        assert set(r["accuracy"]) == {"all", "without camera", "without lidar", "without radar"}, name
        assert 0 <= r["robustness_auc"]["drop"] <= 1 and r["params"] > 0 and r["macs_per_frame"] > 0, name
        lat = r["latency"]
        assert ("error" in lat and lat["error"]) or (lat["fp32_p50_us"] > 0 and lat["int8_p50_us"] > 0), name
    exported = [n for n, r in doc["strategies"].items() if "error" not in r["latency"]]
    assert len(exported) == len(FAMILIES), {n: r["latency"] for n, r in doc["strategies"].items()}
    paths = write_outputs(doc, tmp_path)
    assert _png(tmp_path / "accuracy_latency.png") and _png(tmp_path / "pca.png") and len(paths) == 4
    table = format_table(doc)
    assert table.count("\n") == len(FAMILIES) + 2
    before = (tmp_path / "strategies" / "gated.json").stat().st_mtime_ns
    again = compare(small_scenes, tmp_path, fusions=["gated"], train_options=opts, calib_size=32, progress=False)
    assert (tmp_path / "strategies" / "gated.json").stat().st_mtime_ns == before  # resumed, not retrained
    assert again["strategies"]["gated"]["accuracy"] == doc["strategies"]["gated"]["accuracy"]
    pca = np.load(tmp_path / "strategies" / "gated.features.npz")["pca"]
    assert pca.shape == (len(small_scenes["test"]), 2)


def test_compare_names_an_unknown_strategy(small_scenes, tmp_path):
    from edgefuse.compare import compare
    from edgefuse.errors import EdgefuseError

    with pytest.raises(EdgefuseError, match=r"unknown fusion strategies \['nope'\]"):
        compare(small_scenes, tmp_path, fusions=["gated", "nope"])
