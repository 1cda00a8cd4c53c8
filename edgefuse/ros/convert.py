"""From ROS messages to a modality's array: the built-in converters and the registry users add theirs to.

A converter takes one message and a ``Context`` (the topic, the modality's spec, the options
given for the topic, and a dict it may keep state in) and returns the frame, an array of the
spec's shape and dtype, or None while it has no frame yet (a windowed IMU). It reads fields
by name, so the same converter takes a message deserialized by ``rosbags`` from a bag and one
delivered by ``rclpy``. A message that cannot become a frame raises ``ConversionError``, whose
text names the topic and the field.

Built in (``ros2 interface show`` names; ROS 1 style ``sensor_msgs/Image`` is accepted too):

====================================  ============================================================
``sensor_msgs/msg/Image``             ``[C, H, W]``; 8/16-bit, float and Bayer-free encodings,
                                      BGR reordered to RGB, resized (bilinear) to the spec
``sensor_msgs/msg/CompressedImage``   the same, decoded with Pillow (JPEG, PNG)
``sensor_msgs/msg/LaserScan``         ``[C, L]``: ranges, then intensities when C = 2; +Inf is
                                      range_max and -Inf range_min (REP 117); NaN kept
``sensor_msgs/msg/PointCloud2``       ``mode = "range"``: ``[C, L]`` per azimuth bin the nearest
                                      range (and the largest intensity); ``mode = "bev"``:
                                      ``[C, H, W]`` bird's-eye grid of point count, highest z,
                                      largest intensity
``sensor_msgs/msg/Imu``               ``[6, L]``: a window of L samples of linear acceleration
                                      and angular velocity, one frame every ``hop`` samples
``std_msgs/msg/Float32MultiArray``    reshaped to the spec (also ``Float64MultiArray``)
====================================  ============================================================

Add one for any other type::

    from edgefuse.ros import converter

    @converter("my_msgs/msg/RadarCube")
    def radar_cube(msg, ctx):
        return np.asarray(msg.cells, dtype=np.float32).reshape(ctx.spec.shape)

or from an installed package, through the ``edgefuse.converters`` entry point group (each
entry point names a module or function whose import registers converters).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec

#: the reason a runtime records for a message that did not become a frame
UNDECODABLE = "undecodable"


class ConversionError(EdgefuseError):
    """A message that cannot become the modality's frame; the text names the topic and the field."""


@dataclass
class Context:
    """What a converter knows besides the message: the topic, the modality, the topic's options
    (from the command line or the node's config), and ``state`` it may keep between messages."""

    topic: str
    spec: ModalitySpec
    options: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def fail(self, fieldname: str, expected: str, got: Any) -> ConversionError:
        return ConversionError(
            f"topic {self.topic} ({self.spec.name}): field {fieldname}: expected {expected}, got {got}"
        )


Converter = Callable[[Any, Context], "np.ndarray | None"]
_REGISTRY: dict[str, Converter] = {}
_ENTRY_POINTS_LOADED = False


def normalize_type(msgtype: str) -> str:
    """``sensor_msgs/Image`` and ``sensor_msgs/msg/Image`` -> ``sensor_msgs/msg/Image``."""
    parts = msgtype.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    return "/".join(parts)


def converter(*msgtypes: str) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of ``msgtypes`` (replacing a built-in one)."""

    def register(fn: Converter) -> Converter:
        for t in msgtypes:
            _REGISTRY[normalize_type(t)] = fn
        return fn

    return register


def converters() -> dict[str, Converter]:
    """Every registered converter by message type, entry points included."""
    _load_entry_points()
    return dict(_REGISTRY)


def get_converter(msgtype: str, topic: str = "") -> Converter:
    _load_entry_points()
    fn = _REGISTRY.get(normalize_type(msgtype))
    if fn is None:
        raise ConversionError(
            f"topic {topic}: no converter for message type {msgtype!r}; built in or registered: "
            f"{sorted(_REGISTRY)}. Register one with @edgefuse.ros.converter({normalize_type(msgtype)!r})."
        )
    return fn


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="edgefuse.converters"):
        ep.load()


# ---- helpers ------------------------------------------------------------------------------------
def _bytes(data: Any) -> np.ndarray:
    """A uint8[] field (numpy array from rosbags, array.array or bytes from rclpy) as a uint8 array."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def _floats(data: Any) -> np.ndarray:
    return np.asarray(data, dtype=np.float32).reshape(-1)


def _scale(x: np.ndarray, full: float, spec: ModalitySpec) -> np.ndarray:
    """Integer pixels ``0..full`` onto the spec's value range (or 0..1 without one)."""
    lo, hi = spec.value_range or (0.0, 1.0)
    return (lo + x.astype(np.float32) * np.float32((hi - lo) / full)).astype(np.float32)


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of ``[C, H0, W0]`` to ``[C, h, w]`` (pixel centres aligned, as OpenCV's INTER_LINEAR)."""
    c, h0, w0 = img.shape
    if (h0, w0) == (h, w):
        return img

    def axis(n0: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(n) + 0.5) * n0 / n - 0.5, 0, n0 - 1)
        i0 = np.floor(x).astype(int)
        i1 = np.minimum(i0 + 1, n0 - 1)
        return i0, i1, (x - i0).astype(np.float32)

    y0, y1, fy = axis(h0, h)
    x0, x1, fx = axis(w0, w)
    top = img[:, y0][:, :, x0] * (1 - fx) + img[:, y0][:, :, x1] * fx
    bot = img[:, y1][:, :, x0] * (1 - fx) + img[:, y1][:, :, x1] * fx
    return (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(np.float32)


def _fit_image(chw: np.ndarray, ctx: Context) -> np.ndarray:
    c, h, w = ctx.spec.shape if len(ctx.spec.shape) == 3 else (None, None, None)
    if c is None:
        raise ctx.fail("(spec)", "a [C, H, W] image modality", f"shape {list(ctx.spec.shape)}")
    if chw.shape[0] != c:
        if chw.shape[0] == 4 and c == 3:  # alpha dropped
            chw = chw[:3]
        elif chw.shape[0] == 1 and c == 3 and ctx.options.get("gray_to_rgb", True):
            chw = np.repeat(chw, 3, axis=0)
        else:
            raise ctx.fail("encoding", f"{c} channel(s) for {ctx.spec.name}", f"{chw.shape[0]}")
    if chw.shape[1:] != (h, w):
        if ctx.options.get("resize", True) is False:
            raise ctx.fail("height/width", f"{h} x {w}", f"{chw.shape[1]} x {chw.shape[2]}")
        chw = resize(chw.astype(np.float32), h, w)
    return np.ascontiguousarray(chw, dtype=ctx.spec.dtype)


# encoding -> (channels, numpy dtype, channel order to RGB(A))
_ENCODINGS: dict[str, tuple[int, str, tuple[int, ...] | None]] = {
    "rgb8": (3, "u1", None),
    "bgr8": (3, "u1", (2, 1, 0)),
    "rgba8": (4, "u1", None),
    "bgra8": (4, "u1", (2, 1, 0, 3)),
    "mono8": (1, "u1", None),
    "mono16": (1, "u2", None),
    "rgb16": (3, "u2", None),
    "bgr16": (3, "u2", (2, 1, 0)),
}
for _c in (1, 2, 3, 4):
    for _bits, _kind in ((8, "u1"), (16, "u2"), (32, "f4"), (64, "f8")):
        _ENCODINGS[f"{_bits}{'F' if _kind[0] == 'f' else 'U'}C{_c}"] = (_c, _kind, None)
    _ENCODINGS[f"16SC{_c}"] = (_c, "i2", None)
    _ENCODINGS[f"32SC{_c}"] = (_c, "i4", None)


@converter("sensor_msgs/msg/Image")
def image(msg: Any, ctx: Context) -> np.ndarray:
    enc = str(msg.encoding)
    if enc not in _ENCODINGS:
        raise ctx.fail("encoding", f"one of {sorted(_ENCODINGS)}", repr(enc))
    c, kind, order = _ENCODINGS[enc]
    dt = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * c * dt.itemsize
    if h <= 0 or w <= 0:
        raise ctx.fail("height/width", "a non-empty image", f"{h} x {w}")
    if step < row:
        raise ctx.fail("step", f">= {row} bytes ({w} pixels x {c} channels x {dt.itemsize} bytes)", step)
    data = _bytes(msg.data)
    if data.size < step * h:
        raise ctx.fail("data", f"{step * h} bytes ({h} rows of {step})", f"{data.size} bytes")
    px = data[: step * h].reshape(h, step)[:, :row].copy().view(dt).reshape(h, w, c)
    if order is not None:
        px = px[..., list(order)]
    if dt.kind in "ui":
        x = _scale(px, float(np.iinfo(dt).max), ctx.spec)
    else:
        x = px.astype(np.float32)
    return _fit_image(np.moveaxis(x, -1, 0), ctx)


@converter("sensor_msgs/msg/CompressedImage")
def compressed_image(msg: Any, ctx: Context) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ConversionError(
            f"topic {ctx.topic}: decoding sensor_msgs/CompressedImage needs Pillow: pip install 'edgefuse[ros]'"
        ) from None
    import io

    fmt = str(msg.format).lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ctx.fail("format", "jpeg or png", repr(msg.format))
    try:
        img = Image.open(io.BytesIO(_bytes(msg.data).tobytes()))
        img.load()
    except Exception as e:  # noqa: BLE001 (Pillow raises many kinds)
        raise ctx.fail("data", f"a {fmt} image", f"{len(msg.data)} bytes that do not decode ({e})") from None
    c = ctx.spec.shape[0] if len(ctx.spec.shape) == 3 else 3
    img = img.convert("L" if c == 1 else "RGB")
    px = np.asarray(img)
    px = px[..., None] if px.ndim == 2 else px
    return _fit_image(np.moveaxis(_scale(px, 255.0, ctx.spec), -1, 0), ctx)


@converter("sensor_msgs/msg/LaserScan")
def laser_scan(msg: Any, ctx: Context) -> np.ndarray:
    shape = ctx.spec.shape
    c, n = (1, shape[0]) if len(shape) == 1 else shape if len(shape) == 2 else (None, None)
    if c not in (1, 2):
        raise ctx.fail("(spec)", "a [L], [1, L] or [2, L] scan modality", f"shape {list(shape)}")
    ranges = _floats(msg.ranges).copy()
    if ranges.size != n:
        raise ctx.fail("ranges", f"{n} beams", f"{ranges.size}")
    if ctx.options.get("inf_to_limits", True):  # REP 117: +Inf no return within range_max, -Inf too close
        ranges[np.isposinf(ranges)] = float(msg.range_max)
        ranges[np.isneginf(ranges)] = float(msg.range_min)
    rows = [ranges]
    if c == 2:
        inten = _floats(msg.intensities)
        if inten.size != n:
            raise ctx.fail("intensities", f"{n} values (the spec's second channel)", f"{inten.size}")
        rows.append(inten)
    return np.stack(rows).reshape(shape).astype(ctx.spec.dtype)


_POINT_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def points(msg: Any, ctx: Context, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named fields of a PointCloud2 as float32 arrays (NaN points removed)."""
    fields = {str(f.name): f for f in msg.fields}
    missing = [n for n in names if n not in fields]
    if missing:
        raise ctx.fail("fields", f"fields {list(names)}", f"{sorted(fields)}")
    step, n = int(msg.point_step), int(msg.width) * int(msg.height)
    data = _bytes(msg.data)
    if data.size < step * n:
        raise ctx.fail("data", f"{step * n} bytes ({n} points of {step})", f"{data.size} bytes")
    endian = ">" if msg.is_bigendian else "<"
    out = {}
    for name in names:
        f = fields[name]
        if int(f.datatype) not in _POINT_TYPES:
            raise ctx.fail(f"fields[{name}].datatype", f"one of {sorted(_POINT_TYPES)}", f.datatype)
        dt = np.dtype(_POINT_TYPES[int(f.datatype)]).newbyteorder(endian)
        if int(f.offset) + dt.itemsize > step:
            raise ctx.fail(f"fields[{name}].offset", f"within point_step {step}", f.offset)
        rows = data[: step * n].reshape(n, step)[:, int(f.offset) : int(f.offset) + dt.itemsize]
        out[name] = rows.copy().view(dt).reshape(-1).astype(np.float32)
    ok = np.all([np.isfinite(v) for v in out.values()], axis=0) if n else np.zeros(0, bool)
    return {k: v[ok] for k, v in out.items()}


@converter("sensor_msgs/msg/PointCloud2")
def point_cloud(msg: Any, ctx: Context) -> np.ndarray:
    shape, o = ctx.spec.shape, ctx.options
    mode = o.get("mode", "bev" if len(shape) == 3 else "range")
    if mode == "range":
        c, n = (1, shape[0]) if len(shape) == 1 else shape if len(shape) == 2 else (None, None)
        if c not in (1, 2):
            raise ctx.fail("(spec)", "a [L], [1, L] or [2, L] range profile for mode 'range'", list(shape))
        p = points(msg, ctx, ("x", "y", "z", *(["intensity"] if c == 2 else [])))
        r = np.hypot(p["x"], p["y"]) if o.get("planar", True) else np.sqrt(p["x"] ** 2 + p["y"] ** 2 + p["z"] ** 2)
        b = ((np.arctan2(p["y"], p["x"]) + math.pi) / (2 * math.pi) * n).astype(int) % n
        empty = float(o.get("empty", (ctx.spec.value_range or (0.0, 0.0))[1]))
        out = np.full((c, n), empty, dtype=np.float32)
        np.minimum.at(out[0], b, r)
        if c == 2:
            out[1] = 0.0
            np.maximum.at(out[1], b, p["intensity"])
        return out.reshape(shape).astype(ctx.spec.dtype)
    if mode == "bev":
        if len(shape) != 3 or shape[0] not in (1, 2, 3):
            raise ctx.fail("(spec)", "a [C, H, W] grid with C in 1..3 for mode 'bev'", list(shape))
        c, h, w = shape
        x0, x1, y0, y1 = (float(v) for v in o.get("extent", (-50.0, 50.0, -50.0, 50.0)))
        p = points(msg, ctx, ("x", "y", "z", *(["intensity"] if c == 3 else [])))
        i = ((p["x"] - x0) / (x1 - x0) * h).astype(int)
        j = ((p["y"] - y0) / (y1 - y0) * w).astype(int)
        keep = (i >= 0) & (i < h) & (j >= 0) & (j < w)
        i, j = i[keep], j[keep]
        out = np.zeros((c, h, w), dtype=np.float32)
        np.add.at(out[0], (i, j), 1.0)
        if c >= 2:
            top = np.full((h, w), -np.inf, dtype=np.float32)
            np.maximum.at(top, (i, j), p["z"][keep])
            out[1] = np.where(np.isfinite(top), top, 0.0)
        if c == 3:
            np.maximum.at(out[2], (i, j), p["intensity"][keep])
        return out.astype(ctx.spec.dtype)
    raise ctx.fail("(option mode)", "'range' or 'bev'", repr(mode))


@converter("sensor_msgs/msg/Imu")
def imu(msg: Any, ctx: Context) -> np.ndarray | None:
    shape = ctx.spec.shape
    if len(shape) != 2 or shape[0] != 6:
        raise ctx.fail("(spec)", "a [6, L] window (linear acceleration xyz, angular velocity xyz)", list(shape))
    n = shape[1]
    hop = int(ctx.options.get("hop", n))
    a, g = msg.linear_acceleration, msg.angular_velocity
    sample = [a.x, a.y, a.z, g.x, g.y, g.z]
    win = ctx.state.setdefault("window", deque(maxlen=n))
    win.append(sample)
    ctx.state["since"] = ctx.state.get("since", 0) + 1
    if len(win) < n or ctx.state["since"] < hop:
        return None
    ctx.state["since"] = 0
    return np.asarray(win, dtype=np.float32).T.astype(ctx.spec.dtype)


@converter("std_msgs/msg/Float32MultiArray", "std_msgs/msg/Float64MultiArray")
def multi_array(msg: Any, ctx: Context) -> np.ndarray:
    data = np.asarray(msg.data).reshape(-1)
    want = int(np.prod(ctx.spec.shape))
    offset = int(getattr(msg.layout, "data_offset", 0) or 0)
    if data.size - offset != want:
        raise ctx.fail("data", f"{want} values for shape {list(ctx.spec.shape)}", f"{data.size - offset}")
    dims = [int(d.size) for d in getattr(msg.layout, "dim", [])]
    if dims and int(np.prod(dims)) != want:
        raise ctx.fail("layout.dim", f"sizes whose product is {want}", dims)
    return data[offset:].reshape(ctx.spec.shape).astype(ctx.spec.dtype)


def stamp_ns(msg: Any) -> int | None:
    """``header.stamp`` in nanoseconds, or None for a message without a header or with a zero stamp (unset)."""
    header = getattr(msg, "header", None)
    if header is None:
        return None
    st = header.stamp
    ns = int(st.sec) * 10**9 + int(getattr(st, "nanosec", getattr(st, "nsec", 0)))
    return ns or None
