"""The model `make demo` trains (gated fusion, SensorScenes, default settings) and the INT8 bundle it builds:
the foundation's accuracy bar, and every shipped fault scenario replayed through the runtime, each phase within
3 points of the manifest accuracy of the engines it used. Training and building take about 1.5 minutes on 2
cores; the model is shared by pytest-xdist's workers (tests/conftest.py's demo_checkpoint)."""

from pathlib import Path

import pytest

from edgefuse.checkpoint import load_checkpoint
from edgefuse.data import load_sensorscenes
from edgefuse.data.sensorscenes import specs
from edgefuse.inference import subset_accuracy
from edgefuse.runtime import Runtime
from edgefuse.runtime.scenario import ReplayClock, Scenario, check_timeline, replay

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))


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
    test_split = data["test"]
    clock = ReplayClock()
    scenario = Scenario.from_toml(path, specs())
    with Runtime.from_bundle(demo_bundle, policy=scenario.policy, clock=clock, threads=1) as rt:
        timeline = replay(rt, scenario, test_split.inputs, test_split.labels, clock)
    assert check_timeline(timeline, max_drop=0.03) == []
    phases = timeline["phases"]
    assert len(phases) >= 3
    for p in phases:
        if p["faults"] and all(f.endswith(" off") for f in p["faults"]) and "camera+lidar+radar off" in p["faults"]:
            # every sensor lost: NO_SENSORS throughout, bar the first inference (a frame still within its timeout)
            assert p["statuses"].get("NO_SENSORS", 0) >= p["inferences"] - 1
        else:  # answered throughout, bar the readmission after all sensors were lost (0.25 s of hysteresis)
            assert p["answered"] >= p["inferences"] - 3 and p["answered"] >= 1900
    # the nominal phases and the faulted ones used different engines: swaps happened and were timed
    swaps = [s for p in phases for s in p["swaps"]]
    assert swaps and all(s["first_latency_ms"] > 0 for s in swaps if s["to"] != "(none)")
