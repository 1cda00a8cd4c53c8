"""Calibration methods compared on one model: time and INT8 accuracy drop per subset.

Exports the checkpoint once, then calibrates it with minmax, percentile and entropy (gate
disabled, so every method reports), and writes ``calibration.json``.

    python bench/bench_calibration.py --checkpoint runs/demo/checkpoint --out bench/results/local
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _common import machine


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--methods", default="minmax,percentile,entropy")
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args(argv)
    if not (args.checkpoint / "config.json").is_file():
        print(f"bench_calibration: no checkpoint at {args.checkpoint}; run `make demo` first", file=sys.stderr)
        return 2

    import onnxruntime as ort

    from edgefuse.calibration import calibrate_export
    from edgefuse.calibration.quantize import OP_TYPES
    from edgefuse.checkpoint import load_checkpoint, load_training_data
    from edgefuse.export import export_model

    model, doc = load_checkpoint(args.checkpoint)
    data = load_training_data(args.checkpoint, doc)
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgefuse-bench-calib.") as work:
        export_model(model, Path(work) / "export", progress=False)
        for method in args.methods.split(","):
            rec = calibrate_export(
                Path(work) / "export",
                data,
                Path(work) / method,
                method=method,
                size=args.size,
                max_drop=100.0,
                progress=False,
            )
            drops = {k: v["accuracy"]["drop_points"] for k, v in rec["subsets"].items()}
            results[method] = {
                "seconds": rec["seconds"],
                "max_drop_points": max(drops.values()),
                "drop_points": drops,
                "int8": {k: v["accuracy"]["int8"] for k, v in rec["subsets"].items()},
                "fp32": {k: v["accuracy"]["fp32"] for k, v in rec["subsets"].items()},
            }
            print(f"{method:<11} {rec['seconds']:7.1f} s   max drop {max(drops.values()):6.2f} points", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {
        "machine": machine(),
        "versions": {"onnxruntime": ort.__version__},
        "checkpoint": str(args.checkpoint),
        "size": args.size,
        "qdq_op_types": list(OP_TYPES),
        "methods": results,
    }
    (args.out / "calibration.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / 'calibration.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
