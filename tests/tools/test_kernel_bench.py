"""tools/kernel_bench.py: the kernels' timing against eager PyTorch (stubbed timers here; compiled on a GPU),
and tools/aot.py's selfcheck cases."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from edgefuse.kernels import selfcheck
from tests.conftest import KERNEL_DEVICE
from tools import aot, kernel_bench

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"batches": (3,), "dim": 24, "widths": (40, 24, 8)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --bench times the compiled kernels")
def test_bench_times_every_op_on_the_gpu():
    rows = kernel_bench.bench("cuda", batches=(8,), dim=64, widths=(128, 64, 32), rep_ms=5)
    assert [r["op"] for r in rows] == list(selfcheck.OPS)
    for r in rows:
        assert (
            r["triton_us"] > 0
            and r["eager_us"] > 0
            and r["speedup"] == pytest.approx(r["eager_us"] / r["triton_us"], rel=0.01)
        )
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
    monkeypatch.setattr(kernel_bench, "cuda_graph_ms", no_graph)
    monkeypatch.setattr(kernel_bench, "sync_latency_ms", sync_latency_ms)
    rows = kernel_bench.bench(
        KERNEL_DEVICE,
        dtype=torch.float32,
        rep_ms=7,
        **{k: v for k, v in SHAPES.items() if k != "batches"},
        batches=(3,),
    )
    assert [r["op"] for r in rows] == list(selfcheck.OPS) and calls == {7: 8, "sync": 8}
    for r in rows:
        assert (r["B"], r["dtype"], r["triton_us"], r["eager_us"], r["speedup"]) == (3, "float32", 4.0, 10.0, 2.5)
        assert (r["triton_sync_us"], r["eager_sync_us"], r["sync_speedup"]) == (20.0, 30.0, 1.5)
        assert (
            r["triton_graph_error"] == "RuntimeError: operation not permitted when stream is capturing"
            and "graph_speedup" not in r
        )


def test_sync_latency_times_each_call_with_its_synchronize_within_its_call_bounds(monkeypatch):
    """Per call: the wall clock of the call and the synchronize after it (a control loop's
    latency); at least SYNC_CALLS[0] calls, then more while rep_ms lasts, at most SYNC_CALLS[1]."""
    clock, events = [0.0], []

    def perf_counter():
        return clock[0]

    def fn():  # a call that takes 2 ms, then 4 ms, alternately, on the fake clock
        events.append("call")
        clock[0] += (2e-3, 4e-3)[events.count("call") % 2]

    monkeypatch.setattr(kernel_bench.time, "perf_counter", perf_counter)
    monkeypatch.setattr(
        kernel_bench.torch.cuda, "synchronize", lambda: (events.append("sync"), clock.__setitem__(0, clock[0] + 1e-3))
    )
    monkeypatch.setattr(kernel_bench, "SYNC_CALLS", (4, 50))
    med, p80 = kernel_bench.sync_latency_ms(fn, [0.5, 0.8], rep_ms=30, warmup=2)
    assert events[:8] == ["call", "sync"] * 4  # each call is followed by its synchronize
    timed = events.count("call") - 2
    assert timed == 8  # 5, 3, 5, ... ms (each with its 1 ms synchronize): the 8th ends past 30 ms
    assert (med, p80) == (pytest.approx(4.0), pytest.approx(5.0))  # each call's time includes its synchronize
    events.clear()
    kernel_bench.sync_latency_ms(fn, [0.5], rep_ms=0, warmup=0)
    assert events.count("call") == 4  # at least SYNC_CALLS[0], however short rep_ms
    events.clear()
    kernel_bench.sync_latency_ms(fn, [0.5], rep_ms=10_000, warmup=0)
    assert events.count("call") == 50  # at most SYNC_CALLS[1], however long rep_ms
    events.clear()
    kernel_bench.sync_latency_ms(fn, [0.5], device="cpu", rep_ms=0, warmup=0)
    assert "sync" not in events
    # tools/kernel_bench.py --bench: do_bench's rep_ms, but no more than SYNC_MS for the per-call timing
    import triton.testing as tt

    asked = []
    monkeypatch.setattr(tt, "do_bench", lambda fn, rep, return_mode: 0.001)
    monkeypatch.setattr(
        kernel_bench, "sync_latency_ms", lambda fn, quantiles, device, rep_ms: asked.append(rep_ms) or [0.002]
    )
    row: dict = {}
    kernel_bench._time_into(row, "triton", lambda: None, "cpu", False, 100)
    assert asked == [kernel_bench.SYNC_MS] and (row["triton_us"], row["triton_sync_us"]) == (1.0, 2.0)


def test_aot_cases_are_the_checks_gpu_launches():
    """``python -m tools.aot --cases selfcheck`` compiles what a default GPU check runs."""
    labels = [label for label, _ in aot.selfcheck_cases(torch.float16)]
    gpu = selfcheck.GPU_SHAPES
    assert len(labels) == len(gpu["batches"]) * 6 + 2 and all(" float16 " in label for label in labels)
    assert Counter(label.split()[0] for label in labels) == {
        "fused_projection": 2 * len(gpu["batches"]) + 1,
        "mfb": 4,
        "bilinear": 4,
        "gated_fusion": 2 * len(gpu["batches"]) + 1,
    }
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
    got = kernel_bench.cuda_graph_ms(lambda: None, 50, [0.5, 0.2, 0.8])
    assert streams == ["side stream"]
    if release == "3.2 and later":
        assert got == [0.5, 0.4, 0.6] and calls == [(50, [0.5, 0.2, 0.8], "mean", 1)]
    else:
        assert got == [0.5, None, None] and calls == [(50, None, "median", 1)]


def test_model_bench_plumbing_with_the_timers_stubbed(tiny_checkpoint, monkeypatch):
    import triton.testing as tt

    def ms(scale):  # the eager timing runs with the reference ops forced: twice as slow here
        return lambda fn, *a, **k: (fn(), scale * (2 if os.environ.get("EDGEFUSE_KERNELS") == "reference" else 1))[1]

    monkeypatch.setattr(tt, "do_bench", ms(0.002))
    monkeypatch.setattr(kernel_bench, "cuda_graph_ms", lambda fn, rep_ms, quantiles: [ms(0.001)(fn)])
    monkeypatch.setattr(kernel_bench, "sync_latency_ms", lambda fn, quantiles, device, rep_ms: [ms(0.003)(fn)])
    rows = kernel_bench.bench_model(tiny_checkpoint, KERNEL_DEVICE, batches=(2,), rep_ms=5, dtype=torch.float16)
    assert [r["subset"] for r in rows][-1] == "camera+lidar+radar" and len(rows) == 7
    assert {r["dtype"] for r in rows} == {"float16"}
    assert all(
        (r["triton_us"], r["eager_us"], r["eager_graph_us"], r["speedup"], r["graph_speedup"])
        == (2.0, 4.0, 2.0, 2.0, 2.0)
        for r in rows
    )
    assert all((r["triton_sync_us"], r["eager_sync_us"], r["sync_speedup"]) == (3.0, 6.0, 2.0) for r in rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --bench times the compiled kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_bench_on_the_gpu(tiny_checkpoint, dtype):
    rows = kernel_bench.bench_model(tiny_checkpoint, "cuda", batches=(8,), rep_ms=5, dtype=dtype)
    assert len(rows) == 7 and all(r["triton_us"] > 0 and r["eager_us"] > 0 and r["triton_sync_us"] > 0 for r in rows)


def test_the_command_refuses_bench_in_the_interpreter_and_without_a_gpu():
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "kernel_bench.py"), "--bench", "--interpret"],
        capture_output=True,
        text=True,
        env=base,
        timeout=300,
    )
    assert p.returncode == 2 and "--interpret can only --check" in p.stderr
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "kernel_bench.py"), "--bench"],
        capture_output=True,
        text=True,
        env={**base, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert p.returncode == 2 and "no CUDA device" in p.stderr
