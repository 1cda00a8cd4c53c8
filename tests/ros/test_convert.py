"""The built-in converters on messages built with rosbags' own types (through CDR and back, as from a bag),
and each one's refusal of a wrong encoding or size, naming the topic and the field."""

import io

import numpy as np
import pytest

from edgefuse.ros.convert import Context, ConversionError, converter, converters, get_converter, resize, stamp_ns
from edgefuse.specs import ModalitySpec

from ._msgs import cloud, image, imu, multi_array, roundtrip, scan

CAM = ModalitySpec("camera", (3, 4, 6), "image", value_range=(0.0, 1.0))


def convert(msg, spec, topic="/t", **options):
    msg = roundtrip(msg)
    return get_converter(msg.__msgtype__, topic)(msg, Context(topic, spec, options))


def test_every_message_type_the_issue_names_has_a_converter():
    have = set(converters())
    for t in ("Image", "CompressedImage", "LaserScan", "PointCloud2", "Imu"):
        assert f"sensor_msgs/msg/{t}" in have
    assert "std_msgs/msg/Float32MultiArray" in have
    assert get_converter("sensor_msgs/Image") is get_converter("sensor_msgs/msg/Image")  # ROS 1 style name


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "32FC3", "16UC3"])
def test_image_encodings_give_rgb_chw_in_the_spec_range(encoding):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 6, 3)).astype(np.uint8)
    if encoding == "rgb8":
        hwc = rgb
    elif encoding == "bgr8":
        hwc = rgb[..., ::-1]
    elif encoding == "rgba8":
        hwc = np.concatenate([rgb, np.full((4, 6, 1), 255, np.uint8)], axis=-1)
    elif encoding == "32FC3":
        hwc = rgb.astype(np.float32) / 255
    else:
        hwc = rgb.astype(np.uint16) * 257  # 0..65535
    x = convert(image(np.ascontiguousarray(hwc), encoding), CAM)
    assert x.shape == (3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x, np.moveaxis(rgb, -1, 0) / 255, atol=1e-6)


def test_image_row_padding_big_endian_and_mono():
    v = np.arange(24, dtype=np.uint16).reshape(4, 6, 1) * 1000
    mono = ModalitySpec("depth", (1, 4, 6), "image", value_range=(0.0, 65.535))
    x = convert(image(v, "16UC1", bigendian=True, pad=4), mono)
    np.testing.assert_allclose(x[0], v[..., 0] / 1000, rtol=1e-5)
    x3 = convert(image(np.full((4, 6), 255, np.uint8)[..., None], "mono8"), CAM)  # gray copied to the 3 channels
    assert x3.shape == (3, 4, 6) and np.all(x3 == 1.0)


def test_image_resized_to_the_spec():
    big = np.zeros((8, 12, 3), np.float32)
    big[:, 6:] = 1.0
    x = convert(image(big, "32FC3"), CAM)
    assert x.shape == (3, 4, 6)
    np.testing.assert_allclose(x[:, :, :3], 0.0)
    np.testing.assert_allclose(x[:, :, 3:], 1.0)
    assert resize(np.ones((1, 3, 3), np.float32), 7, 5).shape == (1, 7, 5)
    with pytest.raises(ConversionError, match=r"topic /cam \(camera\): field height/width: expected 4 x 6, got 8 x 12"):
        convert(image(big, "32FC3"), CAM, topic="/cam", resize=False)


def test_image_wrong_encoding_and_size_name_topic_and_field():
    ok = image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    with pytest.raises(ConversionError, match=r"topic /front/image_raw \(camera\): field encoding: .*got 'yuv422'"):
        ok.encoding = "yuv422"
        convert(ok, CAM, topic="/front/image_raw")
    short = image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    short.data = short.data[:-5]
    with pytest.raises(ConversionError, match=r"topic /t \(camera\): field data: expected 72 bytes .*got 67 bytes"):
        convert(short, CAM)
    two = image(np.zeros((4, 6, 2), np.float32), "32FC2")
    with pytest.raises(ConversionError, match=r"field encoding: expected 3 channel\(s\) for camera, got 2"):
        convert(two, CAM)


def test_compressed_image_png_and_jpeg_and_a_corrupt_one():
    from PIL import Image

    from ._msgs import T, header

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :, 0] = 255
    for fmt, tol in (("png", 0.0), ("jpeg", 0.1)):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt.upper())
        msg = T["sensor_msgs/msg/CompressedImage"](
            header=header(), format=f"rgb8; {fmt} compressed bgr8", data=np.frombuffer(buf.getvalue(), np.uint8)
        )
        x = convert(msg, CAM)
        np.testing.assert_allclose(x[0], 1.0, atol=tol)
        np.testing.assert_allclose(x[1:], 0.0, atol=tol)
    bad = T["sensor_msgs/msg/CompressedImage"](header=header(), format="png", data=np.arange(40, dtype=np.uint8))
    with pytest.raises(ConversionError, match=r"topic /t \(camera\): field data: expected a png image"):
        convert(bad, CAM)
    with pytest.raises(ConversionError, match=r"field format: expected jpeg or png, got 'h264'"):
        bad.format = "h264"
        convert(bad, CAM)


def test_laser_scan_ranges_and_intensities_with_rep117_infinities():
    lidar = ModalitySpec("lidar", (2, 4), "signal")
    x = convert(scan([1.0, np.inf, -np.inf, np.nan], [5, 6, 7, 8]), lidar)
    np.testing.assert_allclose(x[0, :3], [1.0, 30.0, 0.1])  # +Inf: no return (range_max), -Inf: too close
    assert np.isnan(x[0, 3])  # an erroneous reading stays NaN: the runtime rejects the frame
    np.testing.assert_allclose(x[1], [5, 6, 7, 8])
    with pytest.raises(ConversionError, match=r"topic /scan \(lidar\): field ranges: expected 4 beams, got 3"):
        convert(scan([1, 2, 3], [1, 2, 3]), lidar, topic="/scan")
    with pytest.raises(ConversionError, match=r"field intensities: expected 4 values .*got 0"):
        convert(scan([1, 2, 3, 4]), lidar)
    one = ModalitySpec("lidar", (4,), "vector")
    assert convert(scan([1, 2, 3, 4]), one).shape == (4,)


def test_point_cloud_range_profile_and_birds_eye_grid():
    xyz = np.array([[1, 0, 0], [3, 0, 1], [0, 2, 0], [-1, 0, 0], [np.nan, 0, 0]], np.float32)
    prof = ModalitySpec("radar", (2, 4), "signal", value_range=(0.0, 50.0))
    x = convert(cloud(xyz, np.array([1, 9, 2, 3, 4], np.float32)), prof)
    # 4 azimuth bins over [-pi, pi): bin 2 holds +x (0 rad), bin 3 +y, bin 0 -x; bin 1 is empty (range max)
    np.testing.assert_allclose(x[0], [1.0, 50.0, 1.0, 2.0])
    np.testing.assert_allclose(x[1], [3.0, 0.0, 9.0, 2.0])
    bev = ModalitySpec("lidar", (2, 4, 4), "image")
    g = convert(cloud(xyz), bev, extent=[-4, 4, -4, 4])
    assert g.shape == (2, 4, 4) and g[0].sum() == 4  # the NaN point is dropped
    assert g[0, 2, 2] == 1 and g[0, 3, 2] == 1 and g[1, 3, 2] == 1.0  # (3, 0, 1): its cell's height is 1
    with pytest.raises(
        ConversionError, match=r"topic /t \(radar\): field fields: expected fields \['x', 'y', 'z', 'intensity'\]"
    ):
        convert(cloud(xyz), prof)
    trunc = cloud(xyz)
    trunc.data = trunc.data[:10]
    with pytest.raises(ConversionError, match=r"field data: expected 60 bytes \(5 points of 12\), got 10 bytes"):
        convert(trunc, bev, extent=[-4, 4, -4, 4])


def test_imu_windows():
    spec = ModalitySpec("imu", (6, 3), "signal")
    ctx = Context("/imu", spec, {"hop": 2})
    conv = get_converter("sensor_msgs/msg/Imu")
    outs = [conv(roundtrip(imu([i, 0, 9.8], [0, 0, i / 10])), ctx) for i in range(6)]
    assert [o is None for o in outs] == [True, True, False, True, False, True]
    np.testing.assert_allclose(outs[4][0], [2, 3, 4])  # the latest 3 samples' x acceleration
    np.testing.assert_allclose(outs[4][5], [0.2, 0.3, 0.4], rtol=1e-6)
    with pytest.raises(ConversionError, match=r"field \(spec\): expected a \[6, L\] window"):
        conv(imu([0, 0, 0], [0, 0, 0]), Context("/imu", ModalitySpec("imu", (3, 4), "signal")))


def test_multi_array_reshaped_to_the_spec():
    spec = ModalitySpec("radar", (64,), "vector")
    x = convert(multi_array(np.arange(64), [8, 8]), spec)
    np.testing.assert_array_equal(x, np.arange(64, dtype=np.float32))
    with pytest.raises(
        ConversionError, match=r"topic /radar \(radar\): field data: expected 64 values for shape \[64\], got 63"
    ):
        convert(multi_array(np.arange(63)), spec, topic="/radar")
    with pytest.raises(ConversionError, match=r"field layout.dim: expected sizes whose product is 64, got \[8, 4\]"):
        convert(multi_array(np.arange(64), [8, 4]), spec)


def test_a_user_converter_registered_by_decorator_and_an_unknown_type():
    @converter("my_msgs/msg/Thing")
    def thing(msg, ctx):
        return np.full(ctx.spec.shape, msg, np.float32)

    spec = ModalitySpec("radar", (2,), "vector")
    assert get_converter("my_msgs/Thing")(3.0, Context("/x", spec)).tolist() == [3.0, 3.0]
    with pytest.raises(ConversionError, match=r"topic /y: no converter for message type 'other_msgs/msg/X'"):
        get_converter("other_msgs/msg/X", "/y")


def test_header_stamp():
    assert stamp_ns(scan([1.0])) == 1_700_000_000_500_000_000
    assert stamp_ns(multi_array([1.0])) is None
