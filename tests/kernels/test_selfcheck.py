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
from edgefuse.kernels import ops, selfcheck
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
    assert Counter(c.op for c in cases) == {"fused_projection": 2 * (2 * 2 + 1), "mfb": 2 * 2, "bilinear": 2 * 2,
                                            "gated_fusion": 2 * (2 * 2 + 1)}
    assert {c.dtype for c in cases} == {"float32", "float16"}
    labels = " | ".join(c.case for c in cases)
    for what in ("modality 1 absent", "sides absent", "empty row", "gradients (x, W, bias)", "gradients (feats, logits)", "B=67"):
        assert what in labels


def test_check_fails_when_the_mask_is_ignored(monkeypatch):
    """Not only NaN: a finite but wrong answer (every modality treated as present) is over tolerance."""
    real = tg.gated_fusion_triton
    monkeypatch.setattr(tg, "gated_fusion_triton", lambda feats, logits, mask, mode: real(feats, logits, torch.ones_like(mask), mode))
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
    assert all(c.error == "RuntimeError: PTX assembly failed on sm_87" and c.error_over_tolerance is None for c in failed)
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


@pytest.mark.parametrize("forced,interpret,runs", [
    ("reference", None, "reference"), ("bogus", None, "error"), ("interpret", "1", "interpreter"), ("interpret", None, "error"),
])
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
    monkeypatch.setattr(ops, "triton_cuda_error",
                        lambda: ("Triton's CUDA driver cannot start", "RuntimeError: Failed to find C compiler", ops.DRIVER_REMEDY))
    can, why, remedy = selfcheck._kernels_can_run(cuda=True)
    assert not can and why == "Triton's CUDA driver cannot start (RuntimeError: Failed to find C compiler)"
    assert remedy == ops.DRIVER_REMEDY
    monkeypatch.setattr(ops, "triton_cuda_error", lambda: None)
    assert selfcheck._kernels_can_run(cuda=True) == (True, None, None)
    assert selfcheck._kernels_can_run(cuda=False) == (False, "no CUDA device", None)


def test_check_refuses_with_the_reason_when_the_kernels_cannot_run(monkeypatch, capsys):
    rec = {**selfcheck.report(), "devices": [{"index": 0, "name": "Orin", "arch": "sm_87", "sms": 16, "memory_gib": 61.4}],
           "kernels_can_run": False, "why": "Triton's CUDA driver cannot start (RuntimeError: Failed to find C compiler)",
           "remedy": ops.DRIVER_REMEDY}
    monkeypatch.setattr(selfcheck, "report", lambda: rec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no set_device for "cuda"
    args = selfcheck.argparse.Namespace(check=True, bench=False, interpret=False, device=None, batch=None, dim=None,
                                        widths=None, dtype=None, no_graph=False, json=None)
    with pytest.raises(ValueError, match=r"cannot run here: Triton's CUDA driver cannot start .*; to run them, Triton needs a C compiler"):
        selfcheck.run(args)
    assert "cuda:0  Orin  sm_87" in capsys.readouterr().out


def test_report_gives_the_drivers_cuda_and_the_ptxas_triton_builds_each_gpu_with(monkeypatch):
    """What decides whether the driver loads Triton's kernels: the driver's CUDA and, per GPU,
    the CUDA of the ptxas this Triton picks for its architecture, with the variable that replaces
    it. A stand-in Orin, since there is no GPU here."""
    import types

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(
        name="Orin", major=8, minor=7, total_memory=61.4 * 2**30, multi_processor_count=16))
    monkeypatch.setattr(ops, "cuda_driver_version", lambda: "12.6")
    monkeypatch.setattr(ops, "triton_cuda_error", lambda: None)
    rec = selfcheck.report()
    path, cuda, var = ops.triton_ptxas(87)
    assert rec["versions"]["driver_cuda"] == "12.6"
    assert rec["devices"][0]["triton_ptxas"] == {"path": path, "cuda": cuda, "variable": var}
    text = selfcheck.format_report(rec)
    assert text.splitlines()[0].endswith("  driver: CUDA 12.6")
    assert f"cuda:0  Orin  sm_87  16 SMs  61.4 GiB  Triton builds with CUDA {cuda}'s ptxas ({var})" in text


def test_interpret_refuses_once_triton_is_imported_compiled(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as this process's conftest set it before importing Triton
    selfcheck._use_interpreter()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="--interpret must come before Triton is imported, but this process imported "
                                         "it without TRITON_INTERPRET=1"):
        selfcheck._use_interpreter()


def _cli(*args, env=None):
    """``edgefuse kernels`` in a fresh process, TRITON_INTERPRET unset as in a user's shell (``--interpret`` sets it)."""
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "edgefuse", "kernels", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=300)


def test_cli_check_writes_json(tmp_path):
    """Compiled on a GPU, through --interpret on a CPU."""
    out = tmp_path / "res" / "selfcheck.json"
    interpret = ["--interpret"] if KERNEL_DEVICE == "cpu" else []
    p = _cli("--check", *interpret, "--batch", "3", "--dim", "24", "--widths", "40,24,8", "--dtype", "float32", "--json", str(out))
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
    assert p.returncode == 2 and "cannot run here: no CUDA device (--check --interpret checks them on the CPU)" in p.stderr
    p = _cli("--bench", "--interpret")
    assert p.returncode == 2 and "--interpret can only --check" in p.stderr
    p = _cli("--widths", "2048,x")
    assert p.returncode == 2 and "expected comma-separated integers such as 2048,1024,128, got '2048,x'" in p.stderr
    with pytest.raises(ValueError, match=r"expected batches, dim and widths >= 1, got batches=\[0\]"):
        selfcheck.check("cpu", batches=(0,))


def test_cli_without_triton(tmp_path):
    """A Jetson image without Triton: the report says so and how to get it; --check refuses
    with the same reason instead of a traceback."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text('raise ImportError("No module named \'triton\'")\n')
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    p = _cli(env=env)
    assert p.returncode == 0, p.stderr
    assert "triton not importable" in p.stdout and "fused ops on CUDA tensors run: the PyTorch reference ops" in p.stdout
    assert "because: Triton cannot be imported (ImportError: No module named 'triton')\n  to run the kernels: pip install triton" in p.stdout
    p = _cli("--check", "--interpret", env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "Triton cannot be imported here (ImportError: No module named 'triton'); to run them, pip install triton" in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --bench times the compiled kernels")
def test_bench_times_every_op_on_the_gpu():
    rows = selfcheck.bench("cuda", batches=(8,), dim=64, widths=(128, 64, 32), rep_ms=5)
    assert [r["op"] for r in rows] == list(selfcheck.OPS)
    for r in rows:
        assert r["triton_us"] > 0 and r["eager_us"] > 0 and r["speedup"] == pytest.approx(r["eager_us"] / r["triton_us"], rel=0.01)
        assert r["triton_sync_us"] > 0 and r["eager_sync_us"] > 0  # per call, synchronized
        assert ("triton_graph_us" in r) or ("triton_graph_error" in r)


def test_bench_plumbing_with_the_timers_stubbed(monkeypatch):
    """Every op's Triton and eager calls run (interpreted on a CPU) and each row is built from
    the timers' answers; the GPU test above times them for real."""
    import triton.testing as tt

    calls = Counter()

    def do_bench(fn, rep, return_mode):
        assert return_mode == "median"
        calls[rep] += 1
        fn()
        return 0.004 if calls[rep] % 2 else 0.010  # triton, then eager

    def no_graph(fn, rep_ms, quantiles):
        raise RuntimeError("operation not permitted when stream is capturing")

    def sync_latency_ms(fn, quantiles, device, rep_ms):
        assert (quantiles, device, rep_ms) == ([0.5], KERNEL_DEVICE, 7)  # rep_ms, up to SYNC_MS
        calls["sync"] += 1
        fn()
        return [0.02 if calls["sync"] % 2 else 0.03]

    monkeypatch.setattr(tt, "do_bench", do_bench)
    monkeypatch.setattr(selfcheck, "cuda_graph_ms", no_graph)
    monkeypatch.setattr(selfcheck, "sync_latency_ms", sync_latency_ms)
    rows = selfcheck.bench(KERNEL_DEVICE, dtype=torch.float32, rep_ms=7, **{k: v for k, v in SHAPES.items() if k != "batches"}, batches=(3,))
    assert [r["op"] for r in rows] == list(selfcheck.OPS) and calls == {7: 8, "sync": 8}
    for r in rows:
        assert (r["B"], r["dtype"], r["triton_us"], r["eager_us"], r["speedup"]) == (3, "float32", 4.0, 10.0, 2.5)
        assert (r["triton_sync_us"], r["eager_sync_us"], r["sync_speedup"]) == (20.0, 30.0, 1.5)
        assert r["triton_graph_error"] == "RuntimeError: operation not permitted when stream is capturing" and "graph_speedup" not in r


def test_sync_latency_times_each_call_with_its_synchronize_within_its_call_bounds(monkeypatch):
    """Per call: the wall clock of the call and the synchronize after it (a control loop's
    latency); at least SYNC_CALLS[0] calls, then more while rep_ms lasts, at most SYNC_CALLS[1]."""
    clock, events = [0.0], []

    def perf_counter():
        return clock[0]

    def fn():  # a call that takes 2 ms, then 4 ms, alternately, on the fake clock
        events.append("call")
        clock[0] += (2e-3, 4e-3)[events.count("call") % 2]

    monkeypatch.setattr(selfcheck.time, "perf_counter", perf_counter)
    monkeypatch.setattr(selfcheck.torch.cuda, "synchronize", lambda: (events.append("sync"), clock.__setitem__(0, clock[0] + 1e-3)))
    monkeypatch.setattr(selfcheck, "SYNC_CALLS", (4, 50))
    med, p80 = selfcheck.sync_latency_ms(fn, [0.5, 0.8], rep_ms=30, warmup=2)
    assert events[:8] == ["call", "sync"] * 4  # each call is followed by its synchronize
    timed = events.count("call") - 2
    assert timed == 8  # 5, 3, 5, ... ms (each with its 1 ms synchronize): the 8th ends past 30 ms
    assert (med, p80) == (pytest.approx(4.0), pytest.approx(5.0))  # each call's time includes its synchronize
    events.clear()
    selfcheck.sync_latency_ms(fn, [0.5], rep_ms=0, warmup=0)
    assert events.count("call") == 4  # at least SYNC_CALLS[0], however short rep_ms
    events.clear()
    selfcheck.sync_latency_ms(fn, [0.5], rep_ms=10_000, warmup=0)
    assert events.count("call") == 50  # at most SYNC_CALLS[1], however long rep_ms
    events.clear()
    selfcheck.sync_latency_ms(fn, [0.5], device="cpu", rep_ms=0, warmup=0)
    assert "sync" not in events
    # edgefuse kernels --bench: do_bench's rep_ms, but no more than SYNC_MS for the per-call timing
    import triton.testing as tt

    asked = []
    monkeypatch.setattr(tt, "do_bench", lambda fn, rep, return_mode: 0.001)
    monkeypatch.setattr(selfcheck, "sync_latency_ms", lambda fn, quantiles, device, rep_ms: asked.append(rep_ms) or [0.002])
    row: dict = {}
    selfcheck._time_into(row, "triton", lambda: None, "cpu", False, 100)
    assert asked == [selfcheck.SYNC_MS] and (row["triton_us"], row["triton_sync_us"]) == (1.0, 2.0)


def test_aot_cases_are_the_checks_gpu_launches():
    """``python -m edgefuse.kernels.aot --cases selfcheck`` compiles what a default GPU check runs."""
    labels = [label for label, _ in selfcheck.aot_cases(torch.float16)]
    gpu = selfcheck.GPU_SHAPES
    assert len(labels) == len(gpu["batches"]) * 6 + 2 and all(" float16 " in label for label in labels)
    assert Counter(label.split()[0] for label in labels) == {"fused_projection": 2 * len(gpu["batches"]) + 1, "mfb": 4,
                                                             "bilinear": 4, "gated_fusion": 2 * len(gpu["batches"]) + 1}
    assert {f"B={b}" for b in gpu["batches"]} <= {word for label in labels for word in label.split()}


@pytest.mark.parametrize("release", ["3.2 and later", "3.0 and 3.1"])
def test_cuda_graph_timing_on_every_triton_release(monkeypatch, release):
    """On a side stream (3.0 and 3.1 refuse the default one); quantiles where the release has them."""
    import contextlib

    import triton.testing as tt

    calls, streams = [], []
    if release == "3.2 and later":
        def fake(fn, rep=20, grad_to_none=None, quantiles=None, return_mode="mean"):
            calls.append((rep, quantiles, return_mode, len(streams)))
            return [0.5, 0.4, 0.6]
    else:
        def fake(fn, rep=20, grad_to_none=None, return_mode="mean"):
            calls.append((rep, None, return_mode, len(streams)))
            return 0.5

    @contextlib.contextmanager
    def stream(s):
        streams.append(s)
        yield

    monkeypatch.setattr(tt, "do_bench_cudagraph", fake)
    monkeypatch.setattr(torch.cuda, "Stream", lambda: "side stream")
    monkeypatch.setattr(torch.cuda, "stream", stream)
    got = selfcheck.cuda_graph_ms(lambda: None, 50, [0.5, 0.2, 0.8])
    assert streams == ["side stream"]
    if release == "3.2 and later":
        assert got == [0.5, 0.4, 0.6] and calls == [(50, [0.5, 0.2, 0.8], "mean", 1)]
    else:
        assert got == [0.5, None, None] and calls == [(50, None, "median", 1)]


# --checkpoint: a trained model, every default sensor subset


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_check_passes_on_a_trained_gated_model(tiny_checkpoint, dtype):
    """float32, and float16 as the torch engine's fp16 casts the model: the kernels' float16 variants"""
    cases, calls = selfcheck.check_model(tiny_checkpoint, KERNEL_DEVICE, batches=(1, 5), dtype=dtype)
    assert calls == {"fused_projection": 1, "gated_fusion": 1}  # the gated model's projection and gate
    assert len(cases) == 7 * 2 and all(c.ok and c.error is None for c in cases), [c for c in cases if not c.ok]
    assert {c.dtype for c in cases} == {str(dtype).removeprefix("torch.")}
    assert {c.case.split()[0] for c in cases} == {"camera", "lidar", "radar", "camera+lidar", "camera+radar", "lidar+radar",
                                                 "camera+lidar+radar"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_check_fails_when_the_projection_kernel_drops_a_modality(tiny_checkpoint, monkeypatch, dtype):
    real = tp.fused_projection_triton

    def wrong(xs, weights, bias, act="none", normalize=False, config=None):
        present = [i for i, x in enumerate(xs) if x is not None]
        return real([None if i == present[-1] and len(present) > 1 else x for i, x in enumerate(xs)], weights, bias, act, normalize)

    monkeypatch.setattr(tp, "fused_projection_triton", wrong)
    cases, _ = selfcheck.check_model(tiny_checkpoint, KERNEL_DEVICE, batches=(4,), dtype=dtype)
    failed = {c.case.split()[0] for c in cases if not c.ok}
    assert failed == {"camera+lidar", "camera+radar", "lidar+radar", "camera+lidar+radar"}  # one sensor: nothing dropped


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


def test_model_bench_plumbing_with_the_timers_stubbed(tiny_checkpoint, monkeypatch):
    import triton.testing as tt

    def ms(scale):  # the eager timing runs with the reference ops forced: twice as slow here
        return lambda fn, *a, **k: (fn(), scale * (2 if os.environ.get("EDGEFUSE_KERNELS") == "reference" else 1))[1]

    monkeypatch.setattr(tt, "do_bench", ms(0.002))
    monkeypatch.setattr(selfcheck, "cuda_graph_ms", lambda fn, rep_ms, quantiles: [ms(0.001)(fn)])
    monkeypatch.setattr(selfcheck, "sync_latency_ms", lambda fn, quantiles, device, rep_ms: [ms(0.003)(fn)])
    rows = selfcheck.bench_model(tiny_checkpoint, KERNEL_DEVICE, batches=(2,), rep_ms=5, dtype=torch.float16)
    assert [r["subset"] for r in rows][-1] == "camera+lidar+radar" and len(rows) == 7
    assert {r["dtype"] for r in rows} == {"float16"}
    assert all((r["triton_us"], r["eager_us"], r["eager_graph_us"], r["speedup"], r["graph_speedup"]) == (2.0, 4.0, 2.0, 2.0, 2.0)
               for r in rows)
    assert all((r["triton_sync_us"], r["eager_sync_us"], r["sync_speedup"]) == (3.0, 6.0, 2.0) for r in rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --bench times the compiled kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_bench_on_the_gpu(tiny_checkpoint, dtype):
    rows = selfcheck.bench_model(tiny_checkpoint, "cuda", batches=(8,), rep_ms=5, dtype=dtype)
    assert len(rows) == 7 and all(r["triton_us"] > 0 and r["eager_us"] > 0 and r["triton_sync_us"] > 0 for r in rows)


#: the fused ops one forward of each mid-fusion and missing-modality family calls (two sensors);
#: early, late and transformer models call none
FAMILY_OPS = {
    "concat": {"fused_projection": 1}, "sum": {"fused_projection": 1}, "hadamard": {"fused_projection": 1},
    "bilinear": {"fused_projection": 1, "bilinear": 1}, "mfb": {"fused_projection": 1, "mfb": 1},
    "attention": {"fused_projection": 1}, "gated": {"fused_projection": 1, "gated_fusion": 1},
    "adaptive_gate": {"fused_projection": 1, "gated_fusion": 1}, "per_subset": {"fused_projection": 1},
    "imputation": {"fused_projection": 1}, "early": {}, "late_mean": {}, "transformer": {},
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
