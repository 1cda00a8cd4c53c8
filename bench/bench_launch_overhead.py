"""Host time of the kernel launchers, without a GPU: everything a call costs before the GPU works.

At edge batches (1-32 rows) a fused op's latency is mostly host time: argument checks,
launch planning and Triton's launch. This times each launcher at the benchmark shapes
(3 modalities, K = 2048/1024/128, D = 256, B = 8, fp16), on any machine, CPU tensors, three
ways:

* ``host_us``: edgefuse's launcher alone: ``kernels/_launch.launch`` off and Triton's
  ``JITFunction.run`` a no-op;
* ``launch_us``: what a call costs: plus ``launch``'s own key and the compiled kernel's launch
  path (``CompiledKernel[grid]``: stream, launch metadata, hooks). The kernels are compiled
  for sm_90 by Triton's compiler, as tools/aot.py does, and a stand-in driver answers for
  the GPU (device 0, stream 0); only the final call into the CUDA driver (``cuLaunchKernel``
  and its argument packing) is replaced by a no-op. That last part is measured only on a GPU
  (bench/bench_kernels.py);
* ``triton_run_us``: the same with every launch through Triton's ``JITFunction.run``
  (argument binding and specialisation, cache key, compiled-kernel lookup, then the same
  launch path), as before ``launch`` kept compiled kernels, and as on a Triton release
  ``launch`` was not checked on.
* ``ops_us``: the public op (``edgefuse.kernels.ops``, what the fusion modules call) on the
  same stand-in, under ``torch.no_grad`` with the weights as trainable parameters, as a model
  runs inference: its dispatch (``EDGEFUSE_KERNELS``, export and autograd checks, autocast),
  contiguity and device handling, then ``launch_us``'s path. The CPU tensors answer
  ``is_cuda`` as CUDA tensors do, ``torch.cuda.current_device`` names their device, and dispatch's
  once-per-process GPU check (cached after the first call on a GPU) is skipped.
  ``dispatch_us`` is what it adds to ``launch_us``: the median difference of the two timed
  in turns (a shared host's slow spells, which move each timing by a third, slow both).

Writes ``launch_overhead.json``.

    python bench/bench_launch_overhead.py --out bench/results/cpu-2core
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import machine

sys.path[:0] = [p for p in (str(Path(__file__).resolve().parents[1]),) if p not in sys.path]  # tools.*


#: timings of the public op, each paired with one of its launcher
PAIRS = 9


def _best_us(fn, n: int = 2000, repeats: int = 7) -> float:
    """Min over repeats of the mean per-call time: the least disturbed estimate on a shared host."""
    best = float("inf")
    for _ in range(repeats):
        for _ in range(100):
            fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


@contextlib.contextmanager
def _as_on_a_gpu(ops):
    """The CPU tensors dispatch as CUDA tensors do: ``is_cuda`` answers True (a plain class
    attribute: a lookup as cheap as the real one), the current CUDA device is the tensors' own
    (a CPU tensor's device index is None), as for a model on the current GPU, and dispatch's
    GPU check, which a GPU caches at the first call, is skipped."""
    saved = torch.Tensor.__dict__.get("is_cuda"), torch.cuda.current_device, ops.triton_cuda_error
    torch.Tensor.is_cuda, torch.cuda.current_device, ops.triton_cuda_error = True, lambda: None, lambda: None
    try:
        yield
    finally:
        if saved[0] is None:
            del torch.Tensor.is_cuda
        else:
            torch.Tensor.is_cuda = saved[0]
        torch.cuda.current_device, ops.triton_cuda_error = saved[1], saved[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        print("bench_launch_overhead: unset TRITON_INTERPRET (it times the compiled-mode launchers)", file=sys.stderr)
        return 2
    import triton
    import triton.runtime.jit as jit

    from edgefuse.kernels import _launch, ops
    from edgefuse.kernels.triton_bilinear import mfb_triton
    from edgefuse.kernels.triton_gated import gated_fusion_triton
    from edgefuse.kernels.triton_projection import dot_precision, fused_projection_triton
    from tools.aot import stand_in_gpu

    torch.set_num_threads(1)
    b, d, ks = 8, 256, (2048, 1024, 128)
    r = lambda *shape: torch.randn(*shape, dtype=torch.float16)  # noqa: E731 (the benchmark's dtype)
    ws, bias = [r(d, k) for k in ks], r(len(ks), d)
    xs = [r(b, k) for k in ks]
    feats, logits, mask = r(b, 3, d), r(b, 3, d), torch.ones(b, 3, dtype=torch.bool)
    u, v, ub, vb = r(4 * d, d), r(4 * d, d), r(4 * d), r(4 * d)
    x, y = r(b, d), r(b, d)
    calls = {
        "fused_projection(relu, l2)": lambda: fused_projection_triton(xs, ws, bias, "relu", True),
        "gated_fusion(per-feature softmax)": lambda: gated_fusion_triton(feats, logits, mask),
        "mfb(factors=4, l2)": lambda: mfb_triton(x, y, u, ub, v, vb, 4),
        "torch.empty (for scale)": lambda: torch.empty((b, 3, d)),
        # what an fp32 launch adds: torch's TF32 setting, read on each call
        "dot_precision(float32)": lambda: dot_precision(torch.float32),
    }
    trainable = lambda t: t.clone().requires_grad_()  # noqa: E731 (a model's weights are parameters)
    ws_p, (bias_p, u_p, v_p, ub_p, vb_p) = [trainable(w) for w in ws], map(trainable, (bias, u, v, ub, vb))
    public = {  # the same calls through the public ops
        "fused_projection(relu, l2)": lambda: ops.fused_projection(xs, ws_p, bias_p, "relu", True),
        "gated_fusion(per-feature softmax)": lambda: ops.gated_fusion(feats, logits, mask),
        "mfb(factors=4, l2)": lambda: ops.mfb(x, y, u_p, ub_p, v_p, vb_p, 4),
    }
    results = {}
    launches = []
    # no GPU work and no key of launch's: what edgefuse does before a launch
    enabled, triton_run, _launch.enabled = _launch.enabled, jit.JITFunction.run, False
    jit.JITFunction.run = lambda self, *a, grid, warmup, **k: launches.append(self.__name__)
    try:
        for name, fn in calls.items():
            launches.clear()
            fn()
            n_launch = len(launches)
            results[name] = {"host_us": round(_best_us(fn), 2), "kernel_launches": n_launch}
    finally:
        _launch.enabled, jit.JITFunction.run = enabled, triton_run
    triton_path = None
    try:
        with stand_in_gpu(90) as driver_launches:
            for name, fn in calls.items():
                if results[name]["kernel_launches"]:
                    fn()  # the first call compiles for sm_90 (through Triton's run, as every first call)
                    driver_launches.clear()
                    fn()  # how many launches went all the way to the driver's launch
                    results[name]["driver_launches"] = sum(driver_launches.values())
                    results[name]["launch_us"] = round(_best_us(fn), 2)
                    enabled, _launch.enabled = _launch.enabled, False
                    try:
                        results[name]["triton_run_us"] = round(_best_us(fn), 2)
                    finally:
                        _launch.enabled = enabled
            with _as_on_a_gpu(ops), torch.no_grad():
                for name, fn in public.items():
                    fn()
                    driver_launches.clear()
                    fn()
                    if sum(driver_launches.values()) != results[name]["kernel_launches"]:
                        raise RuntimeError(
                            f"{name} through edgefuse.kernels.ops made launches "
                            f"{dict(driver_launches)}, not the launcher's {results[name]['kernel_launches']}"
                        )
                    # the op and its launcher in turns: a slow spell of a shared host slows both
                    pairs = [(_best_us(calls[name], 1000, 1), _best_us(fn, 1000, 1)) for _ in range(PAIRS)]
                    results[name]["ops_us"] = round(min(op for _, op in pairs), 2)
                    results[name]["dispatch_us"] = round(statistics.median(op - launcher for launcher, op in pairs), 2)
    except Exception as e:  # Triton internals this relies on have changed: report, keep the rest
        triton_path = f"not measured: {type(e).__name__}: {e}"
    print(f"{'':36s} {'launcher':>9s} {'+ launch':>10s} {'+ Triton run':>13s} {'public op':>13s} {'(dispatch)':>13s}")
    for name, rec in results.items():
        n = rec["kernel_launches"]
        cols = "".join(
            f"{rec[k]:10.1f} us" if k in rec else f"{'-':>13s}"
            for k in ("launch_us", "triton_run_us", "ops_us", "dispatch_us")
        )
        print(f"{name:36s} {rec['host_us']:6.1f} us{cols}  ({n} launch{'es' if n != 1 else ''})", flush=True)
    if triton_path:
        print(f"with Triton's launch path: {triton_path}", file=sys.stderr)
    doc = {
        "machine": machine(),
        "versions": {"torch": torch.__version__, "triton": triton.__version__},
        "shapes": {"B": b, "D": d, "K": list(ks), "dtype": "float16"},
        "measures": {
            "host_us": "edgefuse's launcher, launch off and Triton's JITFunction.run a no-op",
            "launch_us": "plus edgefuse's launch (kernels/_launch.py) on a stand-in sm_90 driver, "
            "without the CUDA driver's launch call: what a call costs",
            "triton_run_us": "the same, every launch through Triton's JITFunction.run",
            "ops_us": "launch_us's path through the public op (edgefuse.kernels.ops) under torch.no_grad: "
            "plus its dispatch, autocast, contiguity and device handling (the GPU check, "
            "cached after a GPU's first call, skipped)",
            "dispatch_us": "what the public op adds to the launcher and its launch: the median "
            f"difference over {PAIRS} timings of each, taken in turns",
            "driver_launches": "launches of one call that reached the stand-in driver's launch "
            "(should equal kernel_launches)",
        },
        "launch_checked_on": "Triton %d.%d-%d.%d" % (*_launch.CHECKED[0], *_launch.CHECKED[1]),
        "with_triton": triton_path or "measured",
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "launch_overhead.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
