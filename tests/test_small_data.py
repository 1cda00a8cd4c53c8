"""Training that fits the data: a step budget with warm-up and cosine, early stopping on validation loss
only with enough validation samples, per-channel input statistics, baselines; on SensorScenes cut to 10
training and 3 validation samples per class, each subset of the gated, concat and late-mean models with
default settings scores at least the plain per-sensor MLP trained on the same samples, less 2 points."""

import numpy as np
import pytest
import torch

from edgefuse.baselines import baselines
from edgefuse.checkpoint import load_checkpoint, load_training_data, read_config
from edgefuse.data import load_dataset
from edgefuse.fusion.encoders import Normalize
from edgefuse.inference import subset_accuracy
from edgefuse.train import TrainConfig, input_stats, plan_training, train


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("sensorscenes", train_size=60, val_size=18)


@pytest.fixture(scope="module")
def mlp(tiny):
    return baselines(tiny, kinds=("mlp",))["mlp"]


def test_reduced_splits_are_stratified_and_the_test_split_whole(tiny):
    assert len(tiny["train"]) == 60 and len(tiny["val"]) == 18 and len(tiny["test"]) == 2000
    counts = np.bincount(tiny["train"].labels, minlength=6)
    assert counts.min() >= 8 and counts.max() <= 12  # about 10 of each of the 6 classes
    with pytest.raises(Exception, match="train_size must be between 1 and the 6000 samples"):
        load_dataset("sensorscenes", train_size=7000)


def test_the_plan_fits_a_small_training_set():
    cfg = TrainConfig()
    small = plan_training(cfg, n_train=60, n_val=18)
    assert small["batch"] == 15 and small["batch_capped"]  # a quarter of the training set
    assert small["steps"] == 1000 and small["budget"] == "min_steps" and small["epochs"] == 250
    assert small["warmup_steps"] == 50 and not small["early_stopping"]
    assert "18 samples (< min_val 30)" in small["early_stopping_note"]
    big = plan_training(cfg, n_train=6000, n_val=1000)
    assert big["batch"] == 128 and big["steps"] == 40 * 47 and big["budget"] == "epochs" and big["early_stopping"]
    assert big["eval_every"] == 47 and big["stop_after"] == 500
    assert plan_training(TrainConfig(max_steps=70), 6000, 1000)["steps"] == 70
    two = plan_training(cfg, n_train=6000, n_val=1000, world=2)
    assert two["batch"] == 128 and two["batch_per_rank"] == 64 and two["steps_per_epoch"] == 47


def test_per_channel_statistics_and_their_normalisation():
    data = load_dataset("sensorscenes", train_size=300)
    stats = input_stats(data)
    (mc, sc), (ml, sl), (mr, sr) = stats["camera"], stats["lidar"], stats["radar"]
    assert len(mc) == len(sc) == 3 and len(ml) == 2 and len(mr) == len(sr) == 64  # channels; each vector feature
    x = data["train"].inputs["lidar"].astype(np.float64)
    np.testing.assert_allclose(ml, x.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(sl, x.std(axis=(0, 2)), rtol=1e-5)
    norm = Normalize(ml, sl, (2, 1))
    y = norm(torch.from_numpy(data["train"].inputs["lidar"])).double().numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2)), 1.0, atol=1e-4)


def test_a_small_run_prints_and_records_its_choices(tiny, tmp_path, capsys):
    cfg = TrainConfig(fusion="late_mean", max_steps=30, dim=16)
    train(tiny, cfg, out=tmp_path / "ck", source="sensorscenes", data_options={"train_size": 60, "val_size": 18})
    out = capsys.readouterr().out
    assert "train late_mean: 60 training samples, batch 15 (capped by the training set); 30 steps" in out
    assert "early stopping off: the validation split has 18 samples" in out and "torch 2." in out
    info = read_config(tmp_path / "ck")["info"]
    assert info["plan"]["steps"] == 30 and info["plan"]["batch"] == 15 and info["plan"]["stopped_at"] == 30
    assert info["train_config"]["min_steps"] == 1000 and info["train_config"]["warmup"] == 0.05
    assert set(info["environment"]) >= {"torch", "numpy", "edgefuse", "cpu", "gpu"}
    assert info["dataset"]["train_size"] == 60
    lrs = [h["lr"] for h in info["history"]]
    assert lrs[-1] < lrs[0]  # the cosine decays
    model, doc = load_checkpoint(tmp_path / "ck")
    again = load_training_data(tmp_path / "ck", doc)  # eval sees the same 60 training samples
    assert len(again["train"]) == 60 and np.array_equal(again["train"].labels, tiny["train"].labels)


def test_early_stopping_waits_for_stop_after_and_keeps_the_best_loss(small_scenes):
    cfg = TrainConfig(fusion="concat", epochs=40, min_steps=0, dim=16, batch_size=32, patience=2, stop_after=100)
    r = train(small_scenes, cfg, progress=False)
    losses = [h["val_loss"] for h in r.history]
    best = max(i for i, v in enumerate(losses) if v == min(losses))  # ties: the later one
    assert r.best_step == r.history[best]["step"]
    assert r.plan["stopped_early"] and r.plan["stopped_at"] >= 100  # 40 epochs overfit 600 samples
    assert len(losses) - 1 - best == 2  # patience 2 validations without a lower loss


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["gated", "concat", "late_mean"])
def test_defaults_on_ten_samples_per_class_match_the_mlp_baseline(tiny, mlp, fusion):
    r = train(tiny, TrainConfig(fusion=fusion), progress=False)
    acc = subset_accuracy(r.model, tiny["test"])
    short = {k: (round(acc[k], 4), round(mlp[k], 4)) for k in acc if acc[k] < mlp[k] - 0.02}
    assert not short, f"{fusion}: subsets more than 2 points below the MLP baseline: {short}"
    assert acc["camera+lidar+radar"] > 1 / 6 + 0.1  # well above chance


def test_the_baselines_table_marks_fusions_margin_over_the_best_baseline():
    from edgefuse.baselines import format_baselines

    base = {"logistic": {"a": 0.5, "a+b": 0.7}, "mlp": {"a": 0.6, "a+b": 0.8}}
    text = format_baselines({"a": 0.65, "b": 0.1, "a+b": 0.75}, base, "gated")
    assert "+5.0p" in text and "-5.0p" in text and "\nb " not in text  # b: no baseline, no row
