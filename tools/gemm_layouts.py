"""Which tensor-core instructions the GEMM kernels' launch configurations compile to, without a GPU.

For the projection (3 modalities, K = 2048, 1024, 128, relu + L2 norm, as bench_kernels.py
times it) and MFB (O = 256, 4 factors) at the batches where bench_kernels.py times
alternatives to the launcher's tiles (default B = 4096, fp16), each configuration is compiled
for a stand-in GPU (Triton's own JIT, ``tools.aot.stand_in_gpu``): the launcher's
choice (``default``) and every alternative the GPU run times beside it. Each row gives the
main kernel's warps, registers, spills, shared memory, blocks per SM that its registers
allow, its tensor-core instructions (``aot.tensor_core_instructions``: ``wgmma m64n64k16 f16``
is Hopper's warpgroup MMA over a 64 x 64 tile per warpgroup) and how many launches the call
makes (a row-norm launch follows where the norm is not fused).

These are facts about the code, not timings: bench_kernels.py's ``retune`` says which
configuration wins on a GPU, and this says what each one is.

    python tools/gemm_layouts.py --out bench/results/aot [--arch 90] [--batch 4096] [--dim 1024] [--op mfb]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run from anywhere: the repository root (tools.*, tests.*) and bench/ (its _common helpers) on the path
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "bench")) if p not in sys.path]


def _configs(op: str, b: int, d: int, itemsize: int) -> tuple[tuple, dict[str, tuple]]:
    """The launcher's configuration for ``op`` as bench_kernels records it, and the alternatives
    bench_kernels times beside it."""
    import bench_kernels as bk

    from edgefuse.kernels.triton_bilinear import _mfb_config

    if op == "fused_projection":
        return bk._projection_default(b, d, itemsize), bk._alternatives(b, d, itemsize)
    return _mfb_config(b, bk.MFB_OUT, 4), bk._mfb_alternatives(b, bk.MFB_OUT, 4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--batch", type=int, action="append", help="repeatable; default 4096")
    p.add_argument("--dim", type=int, action="append", help="D; repeatable; default 256 and 1024")
    p.add_argument("--op", action="append", choices=["fused_projection", "mfb"], help="repeatable; default both")
    p.add_argument(
        "--dtype", default="float16", choices=["float16", "float32"], help="float32 is compiled with TF32 allowed"
    )
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: this compiles the kernels")
    import bench_kernels as bk
    import torch
    import triton

    from edgefuse.kernels.triton_bilinear import mfb_triton
    from edgefuse.kernels.triton_projection import fused_projection_triton
    from tools import aot

    dtype = getattr(torch, args.dtype)
    t = lambda *shape: torch.empty(shape, dtype=dtype)  # noqa: E731 (nothing runs: shapes and dtypes only)
    rows = []
    with aot.stand_in_gpu(args.arch), aot.fp32_matmul_precision("high"):
        for op in args.op or ("fused_projection", "mfb"):
            for d in args.dim or (256, 1024):
                ws, bias = [t(d, k) for k in bk.KS], t(len(bk.KS), d)
                u, ub = t(bk.MFB_OUT * 4, d), t(bk.MFB_OUT * 4)
                for b in args.batch or (4096,):
                    xs, x = [t(b, k) for k in bk.KS], t(b, d)
                    default, alternatives = _configs(op, b, d, dtype.itemsize)
                    for label, config in [("default", None), *alternatives.items()]:  # None: the launcher's own choice
                        with aot.capture(compile_if=lambda launch: True) as launches:
                            if op == "fused_projection":
                                fused_projection_triton(xs, ws, bias, "relu", True, config=config)
                            else:
                                mfb_triton(x, x, u, ub, u, ub, 4, config=config)
                        rec = aot.record_of(launches[0], args.arch)
                        rows.append(
                            {
                                "op": op,
                                "B": b,
                                "D": d,
                                "config": label,
                                "launch_config": list(config or default),
                                "kernel": rec.kernel,
                                "blocks": {k: v for k, v in rec.constexprs.items() if k.startswith("BLOCK")},
                                "num_warps": rec.num_warps,
                                "registers": rec.registers,
                                "spill_bytes": rec.spill_bytes,
                                "shared_bytes": rec.shared_bytes,
                                "blocks_per_sm_by_regs": rec.blocks_per_sm_by_regs,
                                "tensor_cores": rec.tensor_cores,
                                "launches": [launch.name for launch in launches],
                            }
                        )
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "arch": args.arch,
        "triton": triton.__version__,
        "torch": torch.__version__,
        "dtype": args.dtype,
        "rows": rows,
    }
    path = args.out / f"gemm_layouts-{args.dtype}-sm_{args.arch}-triton-{triton.__version__}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(
        f"{'case':<30} {'config':<28} {'warps':>5} {'regs':>4} {'shared':>6} {'blocks/SM (regs)':>16} {'launches':>8} "
        " tensor cores"
    )
    for r in rows:
        case = f"{r['op']} B={r['B']} D={r['D']}"
        print(
            f"{case:<30} {r['config']:<28} {r['num_warps']:>5} {r['registers']:>4} {r['shared_bytes']:>6} "
            f"{r['blocks_per_sm_by_regs']:>16} {len(r['launches']):>8}  {r['tensor_cores'] or 'none'}"
        )
    print(f"Triton {triton.__version__}, sm_{args.arch}, {args.dtype}; wrote {path}")
    spills = [r for r in rows if r["spill_bytes"]]
    for r in spills:
        print(f"spills {r['spill_bytes']} B per thread: {r['op']} B={r['B']} D={r['D']} {r['config']}", file=sys.stderr)
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
