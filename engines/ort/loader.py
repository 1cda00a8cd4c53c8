"""ONNX Runtime loader side: what the bundle builder writes for the runner, the optimised-graph cache.

The cache is the graph after ORT_ENABLE_EXTENDED optimisation (portable across CPUs of one
ONNX Runtime version), written beside the model with that version in its name, so another
version never reads it. It is checksummed with the rest of the bundle.
"""

from __future__ import annotations

from pathlib import Path

from edgefuse.engines.base import BackendUnavailable


def import_ort():
    """The onnxruntime module, or BackendUnavailable saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendUnavailable("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from e
    return ort


def cache_path_for(model_path: str | Path) -> Path:
    """Where the optimised-graph cache of ``model_path`` lives for this ONNX Runtime version."""
    ort = import_ort()
    p = Path(model_path)
    return p.with_name(f"{p.stem}.ort-{ort.__version__}.opt.onnx")


def write_optimized_cache(path: str | Path) -> Path:
    """Write the ORT_ENABLE_EXTENDED-optimised graph of ``path`` beside it; return its path."""
    ort = import_ort()
    cache = cache_path_for(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(cache)
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return cache
