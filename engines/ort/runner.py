"""ONNX Runtime runner: an ONNX graph (FP32 or Q/DQ INT8) in a latency-tuned session behind the Engine interface.

Defaults are for edge latency: sequential execution, one intra-op thread, all graph
optimisations. ``optimized_cache=True`` starts the session from the optimised graph that the
bundle builder wrote beside the model for this ONNX Runtime version (``loader.py``); running
only ever reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgefuse.engines.base import BackendUnavailable, Engine, TensorSpec
from edgefuse.engines.ort.loader import cache_path_for, import_ort
from edgefuse.errors import EdgefuseError

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


def resolve_providers(providers: Sequence[str] | str = "cpu") -> list[str]:
    """'cpu' | 'cuda' | 'tensorrt' | 'auto' (best available) or a list -> ORT provider names."""
    ort = import_ort()
    available = ort.get_available_providers()
    if providers == "auto":
        return [
            p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    out = []
    for p in wanted:
        full = _PROVIDERS.get(p, p)
        if full not in available:
            raise BackendUnavailable(
                f"ONNX Runtime execution provider {p!r} is not available here; available: {available}"
            )
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")  # fallback for nodes the accelerator does not take
    return out


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

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        providers: Sequence[str] | str = "cpu",
        optimized_cache: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        ort = import_ort()
        path = Path(path)
        if not path.is_file():
            raise EdgefuseError(f"ONNX Runtime engine: expected an .onnx file, got {str(path)!r} (missing)")
        if threads < 1:
            raise EdgefuseError(f"threads must be >= 1, got {threads}")
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
            raise EdgefuseError(f"ONNX Runtime could not load {path.name}: {e}") from e
        self.inputs = [
            TensorSpec(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()
        ]
        self.outputs = [
            TensorSpec(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in self.session.get_outputs()
        ]
        self._out_names = [o.name for o in self.outputs]

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = feeds if isinstance(feeds, dict) else dict(feeds)  # no copy on the usual path
        return dict(zip(self._out_names, self.session.run(self._out_names, feeds)))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
        super().close()


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(s) if isinstance(s, int) else -1 for s in shape)
