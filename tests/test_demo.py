"""The model `make demo` trains (gated fusion, SensorScenes, default settings) and the INT8 bundle it builds:
the foundation's accuracy bar, and every shipped fault scenario replayed through the runtime, each phase within
3 points of the manifest accuracy of the engines it used. Training and building take about 1.5 minutes on 2
cores; the model is shared by pytest-xdist's workers (tests/conftest.py's demo_checkpoint)."""

import pytest

from edgefuse.checkpoint import load_checkpoint
from edgefuse.data import load_sensorscenes
from edgefuse.inference import subset_accuracy

from ._scenarios import SCENARIOS, replay_and_check


@pytest.fixture(scope="module")
def data():
    return load_sensorscenes()


@pytest.mark.slow
def test_gated_fusion_meets_the_sensorscenes_bar(demo_checkpoint, data):
    model, _ = load_checkpoint(demo_checkpoint)
    acc = subset_accuracy(model, data["test"])
    names = data.modality_names
    singles = {n: acc[n] for n in names}
    full = acc["+".join(names)]
    # all sensors beat the best single sensor by >= 5 points
    assert full >= max(singles.values()) + 0.05, acc
    # any one sensor missing: >= the best remaining single sensor - 1 point
    for drop in names:
        rest = [n for n in names if n != drop]
        assert acc["+".join(rest)] >= max(singles[n] for n in rest) - 0.01, (drop, acc)
    # each sensor alone beats chance (1/6), none alone is enough
    assert min(singles.values()) > 1 / 6 + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_phase_is_within_3_points_of_the_manifest(demo_bundle, data, path):
    phases = replay_and_check(demo_bundle, data, path)["phases"]
    assert len(phases) >= 3
    # the nominal phases and the faulted ones used different engines: swaps happened and were timed
    swaps = [s for p in phases for s in p["swaps"]]
    assert swaps and all(s["first_latency_ms"] > 0 for s in swaps if s["to"] != "(none)")


@pytest.mark.slow
def test_no_engine_of_the_demo_bundle_is_slower_than_its_fp32_engine_and_the_manifest_says_why(demo_bundle):
    import json

    m = json.loads((demo_bundle / "manifest.json").read_text())
    assert m["latency"]["source"] == "the build machine" and m["int8_quantization"]["min_weights"] == 8192
    for key, e in m["subsets"].items():
        lat = e["latency"]
        c = lat["candidates"]
        assert c["fp32"]["batch1"]["p50_us"] > 0 and c["int8"]["batch1"]["p50_us"] > 0, key
        assert c["fp32"]["accuracy"] == e["accuracy"]["fp32"] and c["int8"]["accuracy"] == e["accuracy"]["int8"]
        assert lat["chosen"] == e["precision"] and lat["why"], key
        assert c[lat["chosen"]]["batch1"]["p50_us"] <= c["fp32"]["batch1"]["p50_us"] * 1.05, key
