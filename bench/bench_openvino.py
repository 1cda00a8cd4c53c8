"""ONNX Runtime against OpenVINO on the same all-sensor graphs, FP32 and INT8, on this CPU.

What an x86 edge user would pick instead of ONNX Runtime. From one checkpoint (default: the
``make demo`` one), the all-sensor subset's FP32 graph and its Q/DQ INT8 graphs (every
Conv/Gemm/MatMul quantized, as for TensorRT; and only those with >= 8192 weights, as edgefuse
builds for ONNX Runtime) run through ONNX Runtime (CPU provider, all graph optimisations) and
OpenVINO (CPU plugin, LATENCY hint, f32 inference precision, which reads Q/DQ as INT8). All are
interleaved in one run at batch 1 with one thread; the report has the node counts and versions.

    python bench/bench_openvino.py --checkpoint runs/demo/checkpoint --out bench/results/local
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
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--name", default="openvino.json", help="the report's file name (default: openvino.json)")
    args = p.parse_args(argv)
    try:
        import openvino as ov
    except ImportError:
        print("bench_openvino: needs openvino (pip install openvino)", file=sys.stderr)
        return 2
    import onnx
    import onnxruntime as ort
    import torch

    from edgefuse import __version__
    from edgefuse.calibration import calibrate_export
    from edgefuse.checkpoint import load_checkpoint, load_training_data
    from edgefuse.export import export_model

    if not (args.checkpoint / "config.json").is_file():
        print(f"bench_openvino: no checkpoint at {args.checkpoint}; run `make demo` first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    model, doc = load_checkpoint(args.checkpoint)
    data = load_training_data(args.checkpoint, doc)
    full = "+".join(model.names)
    test = data["test"]
    feeds = {k: np.ascontiguousarray(test.inputs[k][:1]) for k in model.names}
    with tempfile.TemporaryDirectory(prefix="edgefuse-bench-ov.") as work:
        work = Path(work)
        export_model(model, work / "export", subsets=[model.names], progress=False)
        graphs = {"fp32": work / "export" / f"{full}.onnx"}
        for form, mw in (("int8_all", 0), ("int8_large", 8192)):
            rec = calibrate_export(work / "export", data, work / form, max_drop=100.0, progress=False, min_weights=mw)
            graphs[form] = work / form / rec["subsets"][full]["int8_file"]
        runners, nodes = {}, {}
        for form, path in graphs.items():
            sess = ort_session(path, work / f"{form}.ort-opt.onnx")
            runners[f"ort_{form}"] = lambda s=sess: s.run(None, feeds)
            nodes[f"ort_{form}"] = len(onnx.load(str(work / f"{form}.ort-opt.onnx")).graph.node)
            core = ov.Core()
            compiled = core.compile_model(
                str(path),
                "CPU",
                {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
            )
            req = compiled.create_infer_request()
            ov_feeds = {compiled.input(k).get_any_name(): v for k, v in feeds.items()}
            runners[f"openvino_{form}"] = lambda r=req, f=ov_feeds: r.infer(f)
            nodes[f"openvino_{form}"] = len(compiled.get_runtime_model().get_ordered_ops())
            nodes[f"onnx_{form}"] = len(onnx.load(str(path)).graph.node)
        # the same answer: each runner's logits against ONNX Runtime FP32's
        ref = runners["ort_fp32"]()[0]
        agree = {}
        for k, fn in runners.items():
            out = fn()
            logits = out[0] if isinstance(out, list) else next(iter(out.values()))
            agree[k] = float(np.abs(np.asarray(logits) - ref).max())
        names = list(runners)
        for k in names:
            for _ in range(100):
                runners[k]()
        t = {k: [] for k in names}
        for i in range(args.iters):
            for k in names[i % len(names) :] + names[: i % len(names)]:
                t0 = time.perf_counter()
                runners[k]()
                t[k].append((time.perf_counter() - t0) * 1e6)
    q = {k: quantiles(v) for k, v in t.items()}
    base = q["ort_fp32"]["p50_us"]
    report = {
        "machine": machine(),
        "versions": {"edgefuse": __version__, "onnxruntime": ort.__version__, "openvino": ov.__version__},
        "batch": 1,
        "threads": 1,
        "model": {"checkpoint": str(args.checkpoint), "subset": full, "fusion": model.fusion_name, "dim": model.dim},
        "forms": {
            "fp32": "the exported FP32 graph",
            "int8_all": "Q/DQ on every Conv/Gemm/MatMul (TensorRT's placement)",
            "int8_large": "Q/DQ on Conv/Gemm/MatMul with >= 8192 weights (edgefuse's ONNX Runtime default)",
        },
        "latency": q,
        "p50_over_ort_fp32": {k: v["p50_us"] / base for k, v in q.items()},
        "nodes": nodes,
        "max_abs_logit_diff_vs_ort_fp32": agree,
    }
    for k in names:
        print(
            f"{k:<22}p50 {q[k]['p50_us']:8.1f} us  p99 {q[k]['p99_us']:8.1f} us  {q[k]['p50_us'] / base:5.2f}x ORT FP32"
        )
    write_report(report, args.out / args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
