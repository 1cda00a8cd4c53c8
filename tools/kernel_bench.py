"""How fast the fused kernels are on this GPU: ``edgefuse kernels --check`` plus timing, a quick answer on one machine.

    python tools/kernel_bench.py --bench                       # each op's Triton launcher against eager PyTorch
    python tools/kernel_bench.py --batch 1 4 --dim 512 --widths 1536,256 --check --bench
    python tools/kernel_bench.py --checkpoint runs/x/checkpoint --dtype float16 --check --bench

``--bench`` times each op's Triton launcher and the eager PyTorch reference at each batch
with ``triton.testing.do_bench`` (CUDA events, median), per call synchronized (the wall clock
of one call and ``torch.cuda.synchronize()``: the host's launch cost and the GPU's time, what
a control loop waits per frame) and, unless ``--no-graph``, one CUDA-graph replay per call
(GPU time only). With ``--checkpoint`` it times a trained model's forward, its fused ops on the
kernels against the reference ops. ``--check`` runs ``edgefuse kernels --check`` first; the
JSON has the same form. ``bench/bench_kernels.py`` is the full benchmark (torch.compile,
alternative configurations, the GPU bar).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT),) if p not in sys.path]

import torch  # noqa: E402

from edgefuse.errors import EdgefuseError  # noqa: E402
from edgefuse.kernels import reference as ref  # noqa: E402
from edgefuse.kernels.selfcheck import (  # noqa: E402
    BILINEAR_MAX,
    BILINEAR_OUT,
    MFB_FACTORS,
    _kernels_env,
    _load_model,
    _mfb_rows,
    _model_inputs,
    _pair,
    _shapes,
    _short,
    _to_device,
    check_model_command,
    check_ops_command,
    finish,
    model_batches_dtype,
    prepare,
)


def bench(
    device: str = "cuda",
    batches: Sequence[int] | None = None,
    dim: int | None = None,
    widths: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float16,
    graph: bool = True,
    rep_ms: int = 100,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """µs of each op's Triton launcher and of the eager reference, per batch (CUDA only)."""
    from edgefuse.kernels.triton_bilinear import bilinear_triton, mfb_triton
    from edgefuse.kernels.triton_gated import gated_fusion_triton
    from edgefuse.kernels.triton_projection import fused_projection_triton

    batches, dim, widths = _shapes(device, batches, dim, widths)
    n, (k1, k2), rows, bk = len(widths), _pair(widths), _mfb_rows(dim), min(dim, BILINEAR_MAX)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, device=device) * scale).to(dtype)

    ws, bias = [r(dim, k, scale=k**-0.5) for k in widths], r(n, dim, scale=0.1)
    uw, vw, ub, vb = r(rows, k1, scale=k1**-0.5), r(rows, k2, scale=k2**-0.5), r(rows), r(rows)
    bw, bb = r(BILINEAR_OUT, bk, bk, scale=1 / bk), r(BILINEAR_OUT)
    out: list[dict] = []
    for b in batches:
        xs, x, y = [r(b, k) for k in widths], r(b, k1), r(b, k2)
        bx, by = r(b, bk), r(b, bk)
        feats, logits = r(b, n, dim), r(b, n)
        mask = torch.ones(b, n, dtype=torch.bool, device=device)
        pairs = {
            "fused_projection": (
                lambda: fused_projection_triton(xs, ws, bias, "relu", True),
                lambda: ref.fused_projection_reference(xs, ws, bias, "relu", True),
            ),
            "mfb": (
                lambda: mfb_triton(x, y, uw, ub, vw, vb, MFB_FACTORS, None, True),
                lambda: ref.mfb_reference(x, y, uw, ub, vw, vb, MFB_FACTORS, None, True),
            ),
            "bilinear": (lambda: bilinear_triton(bx, by, bw, bb), lambda: ref.bilinear_reference(bx, by, bw, bb)),
            "gated_fusion": (
                lambda: gated_fusion_triton(feats, logits, mask, "softmax"),
                lambda: ref.gated_fusion_reference(feats, logits, mask, "softmax"),
            ),
        }
        for op, (triton_fn, eager_fn) in pairs.items():
            row = {"op": op, "B": b, "dtype": _short(dtype)}
            for name, fn in (("triton", triton_fn), ("eager", eager_fn)):
                _time_into(row, name, fn, device, graph, rep_ms)
            _add_row(out, row, progress)
    return out


def bench_model(
    checkpoint: str | Path,
    device: str = "cuda",
    batches: Sequence[int] = (1, 8),
    graph: bool = True,
    rep_ms: int = 100,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """µs of a trained model's forward per default sensor subset and batch, the model cast to
    ``dtype`` and its fused ops on the Triton kernels and on the reference ops (CUDA only):
    what the kernels buy this model."""
    model, subsets = _load_model(checkpoint)
    here = _to_device(model, device, dtype)
    rows = []
    for name, subset in subsets:
        for b in batches:
            inputs = _model_inputs(model, subset, b, device, seed=b)
            row = {"op": "model", "subset": name, "B": b, "dtype": _short(dtype)}
            for path, env in (("triton", None), ("eager", "reference")):
                with torch.inference_mode(), _kernels_env(env):
                    _time_into(row, path, lambda: here(inputs), device, graph, rep_ms)
            _add_row(rows, row, progress)
    return rows


def _time_into(row: dict, name: str, fn: Callable[[], object], device: str, graph: bool, rep_ms: int) -> None:
    """``row[name + "_us"]``: ``fn``'s median µs (do_bench); ``name + "_sync_us"``: its median
    latency per call, synchronized (``sync_latency_ms``); and ``name + "_graph_us"`` (one
    CUDA-graph replay per call) or, when capture fails, ``name + "_graph_error"``."""
    import triton.testing as tt

    fn()  # compile and warm up outside the timing
    if device != "cpu":  # (a CPU device only in the plumbing tests, with the timers stubbed)
        torch.cuda.synchronize()
    row[f"{name}_us"] = round(tt.do_bench(fn, rep=rep_ms, return_mode="median") * 1e3, 2)
    row[f"{name}_sync_us"] = round(sync_latency_ms(fn, [0.5], device, rep_ms=min(rep_ms, SYNC_MS))[0] * 1e3, 2)
    if graph:
        try:
            row[f"{name}_graph_us"] = round(cuda_graph_ms(fn, rep_ms, [0.5])[0] * 1e3, 2)
        except Exception as e:  # capture can fail (an op that syncs): say so, keep the rest
            row[f"{name}_graph_error"] = f"{type(e).__name__}: {e}"[:200]


def _add_row(rows: list[dict], row: dict, progress: Callable[[dict], None] | None) -> None:
    """``row`` with its speedups (eager over Triton, per timing mode), appended and reported."""
    row["speedup"] = round(row["eager_us"] / row["triton_us"], 2)
    row["sync_speedup"] = round(row["eager_sync_us"] / row["triton_sync_us"], 2)
    if "triton_graph_us" in row and "eager_graph_us" in row:
        row["graph_speedup"] = round(row["eager_graph_us"] / row["triton_graph_us"], 2)
    rows.append(row)
    if progress:
        progress(row)


#: calls per synchronized-latency timing, at least and at most, and the ms after which no
#: further call starts once the least are done: enough for a median, and cheap inside the GPU
#: check's 5 minutes (a fused op's 200 calls take a few ms; a whole model's forward stops at 50 ms)
SYNC_CALLS = (10, 200)
SYNC_MS = 50


def sync_latency_ms(
    fn: Callable[[], object], quantiles: Sequence[float], device: str = "cuda", rep_ms: float = SYNC_MS, warmup: int = 5
) -> list[float]:
    """``quantiles`` of the wall-clock ms of one ``fn()`` and ``torch.cuda.synchronize()``,
    call after call, without an L2 flush: a control loop's latency per frame, where nothing
    else is queued on the GPU. It counts the host's launch cost and the GPU's time together:
    ``do_bench`` hides the host's cost behind its L2 flush wherever the flush outlasts it, and a
    CUDA-graph replay has none. Between ``SYNC_CALLS`` calls, and no more than ``rep_ms`` of
    them past the first. (``device="cpu"``: no synchronize, for the tests.)"""
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    for _ in range(warmup):
        fn()
        sync()
    least, most = SYNC_CALLS
    times: list[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(times) < most and (len(times) < least or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    ms = torch.tensor(times, dtype=torch.float64)
    return [float(torch.quantile(ms, q)) for q in quantiles]


def cuda_graph_ms(fn: Callable[[], object], rep_ms: int, quantiles: Sequence[float]) -> list[float | None]:
    """``triton.testing.do_bench_cudagraph``'s ``quantiles`` of ``fn``'s ms, on every Triton from
    3.0: on a side stream (3.0 and 3.1 refuse to capture on the default one; later releases
    make their own), and before 3.2, which has no ``quantiles``, the median alone (the 0.5
    quantile; the others None)."""
    import inspect

    import triton.testing as tt

    with torch.cuda.stream(torch.cuda.Stream()):
        if "quantiles" in inspect.signature(tt.do_bench_cudagraph).parameters:
            result = tt.do_bench_cudagraph(fn, rep=rep_ms, quantiles=list(quantiles))
            return [float(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
        median = float(tt.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))
    return [median if q == 0.5 else None for q in quantiles]


def _print_row(r: dict) -> None:
    graph = (
        f"; graph {r['triton_graph_us']:.1f} vs {r['eager_graph_us']:.1f} µs ({r['graph_speedup']:.2f}x)"
        if "graph_speedup" in r
        else ""
    )
    sync = f"; per call {r['triton_sync_us']:.1f} vs {r['eager_sync_us']:.1f} µs ({r['sync_speedup']:.2f}x)"
    what = f"{r['op']} {r['subset']}" if "subset" in r else r["op"]
    print(
        f"{what:<18}B={r['B']:<6}triton {r['triton_us']:.1f} µs, eager {r['eager_us']:.1f} µs "
        f"({r['speedup']:.2f}x){sync}{graph}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    from edgefuse.kernel_options import kernels_arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kernels_arguments(p)
    p.add_argument(
        "--bench", action="store_true", help="time each op's Triton path (or the model's forward) against eager PyTorch"
    )
    p.add_argument("--no-graph", action="store_true", help="--bench: skip the CUDA-graph timings")
    args = p.parse_args(argv)
    if args.interpret and args.bench:
        print(
            "kernel_bench: --bench times the compiled kernels on a CUDA GPU; --interpret can only --check",
            file=sys.stderr,
        )
        return 2
    try:
        device, out, t0 = prepare(args, runs_kernels=args.check or args.bench)
        if args.checkpoint is not None:
            failed = check_model_command(args, device, out)
            if args.bench:
                batches, dtype = model_batches_dtype(args, device)
                print(
                    f"\nbench of {args.checkpoint} in {_short(dtype)} on {device}: median µs of a forward, fused ops "
                    "on "
                    "the kernels vs the reference ops (do_bench; per call: synchronized, wall clock; CUDA graph: one "
                    "replay per call)",
                    flush=True,
                )
                out["bench"] = bench_model(
                    args.checkpoint, device, batches, graph=not args.no_graph, dtype=dtype, progress=_print_row
                )
        else:
            failed = check_ops_command(args, device, out)
            if args.bench:
                dtype = getattr(torch, args.dtype or "float16")
                print(
                    f"\nbench on {device}, {_short(dtype)}: median µs (do_bench; per call: synchronized, "
                    "wall clock; CUDA graph: one replay per call)",
                    flush=True,
                )
                out["bench"] = bench(
                    device, args.batch, args.dim, args.widths, dtype, graph=not args.no_graph, progress=_print_row
                )
        return finish(args, out, t0, failed)
    except EdgefuseError as e:
        print(f"kernel_bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
