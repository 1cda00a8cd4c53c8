"""``edgefuse kernels``: the report, the float64 check of every launcher, and the timings.

The check runs the kernels on KERNEL_DEVICE: interpreted on a CPU, compiled on a GPU (the GPU
check runs this file too). It must pass on the kernels as written and fail on broken ones: a
dropped mask, an exception here, and a dropped store in test_masks.py (its mutants are
interpreted whatever the machine, so that file is CI's only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

import edgefuse.kernels.triton_bilinear as tb
import edgefuse.kernels.triton_gated as tg
import edgefuse.kernels.triton_projection as tp
from edgefuse.kernels import platform, selfcheck
from edgefuse.kernels.reference import error_over_tolerance
from tests.conftest import KERNEL_DEVICE

SHAPES = {"batches": (1, 67), "dim": 24, "widths": (40, 24, 8)}  # 67: the GEMM-shaped tiles too


def _check(device=KERNEL_DEVICE, dtypes=(torch.float32,)):
    return selfcheck.check(device, dtypes=dtypes, **SHAPES)


def test_check_passes_on_the_kernels_and_covers_every_launch():
    cases = _check(dtypes=(torch.float32, torch.float16))
    assert [c for c in cases if not c.ok] == []
    assert all(c.error is None and 0 <= c.error_over_tolerance <= 1 for c in cases)
    # per dtype and batch: 2 projections, MFB, bilinear, 2 gated; per dtype: the two gradient cases
    assert Counter(c.op for c in cases) == {
        "fused_projection": 2 * (2 * 2 + 1),
        "mfb": 2 * 2,
        "bilinear": 2 * 2,
        "gated_fusion": 2 * (2 * 2 + 1),
    }
    assert {c.dtype for c in cases} == {"float32", "float16"}
    labels = " | ".join(c.case for c in cases)
    for what in (
        "modality 1 absent",
        "sides absent",
        "empty row",
        "gradients (x, W, bias)",
        "gradients (feats, logits)",
        "B=67",
    ):
        assert what in labels


def test_check_fails_when_the_mask_is_ignored(monkeypatch):
    """Not only NaN: a finite but wrong answer (every modality treated as present) is over tolerance."""
    real = tg.gated_fusion_triton
    monkeypatch.setattr(
        tg, "gated_fusion_triton", lambda feats, logits, mask, mode: real(feats, logits, torch.ones_like(mask), mode)
    )
    cases = _check()
    wrong = [c for c in cases if not c.ok]
    assert wrong and {c.op for c in wrong} == {"gated_fusion"}
    assert all(c.error_over_tolerance is None or c.error_over_tolerance > 1 for c in wrong)


def test_an_exception_fails_its_case_and_the_others_still_run(monkeypatch):
    def boom(*args):
        raise RuntimeError("PTX assembly failed\n  on sm_87")

    monkeypatch.setattr(tb, "bilinear_triton", boom)
    cases = _check()
    failed = [c for c in cases if not c.ok]
    assert {c.op for c in failed} == {"bilinear"} and len(failed) == len(SHAPES["batches"])
    assert all(
        c.error == "RuntimeError: PTX assembly failed on sm_87" and c.error_over_tolerance is None for c in failed
    )
    assert sum(c.ok for c in cases) == len(cases) - len(failed)


def test_error_over_tolerance():
    ref64 = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
    rtol, atol = 1e-3, 1e-3 * 2.0  # float16, reduction length 1, scaled by max |ref| = 2
    assert error_over_tolerance(ref64.half(), ref64, torch.float16) == 0.0
    off = ref64.clone()
    off[0] += 0.5 * (atol + rtol * 1.0)
    assert error_over_tolerance(off, ref64, torch.float16) == pytest.approx(0.5)
    off[2] = 3 * atol
    assert error_over_tolerance(off, ref64, torch.float16) == pytest.approx(3.0)
    off[1] = float("nan")
    assert error_over_tolerance(off, ref64, torch.float16) == float("inf")


@pytest.mark.parametrize(
    "forced,interpret,runs",
    [
        ("reference", None, "reference"),
        ("bogus", None, "error"),
        ("interpret", "1", "interpreter"),
        ("interpret", None, "error"),
    ],
)
def test_report_says_what_edgefuse_kernels_makes_cuda_calls_run(monkeypatch, forced, interpret, runs):
    monkeypatch.setenv("EDGEFUSE_KERNELS", forced)
    if interpret is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    rec = selfcheck.report()
    assert rec["cuda_calls_run"] == runs and forced in rec["why"]
    assert f"EDGEFUSE_KERNELS={forced}" in selfcheck.format_report(rec)


def test_report_gives_dispatchs_reason_and_remedy_when_the_kernels_cannot_run(monkeypatch):
    monkeypatch.setattr(
        platform,
        "triton_cuda_error",
        lambda: (
            "Triton's CUDA driver cannot start",
            "RuntimeError: Failed to find C compiler",
            platform.DRIVER_REMEDY,
        ),
    )
    can, why, remedy = selfcheck._kernels_can_run(cuda=True)
    assert not can and why == "Triton's CUDA driver cannot start (RuntimeError: Failed to find C compiler)"
    assert remedy == platform.DRIVER_REMEDY
    monkeypatch.setattr(platform, "triton_cuda_error", lambda: None)
    assert selfcheck._kernels_can_run(cuda=True) == (True, None, None)
    assert selfcheck._kernels_can_run(cuda=False) == (False, "no CUDA device", None)


def test_check_refuses_with_the_reason_when_the_kernels_cannot_run(monkeypatch, capsys):
    rec = {
        **selfcheck.report(),
        "devices": [{"index": 0, "name": "Orin", "arch": "sm_87", "sms": 16, "memory_gib": 61.4}],
        "kernels_can_run": False,
        "why": "Triton's CUDA driver cannot start (RuntimeError: Failed to find C compiler)",
        "remedy": platform.DRIVER_REMEDY,
    }
    monkeypatch.setattr(selfcheck, "report", lambda: rec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no set_device for "cuda"
    args = selfcheck.argparse.Namespace(
        check=True,
        bench=False,
        interpret=False,
        device=None,
        batch=None,
        dim=None,
        widths=None,
        dtype=None,
        no_graph=False,
        json=None,
    )
    with pytest.raises(
        ValueError,
        match=r"cannot run here: Triton's CUDA driver cannot start .*; to run them, Triton needs a C compiler",
    ):
        selfcheck.run(args)
    assert "cuda:0  Orin  sm_87" in capsys.readouterr().out


def test_report_gives_the_drivers_cuda_and_the_ptxas_triton_builds_each_gpu_with(monkeypatch):
    """What decides whether the driver loads Triton's kernels: the driver's CUDA and, per GPU,
    the CUDA of the ptxas this Triton picks for its architecture, with the variable that replaces
    it. A stand-in Orin, since there is no GPU here."""
    import types

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: types.SimpleNamespace(
            name="Orin", major=8, minor=7, total_memory=61.4 * 2**30, multi_processor_count=16
        ),
    )
    monkeypatch.setattr(platform, "cuda_driver_version", lambda: "12.6")
    monkeypatch.setattr(platform, "triton_cuda_error", lambda: None)
    rec = selfcheck.report()
    path, cuda, var = platform.triton_ptxas(87)
    assert rec["versions"]["driver_cuda"] == "12.6"
    assert rec["devices"][0]["triton_ptxas"] == {"path": path, "cuda": cuda, "variable": var}
    text = selfcheck.format_report(rec)
    assert text.splitlines()[0].endswith("  driver: CUDA 12.6")
    assert f"cuda:0  Orin  sm_87  16 SMs  61.4 GiB  Triton builds with CUDA {cuda}'s ptxas ({var})" in text


def test_interpret_refuses_once_triton_is_imported_compiled(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as this process's conftest set it before importing Triton
    selfcheck._use_interpreter()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(
        ValueError,
        match="--interpret must come before Triton is imported, but this process imported "
        "it without TRITON_INTERPRET=1",
    ):
        selfcheck._use_interpreter()


def _cli(*args, env=None):
    """``edgefuse kernels`` in a fresh process, TRITON_INTERPRET unset as in a shell (``--interpret`` sets it)."""
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "edgefuse", "kernels", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=300,
    )


def test_cli_check_writes_json(tmp_path):
    """Compiled on a GPU, through --interpret on a CPU."""
    out = tmp_path / "res" / "selfcheck.json"
    interpret = ["--interpret"] if KERNEL_DEVICE == "cpu" else []
    p = _cli(
        "--check",
        *interpret,
        "--batch",
        "3",
        "--dim",
        "24",
        "--widths",
        "40,24,8",
        "--dtype",
        "float32",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "fused ops on CUDA tensors run:" in p.stdout and "8 of 8 cases pass" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "edgefuse-kernels-selfcheck/1" and doc["check"]["interpreted"] is bool(interpret)
    assert doc["check"]["batches"] == [3] and len(doc["check"]["cases"]) == 8
    assert all(c["ok"] for c in doc["check"]["cases"])
    assert sorted(os.listdir(out.parent)) == ["selfcheck.json"]  # no temporary file left


def test_cli_errors():
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    p = _cli(env=no_gpu)
    assert p.returncode == 0 and "because: no CUDA device" in p.stdout, p.stderr
    p = _cli("--check", env=no_gpu)
    assert (
        p.returncode == 2 and "cannot run here: no CUDA device (--check --interpret checks them on the CPU)" in p.stderr
    )
    p = _cli("--bench")  # timing is tools/kernel_bench.py's
    assert p.returncode == 2 and "unrecognized arguments: --bench" in p.stderr
    p = _cli("--widths", "2048,x")
    assert p.returncode == 2 and "expected comma-separated integers such as 2048,1024,128, got '2048,x'" in p.stderr
    with pytest.raises(ValueError, match=r"expected batches, dim and widths >= 1, got batches=\[0\]"):
        selfcheck.check("cpu", batches=(0,))


def test_cli_without_triton(tmp_path):
    """A Jetson image without Triton: the report says so and how to get it; --check refuses
    with the same reason instead of a traceback."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text("raise ImportError(\"No module named 'triton'\")\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    p = _cli(env=env)
    assert p.returncode == 0, p.stderr
    assert (
        "triton not importable" in p.stdout and "fused ops on CUDA tensors run: the PyTorch reference ops" in p.stdout
    )
    assert (
        "because: Triton cannot be imported (ImportError: No module named 'triton')\n  to run the kernels: pip "
        "install triton" in p.stdout
    )
    p = _cli("--check", "--interpret", env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert (
        "Triton cannot be imported here (ImportError: No module named 'triton'); to run them, pip install triton"
        in p.stderr
    )


# --checkpoint: a trained model, every default sensor subset


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_check_passes_on_a_trained_gated_model(tiny_checkpoint, dtype):
    """float32, and float16 as the torch engine's fp16 casts the model: the kernels' float16 variants"""
    cases, calls = selfcheck.check_model(tiny_checkpoint, KERNEL_DEVICE, batches=(1, 5), dtype=dtype)
    assert calls == {"fused_projection": 1, "gated_fusion": 1}  # the gated model's projection and gate
    assert len(cases) == 7 * 2 and all(c.ok and c.error is None for c in cases), [c for c in cases if not c.ok]
    assert {c.dtype for c in cases} == {str(dtype).removeprefix("torch.")}
    assert {c.case.split()[0] for c in cases} == {
        "camera",
        "lidar",
        "radar",
        "camera+lidar",
        "camera+radar",
        "lidar+radar",
        "camera+lidar+radar",
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_check_fails_when_the_projection_kernel_drops_a_modality(tiny_checkpoint, monkeypatch, dtype):
    real = tp.fused_projection_triton

    def wrong(xs, weights, bias, act="none", normalize=False, config=None):
        present = [i for i, x in enumerate(xs) if x is not None]
        return real(
            [None if i == present[-1] and len(present) > 1 else x for i, x in enumerate(xs)],
            weights,
            bias,
            act,
            normalize,
        )

    monkeypatch.setattr(tp, "fused_projection_triton", wrong)
    cases, _ = selfcheck.check_model(tiny_checkpoint, KERNEL_DEVICE, batches=(4,), dtype=dtype)
    failed = {c.case.split()[0] for c in cases if not c.ok}
    assert failed == {
        "camera+lidar",
        "camera+radar",
        "lidar+radar",
        "camera+lidar+radar",
    }  # one sensor: nothing dropped


def test_model_check_says_when_a_model_calls_no_fused_op(tmp_path):
    from edgefuse.checkpoint import save_checkpoint
    from edgefuse.fusion import build_model
    from tests.conftest import specs_n

    path = save_checkpoint(build_model("late_mean", specs_n(2), 3, dim=8), tmp_path / "late")
    cases, calls = selfcheck.check_model(path, KERNEL_DEVICE, batches=(2,))
    assert calls == {} and len(cases) == 3 and all(c.ok for c in cases)


def test_cli_model_check(tiny_checkpoint):
    interpret = ["--interpret"] if KERNEL_DEVICE == "cpu" else []
    p = _cli("--check", *interpret, "--checkpoint", str(tiny_checkpoint), "--batch", "2")
    assert p.returncode == 0, p.stderr
    assert "7 of 7 cases pass; fused ops per forward: fused_projection x1, gated_fusion x1" in p.stdout
    p = _cli("--check", "--interpret", "--checkpoint", str(tiny_checkpoint), "--dim", "64")
    assert p.returncode == 2 and "--checkpoint takes the model's own widths; drop --dim" in p.stderr
    p = _cli("--check", "--interpret", "--checkpoint", str(tiny_checkpoint), "--dtype", "bfloat16")
    assert p.returncode == 2 and "--dtype bfloat16 cannot be checked in the interpreter" in p.stderr
    with pytest.raises(ValueError, match="expected a model dtype in"):
        selfcheck.check_model(tiny_checkpoint, KERNEL_DEVICE, dtype=torch.float64)


#: the fused ops one forward of each mid-fusion and missing-modality family calls (two sensors);
#: early, late and transformer models call none
FAMILY_OPS = {
    "concat": {"fused_projection": 1},
    "sum": {"fused_projection": 1},
    "hadamard": {"fused_projection": 1},
    "bilinear": {"fused_projection": 1, "bilinear": 1},
    "mfb": {"fused_projection": 1, "mfb": 1},
    "attention": {"fused_projection": 1},
    "gated": {"fused_projection": 1, "gated_fusion": 1},
    "adaptive_gate": {"fused_projection": 1, "gated_fusion": 1},
    "per_subset": {"fused_projection": 1},
    "imputation": {"fused_projection": 1},
    "early": {},
    "late_mean": {},
    "transformer": {},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("fusion", list(FAMILY_OPS))
def test_model_check_on_every_family(fusion, dtype, tmp_path):
    """Untrained models of each family, two sensors, in float32 and cast to float16: within the
    model-level tolerance on every subset, and the fused ops each calls."""
    from edgefuse.checkpoint import save_checkpoint
    from edgefuse.fusion import build_model
    from tests.conftest import specs_n

    torch.manual_seed(0)
    path = save_checkpoint(build_model(fusion, specs_n(2), 4, dim=16), tmp_path / fusion)
    cases, calls = selfcheck.check_model(path, KERNEL_DEVICE, batches=(3,), dtype=dtype)
    assert calls == FAMILY_OPS[fusion]
    assert len(cases) == 3 and all(c.ok for c in cases), cases
