import numpy as np

from edgefuse.data import load_sensorscenes
from edgefuse.data.sensorscenes import CLASS_NAMES, CONDITION_NAMES, generate, specs


def test_generation_is_seeded_and_matches_specs():
    a, b, c = generate(64, seed=3), generate(64, seed=3), generate(64, seed=4)
    for spec in specs():
        spec.check_array(a.inputs[spec.name])
        np.testing.assert_array_equal(a.inputs[spec.name], b.inputs[spec.name])
        assert not np.array_equal(a.inputs[spec.name], c.inputs[spec.name])
    np.testing.assert_array_equal(a.labels, b.labels)


def test_dataset_has_all_classes_conditions_and_splits():
    d = load_sensorscenes(sizes={"train": 600, "val": 100, "test": 100})
    assert len(CLASS_NAMES) >= 6 and d.num_classes == len(CLASS_NAMES)
    assert set(np.unique(d["train"].labels)) == set(range(d.num_classes))
    assert set(np.unique(d["train"].extras["condition"])) == set(range(len(CONDITION_NAMES)))
    assert [len(d[s]) for s in ("train", "val", "test")] == [600, 100, 100]
    # splits come from different seeds: no identical samples shared
    assert not np.array_equal(d["train"].inputs["radar"][:100], d["test"].inputs["radar"])


def test_conditions_degrade_different_sensors():
    s = generate(3000, seed=0)
    cond = np.array(CONDITION_NAMES)[s.extras["condition"]]
    cam_contrast = s.inputs["camera"].reshape(len(cond), -1).std(1)
    # night darkens and fog greys the camera: less contrast than in clear weather
    assert cam_contrast[cond == "night"].mean() < 0.6 * cam_contrast[cond == "clear"].mean()
    assert cam_contrast[cond == "fog"].mean() < 0.6 * cam_contrast[cond == "clear"].mean()
    # fog gives lidar spurious near returns (< 6 m) and weaker intensity
    near = (s.inputs["lidar"][:, 0] < 6.0 / 50.0).mean(1)
    assert near[cond == "fog"].mean() > near[cond == "clear"].mean() + 0.1
    inten = s.inputs["lidar"][:, 1].max(1)
    assert np.median(inten[cond == "fog"]) < 0.8 * np.median(inten[cond == "clear"])
    # clutter adds radar ghosts: a higher peak power than clear
    peak = s.inputs["radar"].max(1)
    assert np.median(peak[cond == "clutter"]) > np.median(peak[cond == "clear"])


def test_stratified_sample_keeps_class_proportions():
    d = load_sensorscenes(sizes={"train": 600, "val": 60, "test": 60})
    sample = d.stratified_sample("train", 120, seed=0)
    assert len(sample) == 120
    full = np.bincount(d["train"].labels, minlength=6) / 600
    part = np.bincount(sample.labels, minlength=6) / 120
    assert np.abs(full - part).max() < 0.02
