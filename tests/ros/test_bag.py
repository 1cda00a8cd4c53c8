"""ROS 2 bags: a scenario recorded by record_bag replays through the demo INT8 bundle as the scenario itself
does; bags in every storage form, foreign topic names, side-file labels, no labels, undecodable messages."""

import json

import numpy as np
import pytest

from edgefuse.data import load_sensorscenes
from edgefuse.runtime import Runtime
from edgefuse.runtime.scenario import ReplayClock, Scenario, replay

from ._msgs import TS

pytest.importorskip("rosbags", reason="the ROS 2 tests need rosbags (pip install 'edgefuse[ros]')")
from edgefuse.ros.bag import BagError, record_bag, replay_bag  # noqa: E402

# a camera dropout, then a radar NaN burst; each phase long enough to score 1 000 samples
SCENARIO = {
    "name": "camera dropout, radar NaN burst",
    "duration_s": 300.0,
    "faults": [
        {"sensor": "camera", "kind": "off", "start_s": 100.0, "end_s": 200.0},
        {"sensor": "radar", "kind": "nan", "fraction": 0.1, "start_s": 200.0, "end_s": 300.0},
    ],
}


@pytest.fixture(scope="module")
def data():
    return load_sensorscenes()


def _replay_toml(bundle, data, scenario):
    clock = ReplayClock()
    with Runtime.from_bundle(bundle, clock=clock, threads=1) as rt:
        return replay(rt, scenario, data["test"].inputs, data["test"].labels, clock)


def _replay_bag(bundle, path, **kw):
    clock = ReplayClock()
    with Runtime.from_bundle(bundle, clock=clock, threads=1) as rt:
        return replay_bag(rt, path, clock, **kw)


@pytest.mark.slow
def test_a_recorded_bag_replays_like_its_scenario(demo_bundle, data, tmp_path):
    scenario = Scenario.from_dict(SCENARIO, data.specs)
    test = data["test"]
    bag = tmp_path / "faults.mcap"
    desc = record_bag(scenario, data.specs, test.inputs, test.labels, bag, progress=False)
    assert bag.is_file() and desc["messages"]["/camera/image_raw"] == 30 * 200  # 100 s of 300 off
    want = _replay_toml(demo_bundle, data, scenario)
    got = _replay_bag(demo_bundle, bag)
    assert got["kind"] == "bag" and len(got["phases"]) == len(want["phases"]) == 3
    for g, w in zip(got["phases"], want["phases"]):
        assert g["name"] == w["name"] and (g["start_s"], g["end_s"]) == (w["start_s"], w["end_s"])
        assert g["engines"] == w["engines"], (g["name"], g["engines"], w["engines"])
        assert g["rejected"] == w["rejected"], g["name"]
        assert g["inferences"] == w["inferences"] == 1000
        assert abs(g["accuracy"] - w["accuracy"]) <= 0.01, (g["name"], g["accuracy"], w["accuracy"])
    assert got["phases"][2]["rejected"] == {"non_finite": 2000}  # every radar frame of the burst, at 20 Hz
    assert [s["to"] for p in got["phases"] for s in p["swaps"]] == [s["to"] for p in want["phases"] for s in p["swaps"]]


@pytest.fixture(scope="module")
def short_bag(data, tmp_path_factory):
    """30 s with the camera off from 10 to 20 s, as a single MCAP file."""
    doc = {
        "name": "short",
        "duration_s": 30.0,
        "faults": [{"sensor": "camera", "kind": "off", "start_s": 10.0, "end_s": 20.0}],
    }
    scenario = Scenario.from_dict(doc, data.specs)
    test = data["test"]
    out = tmp_path_factory.mktemp("bags")
    paths = {}
    for name in ("short.mcap", "short.db3", "short_dir"):
        record_bag(scenario, data.specs, test.inputs, test.labels, out / name, progress=False)
        paths[name] = out / name
    return scenario, paths


def test_mcap_db3_and_a_bag_folder_replay_the_same(tiny_bundle, short_bag):
    _, paths = short_bag
    assert (paths["short_dir"] / "metadata.yaml").is_file()
    runs = {k: _replay_bag(tiny_bundle, p) for k, p in paths.items()}
    first = runs["short.mcap"]
    assert [p["name"] for p in first["phases"]] == ["nominal", "camera off", "nominal"]
    assert "camera" not in next(iter(first["phases"][1]["live"]))
    for k, tl in runs.items():
        assert [p["engines"] for p in tl["phases"]] == [p["engines"] for p in first["phases"]], k
        assert [p["accuracy"] for p in tl["phases"]] == [p["accuracy"] for p in first["phases"]], k


def _foreign_bag(path, n=40, bad_at=(), label_topic=True):
    """A bag as a robot would record it: its own topic names, no edgefuse recording message; radar frames
    at ``bad_at`` indices have the wrong length."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ._msgs import T, header, image, multi_array, scan

    rng = np.random.default_rng(0)
    t0 = 1_800_000_000 * 10**9
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {
            "/front/image_raw": w.add_connection("/front/image_raw", "sensor_msgs/msg/Image", typestore=TS),
            "/scan": w.add_connection("/scan", "sensor_msgs/msg/LaserScan", typestore=TS),
            "/radar/cube": w.add_connection("/radar/cube", "std_msgs/msg/Float32MultiArray", typestore=TS),
        }
        if label_topic:
            conns["/labels"] = w.add_connection("/labels", "std_msgs/msg/Int32", typestore=TS)
        for i in range(n):
            ns = t0 + i * 100_000_000  # 10 Hz
            img = image(rng.random((16, 16, 3)).astype(np.float32), "32FC3")
            img.header = header(ns)
            sc = scan(rng.random(64) * 1.5, rng.random(64))
            sc.header = header(ns)
            radar = multi_array(rng.random(63 if i in bad_at else 64) * 10)
            for topic, msg in (("/front/image_raw", img), ("/scan", sc), ("/radar/cube", radar)):
                w.write(conns[topic], ns, TS.serialize_cdr(msg, msg.__msgtype__))
            if label_topic:
                lab = T["std_msgs/msg/Int32"](data=i % 6)
                w.write(conns["/labels"], ns + 50_000_000, TS.serialize_cdr(lab, lab.__msgtype__))
    return t0


TOPICS = {"camera": "/front/image_raw", "lidar": "/scan", "radar": "/radar/cube"}


def test_a_foreign_bag_needs_its_topics_and_names_what_it_has(tiny_bundle, tmp_path):
    _foreign_bag(tmp_path / "robot")
    with pytest.raises(
        BagError, match=r"say which topic feeds each sensor .*/front/image_raw \(sensor_msgs/msg/Image\)"
    ):
        _replay_bag(tiny_bundle, tmp_path / "robot")
    with pytest.raises(BagError, match=r"no topic /radar/points \(radar\) in the bag; it has .*/radar/cube"):
        _replay_bag(tiny_bundle, tmp_path / "robot", topics={**TOPICS, "radar": "/radar/points"})
    with pytest.raises(BagError, match=r"sensors \['sonar'\] the bundle does not have"):
        _replay_bag(tiny_bundle, tmp_path / "robot", topics={"sonar": "/scan"})


def test_a_foreign_bag_with_label_topic_undecodable_messages_and_no_labels(tiny_bundle, tmp_path):
    _foreign_bag(tmp_path / "robot", bad_at=(10, 11, 12))
    tl = _replay_bag(tiny_bundle, tmp_path / "robot", topics=TOPICS, labels="/labels")
    (p,) = tl["phases"]
    assert p["inferences"] == 40 and p["accuracy"] is not None
    assert tl["bag"]["topics"]["radar"]["undecodable"] == 3
    assert tl["counters"]["rejected"]["radar"] == {"undecodable": 3}
    assert any(
        c["sensor"] == "radar" and c["to"] == "DROPPED" and "field data" in c["reason"] for c in p["state_changes"]
    )
    # no labels: inferences at the slowest sensor's rate, no accuracy; windows cut the timeline
    tl = _replay_bag(tiny_bundle, tmp_path / "robot", topics=TOPICS, labels=None, phase_s=1.0)
    assert [p["accuracy"] for p in tl["phases"]] == [None] * len(tl["phases"])
    assert len(tl["phases"]) == 4 and sum(p["inferences"] for p in tl["phases"]) >= 38


def test_labels_from_a_side_file(tiny_bundle, tmp_path):
    t0 = _foreign_bag(tmp_path / "robot", label_topic=False)
    csv = tmp_path / "labels.csv"
    csv.write_text("stamp_ns,label\n" + "".join(f"{t0 + i * 100_000_000 + 50_000_000},{i % 6}\n" for i in range(40)))
    tl = _replay_bag(tiny_bundle, tmp_path / "robot", topics=TOPICS, labels=csv)
    assert tl["phases"][0]["inferences"] == 40 and tl["phases"][0]["accuracy"] is not None
    csv.write_text("time,label\n1,2\n")
    with pytest.raises(BagError, match=r"expected a CSV with columns stamp_ns,label, got \['time', 'label'\]"):
        _replay_bag(tiny_bundle, tmp_path / "robot", topics=TOPICS, labels=csv)


def test_record_bag_and_run_bag_from_the_command_line(tiny_bundle, tmp_path, capsys):
    from edgefuse.cli import main

    sc = tmp_path / "s.toml"
    sc.write_text(
        'name = "s"\nduration_s = 5.0\n[[faults]]\nsensor = "lidar"\nkind = "off"\nstart_s = 2.0\nend_s = 3.0\n'
    )
    out = tmp_path / "s.mcap"
    assert main(["record-bag", "--data", "sensorscenes", "--scenario", str(sc), "--out", str(out)]) == 0
    assert "recorded 's'" in capsys.readouterr().out
    assert main(["record-bag", "--data", "sensorscenes", "--scenario", str(sc), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    js = tmp_path / "t.json"
    assert main(["run", str(tiny_bundle), "--bag", str(out), "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "bag 's'" in text and "lidar off" in text
    timeline = json.loads(js.read_text())
    assert [p["name"] for p in timeline["phases"]] == ["nominal", "lidar off", "nominal"]
    assert main(["run", str(tiny_bundle), "--bag", str(out), "--scenario", str(sc)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["run", str(tiny_bundle), "--bag", str(out), "--topic", "camera"]) == 2
    assert "expected SENSOR=/topic/name" in capsys.readouterr().err
