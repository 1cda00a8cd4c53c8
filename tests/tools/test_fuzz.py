"""tools/fuzz_kernels.py: its random cases pass on the kernels as written, each is fixed by
(seed, index), and a kernel that is off fails them."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import KERNEL_DEVICE as DEV

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_kernels", ROOT / "tools" / "fuzz_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_cases_pass_and_are_recorded(fuzz, tmp_path):
    # seed 0's first 8 cases reach all four ops, in about 3 s through the interpreter
    assert fuzz.main(["--seed", "0", "--cases", "8", "--device", DEV, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "fuzz.json").read_text())
    assert doc["cases"] == 8 and doc["failed"] == 0 and doc["failures"] == []
    assert {r["op"] for r in doc["records"]} == set(fuzz.OPS) and all(r["ok"] for r in doc["records"])
    assert sum(s["cases"] for s in doc["by_op"].values()) == 8
    again = fuzz.run_case(0, 3, DEV)  # one case again, as --only runs it
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in doc["records"][3].items() if k != "seconds"
    }


@pytest.mark.parametrize(
    "op,module,launcher",
    [
        ("fused_projection", "triton_projection", "fused_projection_triton"),
        ("mfb", "triton_bilinear", "mfb_triton"),
        ("bilinear", "triton_bilinear", "bilinear_triton"),
        ("gated_fusion", "triton_gated", "gated_fusion_triton"),
    ],
)
def test_a_launcher_one_percent_off_fails_its_cases(fuzz, monkeypatch, op, module, launcher):
    mod = importlib.import_module(f"edgefuse.kernels.{module}")
    real = getattr(mod, launcher)

    def off(*args, **kwargs):
        out = real(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        first.mul_(1.01).add_(1e-2)
        return out

    monkeypatch.setattr(mod, launcher, off)
    # a float32 case of this op whose launcher is this one (a projection case with gradients runs the
    # autograd Function's); float16's tolerance over a long reduction can take 1 % (bilinear: 1600 terms)
    index = next(
        i for i in range(80) if (c := fuzz.draw(0, i))[:2] == (op, torch.float32) and not c[2].get("gradients")
    )
    rec = fuzz.run_case(0, index, DEV)
    assert rec["op"] == op and not rec["ok"] and rec["error_over_tolerance"] > 1, rec


def test_a_case_past_the_tolerance_passes_within_pytorchs_own_error(fuzz):
    """Seed 2's case 635: MFB in float32 whose normalised output has an element near 0, where the
    signed square root amplifies the pooled sum's rounding past the tolerance. PyTorch's own
    float32 ops on the same inputs are further off than the kernel, so the case passes. (A kernel
    1 % off stays far outside: the test above.)"""
    rec = fuzz.run_case(2, 635, DEV)
    assert rec["op"] == "mfb" and rec["ok"], rec
    # the rounding is the machine's (the interpreter's dot is numpy's): on the development VM the
    # kernel is at 1.03 of the tolerance and PyTorch at 1.41 in the given order, 2.30 in the worst
    # of four; elsewhere the kernel may be inside it
    if "torch_error_over_tolerance" in rec:
        assert 1 < rec["error_over_tolerance"] <= fuzz.TORCH_SLACK * rec["torch_error_over_tolerance"], rec


def test_pytorchs_own_error_is_the_worst_of_several_orders_of_summation(fuzz):
    """Ops seed 7's case 5136: MFB in float32, past the tolerance (1.77 on the development VM).
    PyTorch's float32 ops on its inputs were at 0.89 summing in the order given and at 3.21 in
    the worst of four orders: by the given order alone, the case would fail the 2x rule with no
    bug in the kernel. The record's PyTorch error is the worst over ``ORDERS`` orders."""
    from edgefuse.kernels.selfcheck import _compare

    rec = fuzz.run_case(7, 5136, DEV, "ops")
    assert rec["op"] == "mfb" and rec["ok"], rec
    if "torch_error_over_tolerance" in rec:  # (the kernel's rounding is the machine's, as above)
        _, dtype, _, _, reference, lens = fuzz.draw_ops(7, 5136, DEV)
        ref64 = reference()
        each = [
            round(_compare([o.detach() for o in reference(dtype, k)], ref64, dtype, lens), 4)
            for k in range(fuzz.ORDERS)
        ]
        assert rec["torch_error_by_order"] == each and rec["torch_error_over_tolerance"] == max(each), (rec, each)
        assert len(set(each)) > 1, each  # the orders round otherwise


def test_a_relu_kink_passes_at_pytorchs_own_error(fuzz):
    """Ops seed 9's case 4968: the projection's training path in float32, ReLU and the norm, far
    past the tolerance (1 413 on the development VM) at PyTorch's own error in the given order.
    The cause the docs give: a pre-activation within rounding of 0 that float32 puts on the other
    side of 0 from float64, so the ReLU's gradient there is off in one and on in the other. The
    record passes, and where it is past the tolerance (the rounding is the machine's), the
    kernel's forward and the float64 reference disagree on the ReLU, only at values within
    rounding of 0."""
    rec = fuzz.run_case(9, 4968, DEV, "ops")
    assert rec["op"] == "fused_projection" and rec["act"] == "relu" and rec["gradients"] and rec["ok"], rec
    if "torch_error_over_tolerance" in rec:
        _, _, _, run, reference, _ = fuzz.draw_ops(9, 4968, DEV)
        out, ref64 = run(DEV)[0].detach().cpu().double(), reference()[0]
        flipped = (out > 0) != (ref64 > 0)
        assert flipped.any(), rec
        assert float(ref64[flipped].abs().max()) < 1e-6 and float(out[flipped].abs().max()) < 1e-6, ref64[flipped]


def test_the_tally_adds_up_the_committed_runs(fuzz, tmp_path, capsys):
    """``--tally DIR``: the README's count of committed cases, from the files themselves, gzip'd
    or not; a failure among them makes it exit 1, and a folder without runs is an error."""
    import gzip

    runs = {
        "fuzz_seed1.json": {"seed": 1, "versions": {"torch": "2.13.0", "triton": "3.9.0"}, "cases": 5, "failed": 0},
        "fuzz_ops_seed2.json.gz": {
            "seed": 2,
            "layer": "ops",
            "versions": {"torch": "2.11.0", "triton": "3.6.0"},
            "cases": 7,
            "failed": 0,
        },
    }
    (tmp_path / "fuzz_seed1.json").write_text(json.dumps(runs["fuzz_seed1.json"]))
    with gzip.open(tmp_path / "fuzz_ops_seed2.json.gz", "wt") as f:
        json.dump(runs["fuzz_ops_seed2.json.gz"], f)
    (tmp_path / "notes.txt").write_text("not a run")
    assert fuzz.main(["--tally", str(tmp_path)]) == 0
    assert "2 runs: 12 cases, 0 failed, on 2 torch/Triton stacks" in capsys.readouterr().out
    t = fuzz.tally(tmp_path)
    assert [(r["file"], r["layer"]) for r in t["runs"]] == [
        ("fuzz_ops_seed2.json.gz", "ops"),
        ("fuzz_seed1.json", "launchers"),
    ]
    (tmp_path / "fuzz_seed3.json").write_text(json.dumps({**runs["fuzz_seed1.json"], "seed": 3, "failed": 1}))
    assert fuzz.main(["--tally", str(tmp_path)]) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="found none"):
        fuzz.tally(tmp_path / "empty")


#: an ops-layer case whose sums are long enough for another order to round otherwise
_LONG_SUMS = {
    "fused_projection": lambda p: min(k for i, k in enumerate(p["K"]) if i not in p["absent"]) >= 8,
    "mfb": lambda p: min(p["K1"], p["K2"]) >= 8,
    "bilinear": lambda p: min(p["K1"], p["K2"]) >= 4,
    "gated_fusion": lambda p: p["N"] >= 3,
}


@pytest.mark.parametrize("op", sorted(_LONG_SUMS))
def test_another_order_of_summation_is_the_same_sum_rounded_otherwise(fuzz, op):
    """``_in_order``: in float64 every order gives the reference's outputs and gradients (the
    gradients in the caller's order), and in float32 the reversed order rounds otherwise (a random
    one may not: swapping the first two of three terms rounds alike)."""
    index = _first_ops_case(fuzz, lambda o, dtype, p: o == op and p["gradients"] and _LONG_SUMS[op](p))
    reference = fuzz.draw_ops(0, index, DEV)[4]
    exact = reference()
    for k in range(1, fuzz.ORDERS):
        for a, b in zip(reference(torch.float64, k), exact, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    given, reversed_ = reference(torch.float32, 0), reference(torch.float32, 1)
    assert any(not torch.equal(a, b) for a, b in zip(given, reversed_, strict=True)), (op, index)


def test_ops_layer_cases_pass_and_reach_every_path(fuzz, tmp_path):
    # seed 0's first 40 ops-layer cases: every op, both paths, every layout, in about 6 s
    assert fuzz.main(["--layer", "ops", "--seed", "0", "--cases", "40", "--device", DEV, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "fuzz_ops.json").read_text())
    assert doc["layer"] == "ops" and doc["cases"] == 40 and doc["failed"] == 0 and doc["failures"] == []
    assert {r["op"] for r in doc["records"]} == set(fuzz.OPS)
    cov = doc["coverage"]
    assert set(cov["path"]) == {"triton", "reference"}
    assert {"float32", "float16", "autocast float16"} <= set(cov["precision"])
    assert set(cov["layout"]) == {"contiguous", "transposed", "strided", "offset", "expanded"}
    again = fuzz.run_case(0, 5, DEV, "ops")
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in doc["records"][5].items() if k != "seconds"
    }


def _first_ops_case(fuzz, want):
    return next(i for i in range(300) if want(*fuzz.draw_ops(0, i, DEV)[:3]))


def _noncontiguous_projection(op, dtype, p):
    # (autocast's cast makes a contiguous copy; a view with a dimension of 1 can be contiguous)
    return (
        op == "fused_projection"
        and not p["gradients"]
        and p["precision"] in ("float32", "float16")
        and p["B"] > 1
        and any(p["layouts"].get(f"x{i}") in ("transposed", "strided") and k > 1 for i, k in enumerate(p["K"]))
    )


@pytest.mark.parametrize(
    "attr,mutant,want,says",
    [
        # inputs passed on as they came: the launcher refuses the strided view
        ("_c", lambda t: t, _noncontiguous_projection, "contiguous"),
        # autocast ignored: the matmul runs, and returns, float32
        (
            "_autocast",
            list,
            lambda op, dtype, p: op != "gated_fusion" and p["precision"] == "autocast float16",
            "returned torch.float32, expected torch.float16",
        ),
        # training not seen: MFB's forward-only kernel runs where autograd needs the reference
        (
            "needs_grad",
            lambda *ts: False,
            lambda op, dtype, p: op == "mfb" and p["gradients"],
            "ran the triton path, its rules say reference",
        ),
    ],
)
def test_an_ops_layer_that_breaks_its_rules_fails_its_cases(fuzz, monkeypatch, attr, mutant, want, says):
    from edgefuse.kernels import ops

    index = _first_ops_case(fuzz, want)
    assert fuzz.run_case(0, index, DEV, "ops")["ok"]
    monkeypatch.setattr(ops, attr, mutant)
    rec = fuzz.run_case(0, index, DEV, "ops")
    assert not rec["ok"] and says in rec["error"], rec
