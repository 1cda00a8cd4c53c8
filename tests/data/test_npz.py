import numpy as np
import pytest

from edgefuse.data import load_npz


def _write(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _arrays(n=40):
    rng = np.random.default_rng(0)
    return dict(
        img=rng.normal(size=(n, 1, 4, 4)).astype(np.float32),
        sig=rng.normal(size=(n, 2, 8)),
        vec=rng.normal(size=(n, 5)).astype(np.float32),
        tok=rng.integers(0, 9, size=(n, 3)),
        label=np.arange(n) % 3,
    )


def test_kinds_are_inferred_from_rank_and_dtype(tmp_path):
    d = load_npz(_write(tmp_path, **_arrays()))
    kinds = {s.name: s.kind for s in d.specs}
    assert kinds == {"img": "image", "sig": "signal", "vec": "vector", "tok": "tokens"}
    assert d["train"].inputs["sig"].dtype == np.float32  # float64 converted
    assert sum(len(d[s]) for s in ("train", "val", "test")) == 40
    assert d.num_classes == 3


def test_kind_override_and_explicit_split(tmp_path):
    a = _arrays()
    a["split"] = np.array(["train"] * 30 + ["val"] * 5 + ["test"] * 5)
    d = load_npz(_write(tmp_path, **a), kinds={"tok": "vector"})  # integer codes used as a float vector
    assert {s.name: s.kind for s in d.specs}["tok"] == "vector"
    assert d["train"].inputs["tok"].dtype == np.float32
    assert [len(d[s]) for s in ("train", "val", "test")] == [30, 5, 5]
    a["split"] = np.array([0] * 30 + [1] * 5 + [2] * 5)
    d = load_npz(_write(tmp_path, **a))
    assert len(d["val"]) == 5


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.pop("label"), "expected a 'label' array"),
        (lambda a: a.update(vec=a["vec"][:-1]), "'vec' has 39 samples, expected 40"),
        (lambda a: a["img"].__setitem__((3, 0, 0, 0), np.nan), "'img' has NaN or Inf values in 1 samples"),
        (lambda a: a["vec"].__setitem__((1, 1), np.inf), "'vec' has NaN or Inf"),
        (lambda a: a.update(split=np.array(["train"] * 39 + ["dev"])), r"'split' values must be .*'dev'"),
        (lambda a: a.update(split=np.array([0] * 39 + [5])), "0/1/2, got \\[5\\]"),
        (lambda a: a.update(label=np.linspace(0, 1, 40)), "'label' must be an integer array"),
        (lambda a: a.update(big=np.zeros((40, 2, 2, 2, 2))), "cannot infer a kind"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, mutate, match):
    a = _arrays()
    mutate(a)
    with pytest.raises(ValueError, match=match):
        load_npz(_write(tmp_path, **a))


def test_missing_file_and_unknown_kind_override(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="unknown modality"):
        load_npz(_write(tmp_path, **_arrays()), kinds={"sonar": "vector"})
