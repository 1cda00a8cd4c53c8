"""Helpers the benchmark scripts share (imported as ``_common``: the scripts run from bench/)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: ONNX Runtime CPU node types that do a layer's GEMM or convolution work (FP32 and INT8 forms)
WEIGHTED_OPS = frozenset(
    {
        "Gemm",
        "FusedGemm",
        "MatMul",
        "FusedMatMul",
        "Conv",
        "FusedConv",
        "QGemm",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulIntegerToFloat",
    }
)


def machine() -> dict:
    """CPU model, core count, the SIMD features INT8 speed depends on, and the Python version."""
    from edgefuse._platform import cpu

    name, flags = cpu()
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "python": platform.python_version(),
    }


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is absent (plots are optional)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def weighted_share(engine, feeds: dict, runs: int = 500) -> dict:
    """ONNX Runtime's profiler on ``engine`` (an OrtEngine): how much of one run the GEMM and
    convolution kernels take (``WEIGHTED_OPS``), and how many nodes run. The profiler adds
    per-node time, so the share is indicative, not exact."""
    import json
    import tempfile

    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="edgefuse-profile.") as tmp:
        so.profile_file_prefix = str(Path(tmp) / "p")
        sess = ort.InferenceSession(str(engine.source), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    run_us = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    weighted = sum(e["dur"] for e in kernels if e["args"]["op_name"] in WEIGHTED_OPS) / len(run_us)
    return {
        "nodes_per_run": len(kernels) / len(run_us),
        "profiled_run_us": float(np.median(run_us)),
        "weighted_kernels_us": weighted,
        "weighted_share": weighted / float(np.median(run_us)),
    }


def macs_per_frame(model, inputs: dict) -> int:
    """Multiply-accumulates of one frame through ``model`` (edgefuse compare's counter)."""
    from edgefuse.compare import macs_per_frame as count

    return count(model, inputs)


def quantiles(us) -> dict:
    """p50/p90/p99/max of timings in microseconds, and how many there were."""
    import numpy as np

    us = np.asarray(us, dtype=np.float64)
    return {
        "p50_us": float(np.median(us)),
        "p90_us": float(np.percentile(us, 90)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
        "n": int(len(us)),
    }


def write_report(report: dict, path: Path) -> None:
    """Write a benchmark's JSON report and print its targets' verdicts (``report["targets"]``: name -> bool)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    for k, v in report.get("targets", {}).items():
        print(f"  {'PASS' if v else 'FAIL'}  {k}")
    print(f"wrote {path}")


def ort_session(path: Path, optimized: Path | None = None):
    """An ONNX Runtime CPU session as edgefuse's engines run: one thread, sequential, every graph
    optimisation; ``optimized``: where ONNX Runtime writes the graph it runs (to count its nodes)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
