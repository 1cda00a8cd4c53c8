"""Lean per-subset graphs against the model's own formulation: ONNX nodes and batch-1 latency.

``edgefuse export`` writes lean graphs by default (``edgefuse.export.fold_normalization`` and, for
gated fusion, ``_LeanGatedSubset``); ``export_model(..., lean=False)`` keeps the model's own
formulation. For every subset of a checkpoint (default: the ``make demo`` one) this exports both,
counts their nodes in the ONNX file and as ONNX Runtime runs them (all graph optimisations), checks
that they give the same logits, and times them interleaved in one run (FP32, batch 1, one thread).

    python bench/bench_lean.py --checkpoint runs/demo/checkpoint --out bench/results/local
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, ort_session, quantiles, write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iters", type=int, default=3000)
    args = p.parse_args(argv)
    import onnx
    import onnxruntime as ort
    import torch

    from edgefuse import __version__
    from edgefuse.checkpoint import load_checkpoint, load_training_data
    from edgefuse.export import export_model

    if not (args.checkpoint / "config.json").is_file():
        print(f"bench_lean: no checkpoint at {args.checkpoint}; run `make demo` first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    model, doc = load_checkpoint(args.checkpoint)
    test = load_training_data(args.checkpoint, doc)["test"]
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgefuse-bench-lean.") as work:
        work = Path(work)
        recs = {lean: export_model(model, work / str(lean), lean=lean, progress=False) for lean in (False, True)}
        for key, g in recs[True]["graphs"].items():
            sessions, nodes = {}, {}
            feeds = {k: np.ascontiguousarray(test.inputs[k][:1]) for k in g["inputs"]}
            for lean, form in ((False, "own"), (True, "lean")):
                path = work / str(lean) / recs[lean]["graphs"][key]["file"]
                opt = work / f"{key}.{form}.opt.onnx"
                sessions[form] = ort_session(path, opt)
                nodes[form] = {"onnx": len(onnx.load(str(path)).graph.node), "ort": len(onnx.load(str(opt)).graph.node)}
            diff = float(np.abs(sessions["own"].run(None, feeds)[0] - sessions["lean"].run(None, feeds)[0]).max())
            t = {"own": [], "lean": []}
            for _ in range(100):
                for s in sessions.values():
                    s.run(None, feeds)
            for i in range(args.iters):
                for form in ("own", "lean") if i % 2 == 0 else ("lean", "own"):
                    t0 = time.perf_counter()
                    sessions[form].run(None, feeds)
                    t[form].append((time.perf_counter() - t0) * 1e6)
            q = {k: quantiles(v) for k, v in t.items()}
            out[key] = {
                "nodes": nodes,
                "latency": q,
                "lean_over_own_p50": q["lean"]["p50_us"] / q["own"]["p50_us"],
                "max_abs_logit_diff": diff,
            }
            print(
                f"{key:<22} nodes {nodes['own']['ort']:3d} -> {nodes['lean']['ort']:3d}  p50 "
                f"{q['own']['p50_us']:7.1f} -> {q['lean']['p50_us']:7.1f} us ({out[key]['lean_over_own_p50']:.2f}x)",
                flush=True,
            )
    full = "+".join(model.names)
    report = {
        "machine": machine(),
        "versions": {"edgefuse": __version__, "onnxruntime": ort.__version__, "torch": torch.__version__},
        "batch": 1,
        "threads": 1,
        "model": {"checkpoint": str(args.checkpoint), "fusion": model.fusion_name, "dim": model.dim},
        "subsets": out,
        "targets": {
            "all-sensor FP32 p50, lean <= 0.8x the model's own export": out[full]["lean_over_own_p50"] <= 0.8,
        },
    }
    write_report(report, args.out / "lean.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
