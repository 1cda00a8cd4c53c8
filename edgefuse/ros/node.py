"""A ROS 2 node around the runtime: sensor topics in, results and per-sensor diagnostics out.

``edgefuse ros2 BUNDLE --config topics.toml`` (needs ``rclpy``, which a ROS 2 install provides):

.. code-block:: toml

    rate_hz = 10.0                      # infer at this rate; or trigger = "/topic" to infer per message
    result_topic = "/edgefuse/result"   # vision_msgs/Classification when installed, else JSON std_msgs/String
    diagnostics_topic = "/diagnostics"
    diagnostics_period_s = 1.0          # and at once whenever a sensor's health changes
    stamp = "header"                    # or "receive": the time the callback ran

    [sensors.camera]
    topic = "/front/image_raw"
    type = "sensor_msgs/msg/Image"
    options = { resize = true }         # the converter's (edgefuse.ros.convert)

Sensor topics are subscribed with the sensor-data QoS profile (best effort, depth 5). Each
message goes through its converter and is pushed into the runtime from the callback; a message
that does not convert is a rejected frame (``undecodable``). The runtime runs on the node's
clock (ROS time, so ``use_sim_time`` with ``ros2 bag play`` works). Diagnostics follow
``diagnostic_updater``'s form: one ``DiagnosticStatus`` per sensor named ``edgefuse: <sensor>``
with its topic as ``hardware_id``, level OK (LIVE), WARN (RECOVERING), ERROR (DROPPED) or
STALE (STALE), the state and its reason as the message, and key/values (state, age of the last
frame, accepted and rejected counts); and one ``edgefuse: runtime`` status (the engine, the
live sensors, the last result's status: OK, WARN when DEGRADED, ERROR with NO_SENSORS).

The logic is the ``FusionNode`` class; it takes the ``rclpy`` module as an argument, and the
tests drive it with a fake one. No real ROS 2 runs in this repository's tests.
"""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgefuse.errors import EdgefuseError
from edgefuse.ros.convert import UNDECODABLE, Context, ConversionError, get_converter, normalize_type, stamp_ns

#: runtime health -> DiagnosticStatus level name (diagnostic_msgs: OK 0, WARN 1, ERROR 2, STALE 3)
LEVELS = {"LIVE": "OK", "RECOVERING": "WARN", "DROPPED": "ERROR", "STALE": "STALE"}
RESULT_LEVELS = {"OK": "OK", "DEGRADED": "WARN", "NO_SENSORS": "ERROR"}


@dataclass
class SensorTopic:
    topic: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeConfig:
    """The node's settings; see the module docstring for the TOML form."""

    sensors: dict[str, SensorTopic]
    rate_hz: float | None = 10.0
    trigger: str | None = None
    trigger_type: str = "std_msgs/msg/Header"
    result_topic: str = "/edgefuse/result"
    diagnostics_topic: str = "/diagnostics"
    diagnostics_period_s: float = 1.0
    stamp: str = "header"
    node_name: str = "edgefuse"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "config") -> "NodeConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise EdgefuseError(f"{where}: unknown keys {unknown}; expected some of {sorted(known)}")
        sensors = {}
        for name, s in (doc.get("sensors") or {}).items():
            if not isinstance(s, Mapping) or "topic" not in s or "type" not in s:
                raise EdgefuseError(
                    f'{where}: [sensors.{name}] needs topic = "/..." and type = "pkg/msg/Type", got {s}'
                )
            sensors[name] = SensorTopic(str(s["topic"]), normalize_type(str(s["type"])), dict(s.get("options", {})))
        if not sensors:
            raise EdgefuseError(f"{where}: no [sensors.<name>] tables; give each sensor's topic and type")
        rest = {k: v for k, v in doc.items() if k != "sensors"}
        cfg = cls(sensors=sensors, **rest)
        if cfg.trigger is None and not (isinstance(cfg.rate_hz, (int, float)) and cfg.rate_hz > 0):
            raise EdgefuseError(f"{where}: give rate_hz > 0 or a trigger topic, got rate_hz={cfg.rate_hz!r}")
        if cfg.stamp not in ("header", "receive"):
            raise EdgefuseError(f"{where}: stamp must be 'header' or 'receive', got {cfg.stamp!r}")
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> "NodeConfig":
        from edgefuse.runtime.policy import read_toml

        return cls.from_dict(read_toml(path), where=str(path))


def import_message(msgtype: str) -> Any:
    """The Python class of ``pkg/msg/Type`` (``from pkg.msg import Type``)."""
    pkg, sub, name = normalize_type(msgtype).split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError):
        raise EdgefuseError(f"message type {msgtype} is not installed (source your ROS 2 workspace)") from None


class FusionNode:
    """The runtime as a ROS 2 node (see the module docstring). ``rclpy``: the module (or a stand-in);
    ``resolve``: message type name -> class (default: import it)."""

    def __init__(
        self,
        rclpy: Any,
        bundle: str | Path,
        config: NodeConfig,
        policy: Any = None,
        resolve: Callable[[str], Any] = import_message,
        **engine_kwargs: Any,
    ) -> None:
        from edgefuse.runtime import Runtime

        self.rclpy, self.config, self.resolve = rclpy, config, resolve
        self.node = rclpy.create_node(config.node_name)
        clock = self.node.get_clock()
        self.runtime = Runtime.from_bundle(
            bundle, policy=policy, clock=lambda: clock.now().nanoseconds / 1e9, **engine_kwargs
        )
        try:
            names = self.runtime.names
            unknown = sorted(set(config.sensors) - set(names))
            if unknown:
                raise EdgefuseError(f"config names sensors {unknown} the bundle does not have; it has {names}")
            specs = {s.name: s for s in self.runtime.specs}
            self.contexts = {n: Context(t.topic, specs[n], t.options) for n, t in config.sensors.items()}
            self.converters = {n: get_converter(t.type, t.topic) for n, t in config.sensors.items()}
            self.msg = {
                k: resolve(k)
                for k in (
                    "diagnostic_msgs/msg/DiagnosticArray",
                    "diagnostic_msgs/msg/DiagnosticStatus",
                    "diagnostic_msgs/msg/KeyValue",
                    "std_msgs/msg/Header",
                    "std_msgs/msg/String",
                )
            }
            try:
                self.classification = resolve("vision_msgs/msg/Classification")
                self.hypothesis = resolve("vision_msgs/msg/ObjectHypothesis")
            except EdgefuseError:
                self.classification = self.hypothesis = None
            sensor_qos = rclpy.qos.qos_profile_sensor_data
            self.subscriptions = [
                self.node.create_subscription(resolve(t.type), t.topic, self._callback(n), sensor_qos)
                for n, t in config.sensors.items()
            ]
            self.result_pub = self.node.create_publisher(
                self.classification or self.msg["std_msgs/msg/String"], config.result_topic, 10
            )
            self.diag_pub = self.node.create_publisher(
                self.msg["diagnostic_msgs/msg/DiagnosticArray"], config.diagnostics_topic, 10
            )
            if config.trigger:
                self.subscriptions.append(
                    self.node.create_subscription(
                        resolve(config.trigger_type), config.trigger, lambda _m: self.infer(), 10
                    )
                )
            self.timers = [self.node.create_timer(config.diagnostics_period_s, self.publish_diagnostics)]
            if not config.trigger:
                self.timers.append(self.node.create_timer(1.0 / config.rate_hz, self.infer))
        except BaseException:
            self.runtime.close()
            raise
        self.last = None
        self._changed = threading.Event()
        self.runtime.add_listener(self._on_event)

    # ---- callbacks ----------------------------------------------------------------------------
    def _callback(self, sensor: str) -> Callable[[Any], None]:
        ctx, conv = self.contexts[sensor], self.converters[sensor]

        def on_message(msg: Any) -> None:
            try:
                frame = conv(msg, ctx)
            except ConversionError as e:
                self.runtime.fault(sensor, UNDECODABLE, str(e))
                self.node.get_logger().warning(str(e))
                return
            if frame is None:
                return
            ns = stamp_ns(msg) if self.config.stamp == "header" else None
            self.runtime.push(sensor, frame, None if ns is None else ns / 1e9)

        return on_message

    def _on_event(self, event: Any) -> None:  # under the runtime's lock: only note it
        if event.kind == "state":
            self._changed.set()

    def infer(self) -> Any:
        """Infer on the latest frames, publish the result (and the diagnostics if a sensor's health changed)."""
        r = self.runtime.infer()
        self.last = r
        self.result_pub.publish(self.result_message(r))
        if self._changed.is_set():
            self.publish_diagnostics()
        return r

    # ---- messages -----------------------------------------------------------------------------
    def _header(self) -> Any:
        return self.msg["std_msgs/msg/Header"](
            stamp=self.node.get_clock().now().to_msg(), frame_id=self.config.node_name
        )

    def result_message(self, r: Any) -> Any:
        if self.classification is not None and r.answered:
            probs = r.probabilities
            hyps = [self.hypothesis(class_id=str(c), score=float(p)) for c, p in zip(self.runtime.class_names, probs)]
            hyps.sort(key=lambda h: -h.score)
            return self.classification(header=self._header(), results=hyps)
        if self.classification is not None:
            return self.classification(header=self._header(), results=[])
        return self.msg["std_msgs/msg/String"](data=json.dumps(r.to_dict()))

    def diagnostics(self) -> Any:
        """The DiagnosticArray of the runtime's state now."""
        Status, KeyValue = self.msg["diagnostic_msgs/msg/DiagnosticStatus"], self.msg["diagnostic_msgs/msg/KeyValue"]
        st = self.runtime.status()
        out = []
        for name in self.runtime.names:
            s = st["sensors"][name]
            age = s["last_frame_age_s"]
            topic = self.config.sensors[name].topic if name in self.config.sensors else "(not subscribed)"
            values = {
                "state": s["state"],
                "since": f"{s['since']:.3f}",
                "last_frame_age_s": "never" if age is None else f"{age:.3f}",
                "accepted": str(s["accepted"]),
                "rejected": ", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "0",
                "topic": topic,
            }
            out.append(
                Status(
                    level=getattr(Status, LEVELS[s["state"]]),
                    name=f"{self.config.node_name}: {name}",
                    message=f"{s['state']}: {s['reason']}" if s["reason"] else s["state"],
                    hardware_id=topic,
                    values=[KeyValue(key=k, value=v) for k, v in values.items()],
                )
            )
        r = self.last
        level = "STALE" if r is None else RESULT_LEVELS[r.status.value]
        values = {
            "engine": str(st["engine"]),
            "live": "+".join(st["live"]) or "(none)",
            "swaps": str(st["counters"]["swaps"]),
            "inferences": str(sum(st["counters"]["inferences"].values())),
        }
        out.append(
            Status(
                level=getattr(Status, level),
                name=f"{self.config.node_name}: runtime",
                message="no inference yet" if r is None else (r.status.value + (f": {r.reason}" if r.reason else "")),
                hardware_id=str(self.runtime.source),
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        )
        return self.msg["diagnostic_msgs/msg/DiagnosticArray"](header=self._header(), status=out)

    def publish_diagnostics(self) -> None:
        self._changed.clear()
        self.diag_pub.publish(self.diagnostics())

    def close(self) -> None:
        self.runtime.remove_listener(self._on_event)
        self.runtime.close()
        self.node.destroy_node()


def run_node(bundle: str | Path, config: NodeConfig, policy: Any = None, **engine_kwargs: Any) -> int:
    """``rclpy.init``, the node, ``rclpy.spin`` until Ctrl-C, shutdown."""
    try:
        import rclpy
        import rclpy.qos  # noqa: F401
    except ImportError:
        raise EdgefuseError(
            "edgefuse ros2 needs rclpy, which ROS 2 provides: source your ROS 2 setup (e.g. "
            "/opt/ros/humble/setup.bash) in this shell, with edgefuse installed in the same Python"
        ) from None
    rclpy.init()
    node = None
    try:
        node = FusionNode(rclpy, bundle, config, policy, **engine_kwargs)
        rclpy.spin(node.node)
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.close()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
