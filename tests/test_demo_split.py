"""The `make demo` model's split INT8 bundle (an encoder per sensor + a masked head): every subset within a
point of FP32 and of the per-subset bundle, and every shipped scenario replayed through it with the same
guarantees as through the per-subset bundle."""

from pathlib import Path

import pytest

from edgefuse.build import build_bundle
from edgefuse.data import load_sensorscenes
from edgefuse.data.sensorscenes import specs
from edgefuse.runtime import Runtime
from edgefuse.runtime.scenario import ReplayClock, Scenario, check_timeline, replay

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))


@pytest.fixture(scope="module")
def data():
    return load_sensorscenes()


@pytest.fixture(scope="module")
def demo_split_bundle(demo_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "split"
    build_bundle(demo_checkpoint, out, backend="ort", precision="int8", gate_fail="fp32", split=True, progress=False)
    return out


@pytest.mark.slow
def test_the_split_int8_bundle_is_within_a_point_of_fp32_and_of_the_per_subset_bundle(demo_split_bundle, demo_bundle):
    from edgefuse.bundle import load_bundle
    from edgefuse.manifest import engine_accuracy

    split, per_subset = load_bundle(demo_split_bundle), load_bundle(demo_bundle)
    assert split.kind == "split" and list(split.subsets) == list(per_subset.subsets)
    for key, entry in split.subsets.items():
        built = engine_accuracy(entry)
        assert abs(built - entry["accuracy"]["fp32"]) <= 0.01 + 1e-9, (key, entry["accuracy"])
        assert abs(built - engine_accuracy(per_subset.subsets[key])) <= 0.01 + 1e-9, key


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_scenario_through_the_split_bundle_keeps_the_same_guarantees(demo_split_bundle, data, path):
    test_split = data["test"]
    clock = ReplayClock()
    scenario = Scenario.from_toml(path, specs())
    with Runtime.from_bundle(demo_split_bundle, policy=scenario.policy, clock=clock, threads=1) as rt:
        timeline = replay(rt, scenario, test_split.inputs, test_split.labels, clock)
    assert check_timeline(timeline, max_drop=0.03) == []
    for p in timeline["phases"]:
        if "camera+lidar+radar off" in p["faults"]:
            assert p["statuses"].get("NO_SENSORS", 0) >= p["inferences"] - 1
        else:
            assert p["answered"] >= p["inferences"] - 3 and p["answered"] >= 1900
            assert all(e.startswith("head[") or e == "(none)" for e in p["engines"])  # one head serves every subset
