import numpy as np
import pytest

from edgefuse import ModalitySpec, all_subsets, default_subsets, parse_subset, subset_name


def test_spec_round_trips_through_dict():
    s = ModalitySpec("lidar", (2, 64), "signal", rate_hz=10.0, value_range=(0, 1.5))
    assert ModalitySpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="bad name", shape=(3,), kind="vector"), "identifier"),
        (dict(name="a", shape=(3, 4), kind="vector"), "rank 1"),
        (dict(name="a", shape=(3,), kind="video"), "kind must be one of"),
        (dict(name="a", shape=(3,), kind="vector", dtype="int64"), "dtype"),
        (dict(name="a", shape=(3,), kind="tokens", dtype="int64"), "vocab"),
        (dict(name="a", shape=(3,), kind="vector", rate_hz=0), "rate_hz"),
        (dict(name="a", shape=(3,), kind="vector", value_range=(1, 0)), "low < high"),
    ],
)
def test_spec_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModalitySpec(**kwargs)


def test_check_array_names_modality_expected_and_got():
    s = ModalitySpec("radar", (64,), "vector")
    s.check_array(np.zeros((2, 64), np.float32))
    with pytest.raises(ValueError, match=r"'radar'.*expected shape \[B, 64\], got \(2, 63\)"):
        s.check_array(np.zeros((2, 63), np.float32))
    with pytest.raises(ValueError, match=r"'radar'.*expected dtype float32, got float64"):
        s.check_array(np.zeros((2, 64)))
    bad = np.zeros((2, 64), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="'radar'.*NaN"):
        s.check_array(bad)


def test_subsets_are_named_in_spec_order():
    order = ["camera", "lidar", "radar"]
    assert subset_name(["radar", "camera"], order) == "camera+radar"
    assert parse_subset("radar+camera", order) == ("camera", "radar")
    assert len(all_subsets(order)) == 7
    assert all_subsets(order)[-1] == tuple(order)
    with pytest.raises(ValueError, match="non-empty"):
        subset_name([], order)
    with pytest.raises(ValueError, match="unknown modality"):
        subset_name(["sonar"], order)


def test_default_subsets_shrink_for_many_modalities():
    four = list("abcd")
    assert len(default_subsets(four)) == 15
    six = list("abcdef")
    subs = default_subsets(six)
    assert len(subs) == 6 + 6 + 1 and tuple(six) in subs
