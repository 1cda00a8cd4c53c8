"""The `make demo` model's split INT8 bundle (an encoder per sensor + a masked head): every subset within a
point of FP32 and of the per-subset bundle, and every shipped scenario replayed through it with the same
guarantees as through the per-subset bundle."""

import pytest

from edgefuse.build import build_bundle
from edgefuse.data import load_sensorscenes

from ._scenarios import SCENARIOS, replay_and_check


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
    for p in replay_and_check(demo_split_bundle, data, path)["phases"]:
        assert all(e.startswith("head[") or e == "(none)" for e in p["engines"])  # one head serves every subset
