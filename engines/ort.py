"""ONNX Runtime backend: load an ONNX graph (FP32 or Q/DQ INT8) into a latency-tuned session.

Defaults are for edge latency: sequential execution, one intra-op thread, all graph
optimisations. ``optimized_cache`` names a file beside the bundle: on first load the
session writes its optimised graph there (ORT_ENABLE_EXTENDED: portable across CPUs of one
ORT version), later loads start from it. The cache file carries the ONNX Runtime version
in its name, so another version never reads it. The bundle builder writes it
(``write_optimized_cache``) so that it is checksummed with the rest of the bundle; loading
only ever reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgefuse.engines.base import BackendUnavailable, Engine, TensorSpec

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendUnavailable("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from e
    return ort


def resolve_providers(providers: Sequence[str] | str = "cpu") -> list[str]:
    """'cpu' | 'cuda' | 'tensorrt' | 'auto' (best available) or a list -> ORT provider names."""
    ort = _import_ort()
    available = ort.get_available_providers()
    if providers == "auto":
        return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    out = []
    for p in wanted:
        full = _PROVIDERS.get(p, p)
        if full not in available:
            raise BackendUnavailable(f"ONNX Runtime execution provider {p!r} is not available here; available: {available}")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")  # fallback for nodes the accelerator does not take
    return out


def cache_path_for(model_path: str | Path) -> Path:
    """Where the optimised-graph cache of ``model_path`` lives for this ONNX Runtime version."""
    ort = _import_ort()
    p = Path(model_path)
    return p.with_name(f"{p.stem}.ort-{ort.__version__}.opt.onnx")


def write_optimized_cache(path: str | Path) -> Path:
    """Write the ORT_ENABLE_EXTENDED-optimised graph of ``path`` beside it; return its path."""
    ort = _import_ort()
    cache = cache_path_for(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(cache)
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return cache


class OrtEngine(Engine):
    """An ONNX Runtime session behind the Engine interface.

    Args:
        path: the .onnx file.
        threads: intra-op threads (1: lowest latency jitter on a busy edge CPU).
        providers: see ``resolve_providers``.
        optimized_cache: start from the optimised-graph cache beside ``path`` when one exists
            for this ONNX Runtime version (CPU only).
    """

    backend = "ort"

    def __init__(self, path: str | Path, threads: int = 1, providers: Sequence[str] | str = "cpu", optimized_cache: bool = False, name: str | None = None) -> None:
        super().__init__()
        ort = _import_ort()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"ONNX Runtime engine: expected an .onnx file, got {str(path)!r} (missing)")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.name = name or path.stem
        self.providers = resolve_providers(providers)
        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        source = path
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimized_cache and self.providers == ["CPUExecutionProvider"] and cache_path_for(path).is_file():
            source = cache_path_for(path)  # written by write_optimized_cache for this ORT version
        self.source = source
        try:
            self.session = ort.InferenceSession(str(source), so, providers=self.providers)
        except Exception as e:
            raise ValueError(f"ONNX Runtime could not load {path.name}: {e}") from e
        self.inputs = [TensorSpec(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in self.session.get_outputs()]
        self._out_names = [o.name for o in self.outputs]

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = feeds if isinstance(feeds, dict) else dict(feeds)  # no copy on the usual path
        return dict(zip(self._out_names, self.session.run(self._out_names, feeds)))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
        super().close()


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(s) if isinstance(s, int) else -1 for s in shape)
