"""bench/fuzz_kernels.py: its random cases pass on the kernels as written, each is fixed by
(seed, index), and a kernel that is off fails them."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import KERNEL_DEVICE as DEV

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_kernels", ROOT / "bench" / "fuzz_kernels.py")
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
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in doc["records"][3].items() if k != "seconds"}


@pytest.mark.parametrize("op,module,launcher", [
    ("fused_projection", "triton_projection", "fused_projection_triton"),
    ("mfb", "triton_bilinear", "mfb_triton"),
    ("bilinear", "triton_bilinear", "bilinear_triton"),
    ("gated_fusion", "triton_gated", "gated_fusion_triton"),
])
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
    index = next(i for i in range(80) if (c := fuzz.draw(0, i))[:2] == (op, torch.float32) and not c[2].get("gradients"))
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
    # kernel was at 1.03 of the tolerance and PyTorch at 1.41; elsewhere the kernel may be inside it
    if "torch_error_over_tolerance" in rec:
        assert 1 < rec["error_over_tolerance"] <= fuzz.TORCH_SLACK * rec["torch_error_over_tolerance"], rec
