"""ROS 2 bags (MCAP or SQLite ``.db3``) in and out: replay a recording through a runtime, record a scenario.

Reading and writing use ``rosbags`` (pure Python; no ROS install). A bag replays on simulated
time: each message reaches the runtime at its time in the bag (its receive time), stamped with
its ``header.stamp`` (``stamp="receive"``: with the receive time; messages without a header
always are), after its topic's converter (``edgefuse.ros.convert``) made it a frame. A message
that does not convert is a rejected frame of its sensor (reason ``undecodable``, the
converter's message as the detail).

The runtime infers at each label (a ``std_msgs/Int32`` topic, or a CSV side file of
``stamp_ns,label`` rows) and scores the answer against it; without labels, at ``infer_rate_hz``
(default: the slowest sensor's rate) and the timeline shows predictions, swaps and health alone.
Phases come from a ``std_msgs/String`` topic whose messages (JSON ``{"faults": [...]}``) each
start one, or from ``phase_s`` windows; without either the recording is one phase.

``record_bag`` writes a scenario's streams (the frames ``edgefuse run --scenario`` would push,
with their capture stamps and arrival times, its faults included) as such a bag, with a label
topic, a phase topic and a ``/edgefuse/recording`` message describing it, so that the bag
replays like the scenario: see ``docs/ros.md``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError
from edgefuse.ros.convert import UNDECODABLE, Context, ConversionError, get_converter, stamp_ns
from edgefuse.runtime.scenario import INFER, PHASE, PUSH, Scenario, Step, check_clock, drive, scenario_steps
from edgefuse.specs import ModalitySpec

#: the topics edgefuse's own recordings carry besides the sensors'
LABEL_TOPIC, PHASE_TOPIC, RECORDING_TOPIC = "/edgefuse/label", "/edgefuse/phase", "/edgefuse/recording"
#: a recording's clock starts here (ns since the epoch) unless told otherwise
DEFAULT_ORIGIN_NS = 1_700_000_000 * 10**9


class BagError(EdgefuseError):
    """A bag that cannot be read or replayed as asked (a missing topic, no converter, a bad side file)."""


def _rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise EdgefuseError("reading and writing ROS 2 bags needs rosbags: pip install 'edgefuse[ros]'") from None
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def default_topic(spec: ModalitySpec) -> tuple[str, str]:
    """The topic and message type ``record_bag`` uses for a modality, by its kind and shape."""
    if spec.kind == "image" and len(spec.shape) == 3 and spec.shape[0] in (1, 3, 4):
        return f"/{spec.name}/image_raw", "sensor_msgs/msg/Image"
    if len(spec.shape) == 2 and spec.shape[0] in (1, 2) and spec.dtype == "float32":
        return f"/{spec.name}/scan", "sensor_msgs/msg/LaserScan"
    return f"/{spec.name}/data", "std_msgs/msg/Float32MultiArray"


# ---- writing ------------------------------------------------------------------------------------
class _Messages:
    """Frames to ROS 2 messages of the types ``default_topic`` picks."""

    def __init__(self, ts, image_encoding: str) -> None:
        self.ts, self.t = ts, ts.types
        if image_encoding not in ("32FC", "8UC"):
            raise EdgefuseError(f"image_encoding must be '32FC' (exact) or '8UC' (8 bits), got {image_encoding!r}")
        self.image_encoding = image_encoding

    def header(self, ns: int, frame_id: str):
        t = self.t
        return t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id
        )

    def frame(self, msgtype: str, spec: ModalitySpec, x: np.ndarray, ns: int):
        t = self.t
        if msgtype == "sensor_msgs/msg/Image":
            c, h, w = x.shape if x.ndim == 3 else (1, *x.shape[-2:])
            hwc = np.moveaxis(x.reshape(c, h, w), 0, -1)
            if self.image_encoding == "8UC" and x.dtype != np.float64:
                lo, hi = spec.value_range or (0.0, 1.0)
                hwc = np.clip(np.nan_to_num((hwc - lo) / (hi - lo) * 255.0 + 0.5), 0, 255).astype(np.uint8)
                enc = "rgb8" if c == 3 else "rgba8" if c == 4 else "mono8"
            else:  # float64 frames (a wrong-dtype fault) stay float64: the bag shows what the sensor sent
                hwc = hwc.astype(np.float64 if x.dtype == np.float64 else np.float32)
                enc = f"{64 if hwc.dtype == np.float64 else 32}FC{c}"
            data = np.ascontiguousarray(hwc).view(np.uint8).reshape(-1)
            return t[msgtype](
                header=self.header(ns, spec.name),
                height=h,
                width=w,
                encoding=enc,
                is_bigendian=0,
                step=w * c * hwc.dtype.itemsize,
                data=data,
            )
        if msgtype == "sensor_msgs/msg/LaserScan":
            n = x.shape[-1]
            lo, hi = spec.value_range or (0.0, float("inf"))
            return t[msgtype](
                header=self.header(ns, spec.name),
                angle_min=-math.pi,
                angle_max=math.pi - 2 * math.pi / n,
                angle_increment=2 * math.pi / n,
                time_increment=0.0,
                scan_time=1.0 / spec.rate_hz,
                range_min=float(lo),
                range_max=float(hi),
                ranges=np.ascontiguousarray(x[0], dtype=np.float32),
                intensities=np.ascontiguousarray(x[1] if x.shape[0] > 1 else np.zeros(0), dtype=np.float32),
            )
        wide = x.dtype == np.float64
        dims = [
            t["std_msgs/msg/MultiArrayDimension"](label=f"d{i}", size=int(d), stride=0) for i, d in enumerate(x.shape)
        ]
        layout = t["std_msgs/msg/MultiArrayLayout"](dim=dims, data_offset=0)
        kind = "std_msgs/msg/Float64MultiArray" if wide else msgtype
        return kind, t[kind](
            layout=layout, data=np.ascontiguousarray(x.reshape(-1), dtype=x.dtype if wide else np.float32)
        )

    def string(self, text: str):
        return self.t["std_msgs/msg/String"](data=text)

    def int32(self, v: int):
        return self.t["std_msgs/msg/Int32"](data=int(v))


def record_bag(
    scenario: Scenario,
    specs: Sequence[ModalitySpec],
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    out: str | Path,
    topics: Mapping[str, str] | None = None,
    image_encoding: str = "32FC",
    origin_ns: int = DEFAULT_ORIGIN_NS,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``scenario`` over ``inputs``/``labels`` as a ROS 2 bag at ``out``: ``X.mcap`` or ``X.db3`` a
    single file, any other path a rosbag2 directory (``metadata.yaml`` and an MCAP file). Returns the
    recording's description (also in the bag, on ``/edgefuse/recording``)."""
    ts = _rosbags()
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm.auto import tqdm

    from edgefuse.runtime.scenario import check_inputs, sample_period

    out = Path(out)
    if out.exists():
        raise EdgefuseError(f"{out} exists; record_bag writes a new bag and does not overwrite")
    check_inputs(specs, inputs, labels)
    kinds = {s.name: default_topic(s) for s in specs}
    topic_of = {n: (topics or {}).get(n, kinds[n][0]) for n in kinds}
    single = out.suffix in (".mcap", ".db3")
    plugin = StoragePlugin.SQLITE3 if out.suffix == ".db3" else StoragePlugin.MCAP
    msgs = _Messages(ts, image_encoding)
    description = {
        "format": "edgefuse-recording/1",
        "scenario": scenario.to_dict(),
        "origin_ns": origin_ns,
        "duration_s": scenario.duration_s,
        "sample_period_s": sample_period(scenario, specs),
        "samples": int(labels.shape[0]),
        "topics": {n: {"topic": topic_of[n], "type": kinds[n][1]} for n in kinds},
        "labels": LABEL_TOPIC,
        "phases": PHASE_TOPIC,
        "image_encoding": image_encoding,
    }
    by_name = {s.name: s for s in specs}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="edgefuse-bag.", dir=out.parent if out.parent.exists() else None) as tmp:
        bag_dir = Path(tmp) / (out.stem if single else out.name)
        with Writer(bag_dir, version=9, storage_plugin=plugin) as w:
            conns: dict[tuple[str, str], Any] = {}

            def write(topic: str, msgtype: str, msg: Any, ns: int) -> None:
                key = (topic, msgtype)
                if key not in conns:
                    conns[key] = w.add_connection(topic, msgtype, typestore=ts)
                w.write(conns[key], ns, ts.serialize_cdr(msg, msgtype))
                counts[topic] = counts.get(topic, 0) + 1

            write(RECORDING_TOPIC, "std_msgs/msg/String", msgs.string(json.dumps(description)), origin_ns)
            bar = tqdm(total=scenario.duration_s, desc="record bag", unit="s", disable=not progress, mininterval=0.5)
            for step in scenario_steps(scenario, specs, inputs, labels):
                ns = origin_ns + round(step.t * 1e9)
                if step.what == PHASE:
                    write(PHASE_TOPIC, "std_msgs/msg/String", msgs.string(json.dumps({"faults": step.payload})), ns)
                elif step.what == INFER:
                    write(LABEL_TOPIC, "std_msgs/msg/Int32", msgs.int32(step.payload), ns)
                else:
                    sensor, frame, stamp = step.payload
                    frame = np.asarray(frame)
                    made = msgs.frame(kinds[sensor][1], by_name[sensor], frame, origin_ns + round(stamp * 1e9))
                    msgtype, msg = made if isinstance(made, tuple) else (kinds[sensor][1], made)
                    write(topic_of[sensor], msgtype, msg, ns)
                if step.t - bar.n >= 1.0:
                    bar.update(step.t - bar.n)
            bar.close()
        if single:
            files = [p for p in bag_dir.iterdir() if p.suffix == out.suffix]
            if len(files) != 1:
                raise EdgefuseError(f"expected one {out.suffix} file in the written bag, found {files}")
            shutil.move(str(files[0]), out)
        else:
            shutil.move(str(bag_dir), out)
    description["messages"] = counts
    return description


# ---- reading ------------------------------------------------------------------------------------
@dataclass
class BagInfo:
    """What a replay found in the bag."""

    path: str
    topics: dict[str, dict[str, Any]]  # sensor -> topic, type, messages, undecodable
    recording: dict[str, Any] | None  # /edgefuse/recording, when edgefuse wrote the bag
    labels: str | None
    origin_ns: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_topics(items: Sequence[str]) -> dict[str, str]:
    """``["camera=/front/image_raw", ...]`` -> ``{"camera": "/front/image_raw"}``."""
    out = {}
    for item in items:
        sensor, sep, topic = item.partition("=")
        if not sep or not sensor or not topic.startswith("/"):
            raise EdgefuseError(f"--topic: expected SENSOR=/topic/name, got {item!r}")
        out[sensor] = topic
    return out


def _read_labels_file(path: Path) -> list[tuple[int, int]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise BagError(f"labels file {path}: {e.strerror}") from None
    if not rows or not {"stamp_ns", "label"} <= set(rows[0]):
        raise BagError(
            f"labels file {path}: expected a CSV with columns stamp_ns,label, got "
            f"{list(rows[0]) if rows else 'no rows'}"
        )
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            out.append((int(r["stamp_ns"]), int(r["label"])))
        except ValueError:
            raise BagError(f"labels file {path}, line {i}: expected integers, got {r}") from None
    return sorted(out)


def bag_steps(
    path: str | Path,
    specs: Sequence[ModalitySpec],
    topics: Mapping[str, str] | None = None,
    stamp: str = "header",
    labels: str | Path | None = None,
    infer_rate_hz: float | None = None,
    phase_s: float | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Iterator[Step], BagInfo]:
    """The replay steps of the bag at ``path`` and what it holds. ``topics``: sensor -> topic (default:
    those the recording names, for bags edgefuse wrote). ``labels``: a topic of the bag, or a CSV file
    (default: the recording's label topic when there is one). ``options``: per sensor, its converter's."""
    ts = _rosbags()
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if stamp not in ("header", "receive"):
        raise BagError(f"stamp must be 'header' or 'receive', got {stamp!r}")
    reader = AnyReader([path], default_typestore=ts)
    reader.open()
    try:
        by_topic = {c.topic: c for c in reader.connections}
        recording = None
        if RECORDING_TOPIC in by_topic:
            for c, _, raw in reader.messages(connections=[by_topic[RECORDING_TOPIC]]):
                recording = json.loads(reader.deserialize(raw, c.msgtype).data)
                break
        if topics is None:
            if recording is None:
                raise BagError(
                    f"{path}: say which topic feeds each sensor (--topic SENSOR=/topic); the bag has "
                    + ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(by_topic.items()))
                )
            topics = {n: v["topic"] for n, v in recording["topics"].items()}
        names = [s.name for s in specs]
        unknown = sorted(set(topics) - set(names))
        if unknown:
            raise BagError(f"--topic names sensors {unknown} the bundle does not have; it has {names}")
        missing = [f"{t} ({n})" for n, t in topics.items() if t not in by_topic]
        if missing:
            raise BagError(
                f"{path}: no topic {', '.join(missing)} in the bag; it has "
                + ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(by_topic.items()))
            )
        spec_of = {s.name: s for s in specs}
        sensor_of = {t: n for n, t in topics.items()}
        convs = {}
        for n, t in topics.items():
            try:
                convs[t] = get_converter(by_topic[t].msgtype, t)
            except ConversionError as e:
                raise BagError(str(e)) from None
        ctxs = {t: Context(t, spec_of[n], dict((options or {}).get(n, {}))) for n, t in topics.items()}
        origin = int(recording["origin_ns"]) if recording else int(reader.start_time)
        if labels is None and recording is not None:
            labels = recording.get("labels")
        label_topic = str(labels) if isinstance(labels, str) and labels.startswith("/") else None
        label_rows = _read_labels_file(Path(labels)) if labels is not None and label_topic is None else None
        if label_topic is not None and label_topic not in by_topic:
            raise BagError(f"{path}: no label topic {label_topic} in the bag")
        phase_topic = PHASE_TOPIC if PHASE_TOPIC in by_topic and phase_s is None else None
        end_ns = max(int(reader.end_time), label_rows[-1][0] + 1 if label_rows else 0)  # after the last message
        duration = float(recording["duration_s"]) if recording else (end_ns - origin) / 1e9
        info = BagInfo(
            str(path),
            {n: {"topic": t, "type": by_topic[t].msgtype, "messages": 0, "undecodable": 0} for n, t in topics.items()},
            recording,
            label_topic or (str(labels) if labels is not None else None),
            origin,
            duration,
        )
        order = {n: i for i, n in enumerate(names)}
        conns = [by_topic[t] for t in [*topics.values(), *(x for x in (label_topic, phase_topic) if x)]]
        if label_topic is None and label_rows is None:
            rate = infer_rate_hz or min(s.rate_hz for s in specs)
            infers: Iterator[tuple[float, int | None]] = ((k / rate - 1e-6, None) for k in range(1, 1 << 62))
        else:
            infers = iter([((ns - origin) / 1e9, y) for ns, y in label_rows] if label_rows else [])
    except BaseException:
        reader.close()
        raise

    def steps() -> Iterator[Step]:
        try:
            pending = next(infers, None)
            next_window = phase_s
            if phase_s is not None:
                yield Step(0.0, PHASE, ["window 1"])
            group: list[tuple[int, int, Step]] = []
            group_t = None

            def flush() -> Iterator[Step]:
                group.sort(key=lambda g: (g[0], g[1]))
                for _, _, s in group:
                    yield s
                group.clear()

            for c, ns, raw in reader.messages(connections=conns):
                t = (ns - origin) / 1e9
                if group_t is not None and ns != group_t:
                    yield from flush()
                group_t = ns
                due = []
                while pending is not None and pending[0] < t:  # labels from a file and rate ticks, in time
                    due.append(pending)
                    pending = next(infers, None)
                if due:
                    yield from flush()
                    for tt, y in due:
                        yield Step(tt, INFER, y)
                while next_window is not None and next_window <= t:
                    yield from flush()
                    yield Step(next_window, PHASE, [f"window {int(round(next_window / phase_s)) + 1}"])
                    next_window += phase_s
                msg = reader.deserialize(raw, c.msgtype)
                if c.topic == phase_topic:
                    group.append((PHASE, 0, Step(t, PHASE, list(json.loads(msg.data).get("faults", [])))))
                elif c.topic == label_topic:
                    group.append((INFER, 0, Step(t, INFER, int(msg.data))))
                else:
                    sensor = sensor_of[c.topic]
                    info.topics[sensor]["messages"] += 1
                    try:
                        frame = convs[c.topic](msg, ctxs[c.topic])
                    except ConversionError as e:
                        info.topics[sensor]["undecodable"] += 1
                        group.append((PUSH, order[sensor], Step(t, PUSH, (sensor, UNDECODABLE, str(e)), False)))
                        continue
                    if frame is None:
                        continue
                    st = stamp_ns(msg) if stamp == "header" else None
                    stamp_t = t if st is None else (st - origin) / 1e9
                    group.append((PUSH, order[sensor], Step(t, PUSH, (sensor, frame, stamp_t))))
            yield from flush()
            while pending is not None and pending[0] < duration:
                yield Step(pending[0], INFER, pending[1])
                pending = next(infers, None)
        finally:
            reader.close()

    return steps(), info


def replay_bag(
    runtime,
    path: str | Path,
    clock,
    topics: Mapping[str, str] | None = None,
    stamp: str = "header",
    labels: str | Path | None = None,
    infer_rate_hz: float | None = None,
    phase_s: float | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    on_phase: Callable[[dict[str, Any]], None] | None = None,
    on_infer: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Replay the bag at ``path`` through ``runtime`` (built with ``clock``, a ReplayClock); returns the
    timeline, in the format of ``edgefuse.runtime.scenario.replay``'s plus a ``bag`` section."""
    check_clock(runtime, clock)
    steps, info = bag_steps(path, runtime.specs, topics, stamp, labels, infer_rate_hz, phase_s, options)
    timeline = drive(runtime, steps, clock, info.duration_s, on_phase, on_infer)
    rec = info.recording or {}
    scenario = rec.get("scenario") or {"name": Path(path).name, "description": "", "duration_s": info.duration_s}
    return {
        "kind": "bag",
        "scenario": {**scenario, "duration_s": info.duration_s},
        "bag": info.to_dict(),
        "source": runtime.source,
        "realtime": clock.realtime,
        "samples": rec.get("samples"),
        "sample_period_s": rec.get("sample_period_s"),
        "labels": sum(p["inferences"] for p in timeline["phases"]) if info.labels else 0,
        **timeline,
    }
