"""ROS 2 messages built with rosbags' own types (Humble), as a bag or rclpy would deliver them."""

from __future__ import annotations

import numpy as np
import pytest

rosbags = pytest.importorskip("rosbags", reason="the ROS 2 tests need rosbags (pip install 'edgefuse[ros]')")
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types


def header(ns: int = 1_700_000_000_500_000_000, frame: str = "f"):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame
    )


def roundtrip(msg):
    """Through CDR and back, as a message read from a bag is."""
    return TS.deserialize_cdr(TS.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def image(hwc: np.ndarray, encoding: str, bigendian: bool = False, pad: int = 0):
    h, w = hwc.shape[:2]
    arr = hwc.astype(hwc.dtype.newbyteorder(">" if bigendian else "<"))
    rows = arr.reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return T["sensor_msgs/msg/Image"](
        header=header(),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=rows.shape[1],
        data=np.ascontiguousarray(rows).reshape(-1),
    )


def scan(ranges, intensities=()):
    n = len(ranges)
    return T["sensor_msgs/msg/LaserScan"](
        header=header(),
        angle_min=-np.pi,
        angle_max=np.pi,
        angle_increment=2 * np.pi / max(n, 1),
        time_increment=0.0,
        scan_time=0.1,
        range_min=0.1,
        range_max=30.0,
        ranges=np.asarray(ranges, np.float32),
        intensities=np.asarray(intensities, np.float32),
    )


def cloud(xyz: np.ndarray, intensity: np.ndarray | None = None):
    names = ["x", "y", "z"] + (["intensity"] if intensity is not None else [])
    cols = [xyz[:, 0], xyz[:, 1], xyz[:, 2]] + ([intensity] if intensity is not None else [])
    pts = np.stack(cols, axis=1).astype("<f4")
    fields = [T["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(names)]
    return T["sensor_msgs/msg/PointCloud2"](
        header=header(),
        height=1,
        width=len(pts),
        fields=fields,
        is_bigendian=False,
        point_step=4 * len(names),
        row_step=4 * len(names) * len(pts),
        data=pts.view(np.uint8).reshape(-1),
        is_dense=True,
    )


def imu(a, g):
    v = T["geometry_msgs/msg/Vector3"]
    q = T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    return T["sensor_msgs/msg/Imu"](
        header=header(),
        orientation=q,
        orientation_covariance=np.zeros(9),
        angular_velocity=v(x=g[0], y=g[1], z=g[2]),
        angular_velocity_covariance=np.zeros(9),
        linear_acceleration=v(x=a[0], y=a[1], z=a[2]),
        linear_acceleration_covariance=np.zeros(9),
    )


def multi_array(values, dims=None):
    d = [T["std_msgs/msg/MultiArrayDimension"](label=f"d{i}", size=s, stride=0) for i, s in enumerate(dims or [])]
    return T["std_msgs/msg/Float32MultiArray"](
        layout=T["std_msgs/msg/MultiArrayLayout"](dim=d, data_offset=0), data=np.asarray(values, np.float32)
    )
