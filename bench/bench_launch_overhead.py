"""Host time of the kernel launchers, without a GPU: everything a call costs before the GPU works.

At edge batches (1-32 rows) a fused op's latency is mostly host time: argument checks,
launch planning and Triton's launch. This times each launcher with Triton's launch replaced
by a no-op (so it runs on any machine, CPU tensors), at the benchmark shapes (3 modalities,
K = 2048/1024/128, D = 256, B = 8). Triton's own launch cost comes on top and is measured
only on a GPU (bench/bench_kernels.py). Writes ``launch_overhead.json``.

    python bench/bench_launch_overhead.py --out bench/results/cpu-2core
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _common import machine


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        print("bench_launch_overhead: unset TRITON_INTERPRET (it times the compiled-mode launchers)", file=sys.stderr)
        return 2
    import triton
    import triton.runtime.jit as jit

    launches = []
    jit.JITFunction.run = lambda self, *a, grid, warmup, **k: launches.append(self.__name__)  # no GPU work

    from edgefuse.kernels.triton_bilinear import mfb_triton
    from edgefuse.kernels.triton_gated import gated_fusion_triton
    from edgefuse.kernels.triton_projection import fused_projection_triton

    torch.set_num_threads(1)
    b, d, ks = 8, 256, (2048, 1024, 128)
    ws, bias = [torch.randn(d, k) for k in ks], torch.randn(len(ks), d)
    xs = [torch.randn(b, k) for k in ks]
    feats, logits, mask = torch.randn(b, 3, d), torch.randn(b, 3, d), torch.ones(b, 3, dtype=torch.bool)
    u, v, ub, vb = torch.randn(4 * d, d), torch.randn(4 * d, d), torch.randn(4 * d), torch.randn(4 * d)
    x, y = torch.randn(b, d), torch.randn(b, d)
    calls = {
        "fused_projection(relu, l2)": lambda: fused_projection_triton(xs, ws, bias, "relu", True),
        "gated_fusion(per-feature softmax)": lambda: gated_fusion_triton(feats, logits, mask),
        "mfb(factors=4, l2)": lambda: mfb_triton(x, y, u, ub, v, vb, 4),
        "torch.empty (for scale)": lambda: torch.empty((b, 3, d)),
    }
    results = {}
    for name, fn in calls.items():
        launches.clear()
        fn()
        n_launch = len(launches)
        results[name] = {"host_us": round(_best_us(fn), 2), "kernel_launches": n_launch}
        print(f"{name:36s} {results[name]['host_us']:7.1f} us  ({n_launch} launch{'es' if n_launch != 1 else ''})", flush=True)
    doc = {"machine": machine(),
           "versions": {"torch": torch.__version__, "triton": triton.__version__},
           "shapes": {"B": b, "D": d, "K": list(ks)}, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "launch_overhead.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
