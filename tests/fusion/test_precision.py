"""Fusion models cast to float16 / bfloat16 (``model.half()``, the torch engine's fp16): every
family runs, agrees with float32, and normalises its raw inputs in float32 first."""

import copy
import math

import pytest
import torch

from edgefuse.checkpoint import load_checkpoint, save_checkpoint
from edgefuse.fusion import FUSIONS, build_model
from edgefuse.fusion.encoders import Normalize
from tests.conftest import random_batch, specs_n

#: the largest difference in class probability from the float32 model (float16: 2^-11 roundings
#: through a few layers; bfloat16 has 8 bits fewer)
PROB_TOL = {torch.float16: 5e-3, torch.bfloat16: 4e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_family_runs_in_reduced_precision(fusion, dtype):
    torch.manual_seed(0)
    specs = specs_n(4)  # image, signal, vector, tokens
    model = build_model(fusion, specs, num_classes=4, dim=16).eval()
    low = copy.deepcopy(model).to(dtype)
    assert low.compute_dtype == dtype and model.compute_dtype == torch.float32
    x = random_batch(specs, b=5)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.bool)
    with torch.inference_mode():
        for inputs, present in ((x, None), ({k: x[k] for k in list(x)[1:3]}, None), (x, mask)):
            want, got = model(inputs, present), low(inputs, present)
            assert got.dtype == dtype and torch.isfinite(got).all()
            diff = (torch.softmax(got.float(), 1) - torch.softmax(want, 1)).abs().max()
            assert diff <= PROB_TOL[dtype], (fusion, float(diff))


@pytest.mark.parametrize("fusion", ["early", "gated", "transformer"])
def test_raw_inputs_past_float16s_range_are_normalised_in_float32(fusion):
    """A depth image in mm reaches 65535, past float16's largest finite value (65504), and a
    large offset loses its low bits in float16: the statistics stay float32 through
    ``.half()`` and the input is normalised before the cast."""
    torch.manual_seed(0)
    specs = specs_n(2)
    norm = {specs[0].name: (61000.0, 3000.0), specs[1].name: (1234.5, 0.25)}
    model = build_model(fusion, specs, num_classes=3, dim=16, norm=norm).eval()
    half = copy.deepcopy(model).half()
    x = random_batch(specs, b=4)
    x = {
        specs[0].name: 61000.0 + 3000.0 * x[specs[0].name].clamp(-2, 2),
        specs[1].name: 1234.5 + 0.25 * x[specs[1].name],
    }
    assert x[specs[0].name].max() > 65504
    with torch.inference_mode():
        want, got = model(x), half(x)
        assert torch.isfinite(got).all()
        assert (torch.softmax(got.float(), 1) - torch.softmax(want, 1)).abs().max() <= PROB_TOL[torch.float16]
        # what a plain cast would have done: inf from the first input, garbage from the second
        assert not torch.isfinite(x[specs[0].name].half()).all()


def test_normalize_keeps_float32_statistics_through_casts_and_saves_none_of_its_dtype():
    n = Normalize(1234.5, 0.25)
    for dtype, stats in (
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
    ):
        n.to(dtype)
        assert (n.mean.dtype, n.std.dtype) == (stats, stats) and (float(n.mean), float(n.std)) == (1234.5, 0.25)
        assert n(torch.full((2,), 1235.0)).dtype == dtype
    assert set(n.state_dict()) == {"mean", "std"}  # checkpoints are unchanged


def test_a_float16_model_saves_and_reloads_as_float32(tmp_path):
    """A checkpoint written from a model cast to float16 loads as the float32 model it came from
    (its weights rounded to float16 once, its input statistics exact)."""
    torch.manual_seed(0)
    model = build_model("gated", specs_n(2), num_classes=3, dim=16, norm={"cam": (1234.5, 0.25)}).eval()
    path = save_checkpoint(copy.deepcopy(model).half(), tmp_path / "ck")
    back, _ = load_checkpoint(path)
    x = random_batch(specs_n(2), b=3)
    with torch.inference_mode():
        torch.testing.assert_close(back(x), model(x), atol=2e-3, rtol=0)
    assert back.compute_dtype == torch.float32 and float(back.encoders["cam"].norm.mean) == 1234.5


def test_a_custom_encoder_gets_its_input_in_the_models_dtype():
    torch.manual_seed(0)
    specs = specs_n(2)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 12))
    model = build_model("gated", specs, num_classes=3, dim=16, encoders={"cam": enc}).eval()
    half = copy.deepcopy(model).half()
    x = random_batch(specs, b=3)
    with torch.inference_mode():
        got = half(x)
        assert got.dtype == torch.float16
        assert (torch.softmax(got.float(), 1) - torch.softmax(model(x), 1)).abs().max() <= PROB_TOL[torch.float16]


@pytest.mark.parametrize("fusion", ["late_vote", "late_max"])
def test_late_fusion_log_probabilities_in_float16_match_float32_where_a_class_gets_nothing(fusion):
    """A class no head votes for has probability 0; its log-probability is log(1e-12) = -27.6 in
    float32, and float16 (whose smallest normal is 6e-5) must not make it -9.7."""
    torch.manual_seed(0)
    specs = specs_n(3)
    model = build_model(fusion, specs, num_classes=6, dim=16).eval()
    half = copy.deepcopy(model).half()
    x = random_batch(specs, b=8)
    with torch.inference_mode():
        want, got = model(x), half(x)
    assert got.dtype == torch.float16 and bool((want < -20).any()) == (fusion == "late_vote")
    torch.testing.assert_close(got.float(), want, atol=0.02, rtol=1e-2)


def test_late_weighted_fusion_with_only_zero_weighted_sensors_present_is_finite_in_float16():
    """weights=(0, 1, 1) and only the first sensor present: no weight anywhere, so every class gets
    log(1e-12), in float32 and in float16 (where the weights' sum used to be 0/0)."""
    specs = specs_n(3)
    model = build_model("late_weighted", specs, num_classes=4, dim=16, weights=(0.0, 1.0, 1.0)).eval()
    half = copy.deepcopy(model).half()
    x = random_batch(specs, b=2)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    with torch.inference_mode():
        want, got = model(x, mask), half(x, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, atol=0.02, rtol=1e-2)
    torch.testing.assert_close(want[0], torch.full((4,), math.log(1e-12)))
