"""The ROS 2 node's logic driven by a fake rclpy: subscriptions with sensor-data QoS, results published per
inference, and a DiagnosticArray whose per-sensor level follows a sensor going silent and coming back.
No real ROS 2 runs here."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from edgefuse.errors import EdgefuseError
from edgefuse.ros.node import FusionNode, NodeConfig

from ._msgs import TS, T, header, image, multi_array, scan

pytest.importorskip("rosbags", reason="the ROS 2 tests need rosbags (pip install 'edgefuse[ros]')")
from rosbags.typesys import get_types_from_msg  # noqa: E402

# vision_msgs (Humble) is not in rosbags' store: its two messages, from their definitions
TS.register(get_types_from_msg("string class_id\nfloat64 score\n", "vision_msgs/msg/ObjectHypothesis"))
TS.register(
    get_types_from_msg(
        "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n", "vision_msgs/msg/Classification"
    )
)
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class FakeTime:
    def __init__(self, ns):
        self.nanoseconds = ns

    def to_msg(self):
        return T["builtin_interfaces/msg/Time"](sec=self.nanoseconds // 10**9, nanosec=self.nanoseconds % 10**9)


class FakePublisher:
    def __init__(self, msg_type, topic):
        self.msg_type, self.topic, self.sent = msg_type, topic, []

    def publish(self, msg):
        assert isinstance(msg, self.msg_type), (type(msg), self.msg_type)
        self.sent.append(msg)


class FakeNode:
    def __init__(self, name, clock):
        self.name, self.clock = name, clock
        self.subscriptions, self.publishers, self.timers = {}, {}, []
        self.destroyed = False

    def create_subscription(self, msg_type, topic, callback, qos):
        self.subscriptions[topic] = SimpleNamespace(msg_type=msg_type, callback=callback, qos=qos)
        return self.subscriptions[topic]

    def create_publisher(self, msg_type, topic, qos):
        self.publishers[topic] = FakePublisher(msg_type, topic)
        return self.publishers[topic]

    def create_timer(self, period, callback):
        self.timers.append(SimpleNamespace(period=period, callback=callback))
        return self.timers[-1]

    def get_clock(self):
        return SimpleNamespace(now=lambda: FakeTime(self.clock.ns))

    def get_logger(self):
        return logging.getLogger("fake-node")

    def destroy_node(self):
        self.destroyed = True


class FakeRclpy:
    """The part of rclpy the node uses; time is ``self.ns`` (ROS time, nanoseconds)."""

    def __init__(self):
        self.ns = 1_700_000_000 * 10**9
        self.qos = SimpleNamespace(qos_profile_sensor_data="sensor_data")
        self.nodes = []

    def create_node(self, name):
        self.nodes.append(FakeNode(name, self))
        return self.nodes[-1]


def resolve(msgtype):
    if msgtype not in TS.types:
        raise EdgefuseError(f"message type {msgtype} is not installed")
    return TS.types[msgtype]


CONFIG = {
    "rate_hz": 10.0,
    "sensors": {
        "camera": {"topic": "/front/image_raw", "type": "sensor_msgs/msg/Image"},
        "lidar": {"topic": "/scan", "type": "sensor_msgs/LaserScan"},
        "radar": {"topic": "/radar/cube", "type": "std_msgs/msg/Float32MultiArray"},
    },
}


class Robot:
    """Sensors publishing at their rates into the node's callbacks; the node's timers fire on time."""

    def __init__(self, rclpy, fusion, data):
        self.rclpy, self.fusion, self.data, self.t = rclpy, fusion, data, 0.0
        self.node = rclpy.nodes[0]
        self.silent: set[str] = set()
        self.next = {"camera": 0.0, "lidar": 0.0, "radar": 0.0, "infer": 0.1, "diag": 1.0}
        self.k = 0

    def message(self, sensor, ns):
        i = self.k % len(self.data["test"].labels)
        x = self.data["test"].inputs[sensor][i]
        if sensor == "camera":
            m = image(np.ascontiguousarray(np.moveaxis(x, 0, -1)), "32FC3")
        elif sensor == "lidar":
            m = scan(x[0], x[1])
            m.range_max = 10.0
        else:
            return multi_array(x)
        m.header = header(ns)
        return m

    def run_until(self, t_end):
        rates = {"camera": 30.0, "lidar": 10.0, "radar": 20.0, "infer": 10.0, "diag": 1.0}
        topics = {n: c["topic"] for n, c in CONFIG["sensors"].items()}
        while True:
            what = min(self.next, key=self.next.get)
            t = self.next[what]
            if t >= t_end:
                break
            self.rclpy.ns = 1_700_000_000 * 10**9 + round(t * 1e9)
            if what == "infer":
                self.node.timers[1].callback()
                self.k += 1
            elif what == "diag":
                self.node.timers[0].callback()
            elif what not in self.silent:
                self.node.subscriptions[topics[what]].callback(self.message(what, self.rclpy.ns))
            self.next[what] = round(t + 1.0 / rates[what], 9)

    def level(self, sensor):
        last = self.node.publishers["/diagnostics"].sent[-1]
        (st,) = [s for s in last.status if s.name == f"edgefuse: {sensor}"]
        return st


@pytest.fixture
def robot(tiny_bundle, small_scenes):
    rclpy = FakeRclpy()
    fusion = FusionNode(rclpy, tiny_bundle, NodeConfig.from_dict(CONFIG), resolve=resolve, threads=1)
    yield Robot(rclpy, fusion, small_scenes)
    fusion.close()


def test_the_node_subscribes_publishes_and_its_diagnostics_follow_a_sensor_going_silent_and_back(robot):
    node = robot.node
    assert {t: s.qos for t, s in node.subscriptions.items()} == {
        "/front/image_raw": "sensor_data",
        "/scan": "sensor_data",
        "/radar/cube": "sensor_data",
    }
    assert [t.period for t in node.timers] == [1.0, 0.1]
    robot.run_until(1.05)
    results = node.publishers["/edgefuse/result"].sent
    assert len(results) == 10 and all(len(r.results) == 6 for r in results)  # a Classification per inference
    assert results[-1].results[0].score >= results[-1].results[-1].score
    assert robot.level("lidar").level == OK and robot.level("runtime").level == OK
    assert robot.level("lidar").hardware_id == "/scan"
    values = {kv.key: kv.value for kv in robot.level("lidar").values}
    assert values["state"] == "LIVE" and int(values["accepted"]) == 11

    robot.silent.add("lidar")  # unplugged at 1.05 s: its last frame was at 1.0 s, timeout 0.2 s
    robot.run_until(1.35)
    st = robot.level("lidar")
    assert st.level == STALE and st.message.startswith("STALE: no valid frame for more than its timeout")
    diag_times = len(node.publishers["/diagnostics"].sent)
    assert diag_times >= 2  # the 1 s tick, and at once on the health change (not waiting for the next tick)
    robot.run_until(2.35)  # stale for more than drop_after_s (1 s) at 2.3 s: DROPPED, level ERROR
    assert robot.level("lidar").level == ERROR and robot.level("lidar").message.startswith("DROPPED")
    assert robot.level("camera").level == OK and robot.level("runtime").level == OK  # still answering

    robot.silent.clear()  # back: RECOVERING (WARN) until 5 valid frames over 0.25 s, then LIVE (OK)
    robot.run_until(2.45)
    assert robot.level("lidar").level == WARN and "RECOVERING" in robot.level("lidar").message
    robot.run_until(3.05)
    assert robot.level("lidar").level == OK
    levels = [
        [s.level for s in d.status if s.name == "edgefuse: lidar"][0] for d in node.publishers["/diagnostics"].sent
    ]
    assert levels[0] == OK and levels[-1] == OK
    assert [lv for i, lv in enumerate(levels) if i == 0 or lv != levels[i - 1]] == [OK, STALE, ERROR, WARN, OK]


def test_a_message_that_does_not_convert_is_a_rejected_frame(robot):
    robot.run_until(0.5)
    bad = scan(np.zeros(10), np.zeros(10))
    bad.header = header(robot.rclpy.ns)
    robot.node.subscriptions["/scan"].callback(bad)
    c = robot.fusion.runtime.counters()
    assert c["rejected"]["lidar"] == {"undecodable": 1}
    robot.node.timers[1].callback()
    st = robot.level("lidar")
    assert st.level == ERROR and "field ranges: expected 64 beams, got 10" in st.message


def test_without_vision_msgs_results_are_json_strings(tiny_bundle):
    import json

    def no_vision(msgtype):
        if msgtype.startswith("vision_msgs/"):
            raise EdgefuseError("not installed")
        return resolve(msgtype)

    rclpy = FakeRclpy()
    fusion = FusionNode(rclpy, tiny_bundle, NodeConfig.from_dict(CONFIG), resolve=no_vision, threads=1)
    try:
        fusion.infer()
        (msg,) = rclpy.nodes[0].publishers["/edgefuse/result"].sent
        assert json.loads(msg.data)["status"] == "NO_SENSORS"
    finally:
        fusion.close()
    assert rclpy.nodes[0].destroyed


def test_config_errors_are_clear(tiny_bundle, tmp_path):
    with pytest.raises(EdgefuseError, match=r"\[sensors.camera\] needs topic"):
        NodeConfig.from_dict({"sensors": {"camera": {"topic": "/x"}}})
    with pytest.raises(EdgefuseError, match=r"give rate_hz > 0 or a trigger topic"):
        NodeConfig.from_dict({**CONFIG, "rate_hz": 0})
    with pytest.raises(EdgefuseError, match=r"unknown keys \['rate'\]"):
        NodeConfig.from_dict({**CONFIG, "rate": 5})
    cfg = NodeConfig.from_dict(
        {**CONFIG, "sensors": {**CONFIG["sensors"], "sonar": {"topic": "/s", "type": "std_msgs/msg/Float32MultiArray"}}}
    )
    with pytest.raises(EdgefuseError, match=r"sensors \['sonar'\] the bundle does not have"):
        FusionNode(FakeRclpy(), tiny_bundle, cfg, resolve=resolve)
    p = tmp_path / "topics.toml"
    p.write_text('trigger = "/tick"\n[sensors.radar]\ntopic = "/r"\ntype = "std_msgs/Float32MultiArray"\n')
    assert NodeConfig.from_toml(p).sensors["radar"].type == "std_msgs/msg/Float32MultiArray"


def test_edgefuse_ros2_without_rclpy_says_what_to_do(tiny_bundle, tmp_path, capsys, monkeypatch):
    import sys

    from edgefuse.cli import main

    monkeypatch.setitem(sys.modules, "rclpy", None)  # as where no ROS 2 is sourced
    p = tmp_path / "topics.toml"
    p.write_text('[sensors.radar]\ntopic = "/r"\ntype = "std_msgs/msg/Float32MultiArray"\n')
    assert main(["ros2", str(tiny_bundle), "--config", str(p)]) == 2
    assert "needs rclpy, which ROS 2 provides" in capsys.readouterr().err
