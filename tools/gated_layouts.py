"""What num_warps does to the gated-fusion kernels' compiled code, without a GPU.

For each case (fp16 and fp32; D = 256 and 1024; N = 3 modalities; gates per feature or per
modality; forward and backward) the kernels are compiled for a stand-in sm_90 GPU (Triton's
own JIT, ``tools.aot.stand_in_gpu``) with the launcher's choice and with each
warp count bench_kernels.py times beside it on a GPU (1, 2, 4 and 8 in all), and each binary's
registers and memory instructions are recorded: global load and store widths, shared-memory
accesses and barriers (``aot.memory_instructions``, from the PTX; ``--sass`` also reads the
SASS and fails where it contradicts them). The row marked ``default`` is ``triton_gated._blocks``'
choice: the backward's, and the forward's where D fits one warp's 16-byte vectors (the
forward's own is ``_forward_blocks``, one warp wide; bench_kernels.py times the wider tiles
beside it).

Counts are of instructions in the code, not executions; a GPU run measures what they cost
(``bench_kernels.py`` times the same warps as alternatives at B = 4096).

    python tools/gated_layouts.py --out bench/results/aot [--sass] [--dtype float16] [--dim 1024]
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

N = 3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arch", type=int, default=90)
    p.add_argument(
        "--sass", action="store_true", help="also count from each binary's SASS and check it against the PTX"
    )
    p.add_argument("--dtype", action="append", choices=["float16", "float32"], help="repeatable; default both")
    p.add_argument("--dim", type=int, action="append", help="feature width D; repeatable; default 256 and 1024")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: this compiles the kernels")
    import torch
    import triton
    from bench_kernels import _gated_alternatives

    from edgefuse.kernels import triton_gated
    from tools import aot

    rows, disagreements = [], []
    with aot.stand_in_gpu(args.arch):
        for dtype in [getattr(torch, name) for name in args.dtype or ("float16", "float32")]:
            for d in args.dim or (256, 1024):
                feats, dout = torch.empty(8, N, d, dtype=dtype), torch.empty(8, d, dtype=dtype)
                mask = torch.ones(8, N, dtype=torch.bool)
                for per_feature in (True, False):
                    logits = torch.empty(8, N, d, dtype=dtype) if per_feature else torch.empty(8, N, dtype=dtype)
                    default = triton_gated._blocks(N, d, dtype.itemsize)
                    configs = sorted(
                        [default, *_gated_alternatives(N, d, dtype.itemsize, default).values()], key=lambda c: c[2]
                    )
                    for config in configs:
                        warps = config[2]
                        with aot.capture(compile_if=lambda launch: True) as launches:
                            triton_gated.gated_fusion_triton(feats, logits, mask, config=config)
                            triton_gated.gated_fusion_backward_triton(feats, logits, mask, dout, config=config)
                        for launch, direction in zip(launches, ("forward", "backward")):
                            rec = aot.record_of(launch, args.arch, sass=args.sass)
                            if rec.memory_sass is not None:
                                disagreements += [
                                    f"{rec.kernel} warps={warps}: {x}"
                                    for x in aot.sass_disagreements(rec.memory, rec.memory_sass)
                                ]
                            rows.append(
                                {
                                    "dtype": str(dtype).replace("torch.", ""),
                                    "D": d,
                                    "N": N,
                                    "per_feature_gates": per_feature,
                                    "direction": direction,
                                    "num_warps": warps,
                                    "default": config == default,
                                    "BLOCK_N": default[0],
                                    "BLOCK_D": default[1],
                                    "registers": rec.registers,
                                    "spill_bytes": rec.spill_bytes,
                                    **rec.memory,
                                }
                            )
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "arch": args.arch,
        "triton": triton.__version__,
        "torch": torch.__version__,
        "sass_checked": args.sass,
        "disagreements": disagreements,
        "rows": rows,
    }
    path = args.out / f"gated_layouts-triton-{triton.__version__}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"{'case':<38} {'warps':>5} {'regs':>4} {'barriers':>8} {'shared':>6}  global loads (bits: n)   stores")
    for r in rows:
        case = f"{r['dtype']} D={r['D']} {'per-feature' if r['per_feature_gates'] else 'per-modality'} {r['direction']}"
        mark = "*" if r["default"] else " "
        print(
            f"{case:<38} {r['num_warps']:>4}{mark} {r['registers']:>4} {r['barriers']:>8} {r['shared']:>6}  "
            f"{str(r['global_loads']):<24} {r['global_stores']}"
        )
    print(f"* = the launcher's choice; Triton {triton.__version__}, sm_{args.arch}; wrote {path}")
    for line in disagreements:
        print("SASS contradicts the PTX: " + line, file=sys.stderr)
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
