"""Every strategy x every subset for N = 2, 3, 5; masking semantics; clear input errors."""

import pytest
import torch

from edgefuse import all_subsets
from edgefuse.fusion import FUSIONS, build_model
from tests.conftest import random_batch, specs_n

ALL = sorted(FUSIONS)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("fusion", ALL)
def test_every_subset_runs_forward(fusion, n):
    torch.manual_seed(0)
    specs = specs_n(n)
    model = build_model(fusion, specs, num_classes=4).eval()
    x = random_batch(specs, b=3)
    for sub in all_subsets([s.name for s in specs]):
        out = model({k: x[k] for k in sub})
        assert out.shape == (3, 4), (fusion, sub)
        assert torch.isfinite(out).all(), (fusion, sub)


@pytest.mark.parametrize("fusion", ALL)
def test_absent_modalities_cannot_change_the_output(fusion):
    """Masked, not zero-filled: with a per-row mask, what an absent modality holds is ignored."""
    torch.manual_seed(0)
    specs = specs_n(3)
    model = build_model(fusion, specs, num_classes=4).eval()
    x = random_batch(specs, b=4, seed=1)
    present = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    y = random_batch(specs, b=4, seed=2)  # different values everywhere
    x2 = {k: torch.where(present[:, i].view(-1, *[1] * (v.dim() - 1)), v, y[k]) for i, (k, v) in enumerate(x.items())}
    with torch.no_grad():
        a, b = model(x, present), model(x2, present)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # ... while a present modality does change it (a vote is discrete: one voter may not flip it)
    if fusion == "late_vote":
        return
    x3 = dict(x)
    x3["lid"] = y["lid"]
    with torch.no_grad():
        c = model(x3, present)
    assert not torch.allclose(a[2], c[2])


@pytest.mark.parametrize("fusion", ["gated", "late_poe", "transformer", "per_subset", "imputation", "early"])
def test_row_mask_matches_running_the_subset_alone(fusion):
    """A row with a per-row mask gets the same logits as the same row fed as that subset alone."""
    torch.manual_seed(0)
    specs = specs_n(3)
    model = build_model(fusion, specs, num_classes=4).eval()
    x = random_batch(specs, b=2)
    present = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        masked = model(x, present)
        alone = model({"cam": x["cam"], "rad": x["rad"]})
    torch.testing.assert_close(masked[0], alone[0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def model3():
    return build_model("gated", specs_n(3), num_classes=4).eval()


def test_wrong_shape_names_modality(model3):
    x = random_batch(specs_n(3))
    x["lid"] = torch.randn(3, 2, 15)
    with pytest.raises(ValueError, match=r"modality 'lid': expected shape \[B, 2, 16\], got \[3, 2, 15\]"):
        model3(x)


def test_wrong_dtype_names_modality(model3):
    x = random_batch(specs_n(3))
    x["rad"] = torch.zeros(3, 10, dtype=torch.int64)
    with pytest.raises(
        ValueError, match=r"modality 'rad': expected a floating-point tensor \(float32\), got torch.int64"
    ):
        model3(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_modality(model3, bad):
    x = random_batch(specs_n(3))
    x["cam"][1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match="modality 'cam': expected finite values, got NaN or Inf"):
        model3(x)


def test_unknown_modality_and_empty_subset(model3):
    x = random_batch(specs_n(3))
    with pytest.raises(ValueError, match=r"unknown modality \['sonar'\].*expects names from \['cam', 'lid', 'rad'\]"):
        model3({**x, "sonar": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="empty modality subset"):
        model3({})
    with pytest.raises(ValueError, match=r"empty modality subset in row\(s\) \[1\]"):
        model3(x, torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool))


def test_mask_errors(model3):
    x = random_batch(specs_n(3))
    with pytest.raises(ValueError, match=r"present: expected shape \[3, 3\]"):
        model3(x, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"marks modality \['rad'\] present, but inputs has no tensor"):
        model3({"cam": x["cam"]}, torch.tensor([[1, 0, 1]] * 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size 3"):
        model3({"cam": x["cam"], "lid": x["lid"][:2]})
    with pytest.raises(ValueError, match="bool or 0/1"):
        model3(x, torch.full((3, 3), 0.5))


def test_token_ids_out_of_vocabulary():
    specs = specs_n(4)
    model = build_model("concat", specs, num_classes=3).eval()
    x = random_batch(specs)
    x["txt"][0, 0] = 21
    with pytest.raises(ValueError, match=r"modality 'txt': expected token ids in \[0, 20\], got \[0, 21\]"):
        model(x)


def test_unknown_fusion_and_custom_encoder():
    specs = specs_n(2)
    with pytest.raises(ValueError, match="unknown fusion 'nope'"):
        build_model("nope", specs, 3)

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :7]

    model = build_model("gated", specs, 3, encoders={"cam": Tiny()}).eval()
    assert model.project.in_features[0] == 7
    assert model(random_batch(specs)).shape == (3, 3)
    with pytest.raises(ValueError, match="encoder for 'cam'"):
        build_model("gated", specs, 3, encoders={"cam": torch.nn.Linear(5, 5)})


def test_a_model_run_in_inference_mode_still_trains(monkeypatch):
    """The presence row a batch builds is cached per subset and device. Built first under
    torch.inference_mode (an engine, an evaluation, `edgefuse kernels --check`), it was an
    inference tensor, and every later training step on that subset failed to save it for
    backward."""
    from edgefuse.fusion import _inputs

    monkeypatch.setattr(_inputs, "_GIVEN", {})  # as in a fresh process: the first build is the one below
    specs = specs_n(2)
    model = build_model("gated", specs, 3, dim=8)
    batch = random_batch(specs, b=4, seed=7)
    with torch.inference_mode():
        model(batch)
    model(batch).sum().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
