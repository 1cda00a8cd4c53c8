"""A public multi-sensor dataset as a user would bring it: UEA BasicMotions (a smart watch's accelerometer and
gyroscope; 4 activities; 32 training, 8 validation and 40 test recordings), read from the aeon wheel on PyPI,
written as an edgefuse .npz, trained with the default settings from the command line and evaluated beside
the baselines."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgefuse.cli import main
from edgefuse.data import load_npz
from edgefuse.data.uea import basicmotions, read_ts

ROOT = Path(__file__).resolve().parents[1]


def _source():
    """An aeon or sktime wheel (make venv downloads aeon's to .cache/wheels), or None for an installed package."""
    import importlib.util

    wheels = sorted((ROOT / ".cache" / "wheels").glob("aeon-*.whl")) + sorted(
        (ROOT / ".cache" / "wheels").glob("sktime-*.whl")
    )
    if wheels:
        return wheels[-1]
    if importlib.util.find_spec("aeon") or importlib.util.find_spec("sktime"):
        return None
    pytest.skip(
        "BasicMotions ships with aeon or sktime: neither is installed nor downloaded (make venv downloads aeon)"
    )


def test_the_ts_reader_refuses_what_it_cannot_read():
    good = "@problemName X\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,8,9:1,2,3:b\n"
    x, y, classes = read_ts(good)
    assert x.shape == (2, 2, 3) and y == ["a", "b"] and classes == ["a", "b"]
    with pytest.raises(Exception, match=r"labels \['c'\] are not among @classLabel's \['a', 'b'\]"):
        read_ts(good.replace(":b\n", ":c\n"))
    with pytest.raises(Exception, match="same number of dimensions"):
        read_ts(good.replace("7,8,9:1,2,3:b", "7,8,9:b"))


def test_basicmotions_trains_with_the_defaults_and_beats_its_baselines(tmp_path, capsys):
    src = _source()
    data = basicmotions(src)
    assert [s.name for s in data.specs] == ["accel", "gyro"] and data.specs[0].shape == (3, 100)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 32, "val": 8, "test": 40}
    npz = tmp_path / "basicmotions.npz"
    from edgefuse.data.uea import main as uea

    assert uea(["--out", str(npz), *(["--wheel", str(src)] if src else [])]) == 0
    back = load_npz(npz)
    assert np.array_equal(back["test"].inputs["gyro"], data["test"].inputs["gyro"])
    ck = tmp_path / "ck"
    assert main(["train", "--data", str(npz), "--out", str(ck), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "batch 8 (capped by the training set)" in out and "early stopping off" in out
    report = tmp_path / "eval.json"
    assert main(["eval", str(ck), "--baselines", "--no-robustness", "--json", str(report)]) == 0
    rep = json.loads(report.read_text())
    best = {k: max(b[k] for b in rep["baselines"].values()) for k in rep["subsets"]}
    assert all(rep["subsets"][k] >= best[k] - 0.02 for k in best), (rep["subsets"], rep["baselines"])
    assert rep["subsets"]["accel+gyro"] >= 0.9
