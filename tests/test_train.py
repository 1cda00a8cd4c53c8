"""Training with modality dropout, checkpoints that reproduce outputs, evaluation reports, the CLI."""

import json
import os

import numpy as np
import pytest
import torch

from edgefuse.checkpoint import load_checkpoint, read_config
from edgefuse.cli import main
from edgefuse.evaluate import auc, evaluate
from edgefuse.inference import predict
from edgefuse.train import TrainConfig, sample_presence, train


def test_presence_samples_are_never_empty_and_cover_every_subset():
    gen = torch.Generator().manual_seed(0)
    keep = sample_presence(4000, 3, 0.5, gen)
    assert keep.any(1).all()
    patterns = {tuple(r) for r in keep.tolist()}
    assert len(patterns) == 7  # every non-empty subset of 3 occurs


@pytest.mark.parametrize("fusion", ["gated", "late_mean", "imputation", "per_subset"])
def test_checkpoint_reload_reproduces_outputs(small_scenes, tmp_path, fusion):
    cfg = TrainConfig(fusion=fusion, epochs=2, min_steps=0, patience=2, dim=32)
    result = train(small_scenes, cfg, out=tmp_path / "ck", progress=False, source="sensorscenes")
    model, doc = load_checkpoint(tmp_path / "ck")
    x = {k: v[:50] for k, v in small_scenes["test"].inputs.items()}
    np.testing.assert_array_equal(predict(result.model, x), predict(model, x))
    assert doc["info"]["dataset"]["source"] == "sensorscenes"
    mean, std = doc["model"]["kwargs"]["norm"]["camera"]  # per-channel statistics travel with the model
    assert len(mean) == len(std) == 3 and min(std) > 0
    assert len(doc["info"]["history"]) >= 1


def test_training_learns_and_early_stops(small_scenes):
    cfg = TrainConfig(fusion="concat", epochs=60, min_steps=0, patience=3, dim=32, batch_size=32, stop_after=0)
    result = train(small_scenes, cfg, progress=False)
    assert result.plan["stopped_early"] and len(result.history) < 40  # well before the budget
    assert len(result.history) - result.best_epoch == 3
    accs = result.val_subsets
    assert len(accs) == 7
    assert accs["camera+lidar+radar"] > 0.4  # far above chance (1/6) after a few epochs on 600 samples


def test_save_is_atomic_when_writing_fails(small_scenes, tmp_path, monkeypatch):
    result = train(
        small_scenes, TrainConfig(fusion="sum", epochs=1, min_steps=0, dim=16), out=tmp_path / "ck", progress=False
    )
    before = (tmp_path / "ck" / "model.pt").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    from edgefuse.checkpoint import save_checkpoint

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(result.model, tmp_path / "ck")
    assert (tmp_path / "ck" / "model.pt").read_bytes() == before  # old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no half-written folder left


def test_auc_is_mean_accuracy_over_scaled_levels():
    assert auc([0, 1], [1.0, 0.0]) == pytest.approx(0.5)
    assert auc([0, 0.5, 2], [0.8, 0.8, 0.8]) == pytest.approx(0.8)


def test_evaluate_reports_every_subset_and_robustness(small_scenes, tmp_path):
    result = train(small_scenes, TrainConfig(fusion="gated", epochs=8, min_steps=0, dim=32), progress=False)
    rep = evaluate(result.model, small_scenes)
    assert list(rep["subsets"]) == [
        "camera",
        "lidar",
        "radar",
        "camera+lidar",
        "camera+radar",
        "lidar+radar",
        "camera+lidar+radar",
    ]
    g, d = rep["robustness"]["gaussian"], rep["robustness"]["drop"]
    assert set(g["accuracy"]) == {"camera", "lidar", "radar", "all"}
    # level 0 is the clean accuracy; heavy noise on every sensor cannot help
    full = rep["subsets"]["camera+lidar+radar"]
    assert g["accuracy"]["all"][0] == pytest.approx(full)
    assert g["accuracy"]["all"][-1] < full
    assert d["accuracy"]["all"][0] == pytest.approx(full)


def test_cli_train_then_eval(tmp_path, monkeypatch, capsys):
    data = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    np.savez(
        data,
        a=(rng.normal(size=(300, 6)) + y[:, None]).astype(np.float32),
        b=(rng.normal(size=(300, 1, 12)) - y[:, None, None]).astype(np.float32),
        label=y,
    )
    ck = tmp_path / "ck"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--fusion",
                "adaptive_gate",
                "--out",
                str(ck),
                "--epochs",
                "15",
                "--min-steps",
                "0",
                "--dim",
                "16",
                "--batch-size",
                "32",
            ]
        )
        == 0
    )
    assert read_config(ck)["model"]["fusion"] == "adaptive_gate"
    out = tmp_path / "eval.json"
    assert main(["eval", str(ck), "--json", str(out), "--no-robustness", "--baselines"]) == 0
    report = json.loads(out.read_text())
    assert set(report["subsets"]) == {"a", "b", "a+b"}
    assert report["subsets"]["a+b"] > 0.6  # the classes are well separated in both modalities
    assert set(report["baselines"]) == {"logistic", "mlp"}
    assert all(set(v) == {"a", "b", "a+b"} and min(v.values()) > 0.6 for v in report["baselines"].values())
    printed = capsys.readouterr().out
    assert "a+b" in printed and "baselines on the same training split" in printed and "margin" in printed


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "ck")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()
    assert main(["eval", str(tmp_path)]) == 2
    assert "expected a checkpoint folder" in capsys.readouterr().err


def test_write_json_is_whole_or_nothing(tmp_path):
    """The one JSON writer of `edgefuse eval --json` and `edgefuse kernels --json`: a document
    that fails to serialise leaves the previous file as it was, and no temporary file."""
    from edgefuse._fs import write_json

    path = write_json({"accuracy": 0.9}, tmp_path / "out" / "eval.json")
    with pytest.raises(TypeError):
        write_json({"accuracy": object()}, path)
    assert json.loads(path.read_text()) == {"accuracy": 0.9} and os.listdir(path.parent) == ["eval.json"]
