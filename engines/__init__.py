"""edgefuse.engines: inference engines behind one interface (dict of numpy arrays in and out).

Backends, each in its own module and imported only when used:

* ``ort``   — ONNX Runtime (CPU by default; CUDA/TensorRT execution providers when installed)
* ``trt``   — TensorRT 10/11 plans built from (Q/DQ) ONNX; needs ``tensorrt`` and a GPU
* ``torch`` — the PyTorch model itself, eager or CUDA-graph replay (Triton kernels on GPU)

``import edgefuse.engines`` needs numpy only: no torch, no tensorrt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefuse.engines.base import BackendUnavailable, Engine, TensorSpec
from edgefuse.errors import EdgefuseError

BACKENDS = ("ort", "trt", "torch")


def load_engine(backend: str, path: str | Path, **kwargs: Any) -> Engine:
    """Construct the engine of ``backend`` from ``path`` (an .onnx, a .plan, or a checkpoint folder).

    Raises BackendUnavailable when the backend's library or device is missing.
    """
    if backend == "ort":
        from edgefuse.engines.ort import OrtEngine

        return OrtEngine(path, **kwargs)
    if backend == "trt":
        from edgefuse.engines.trt import TrtEngine

        return TrtEngine(path, **kwargs)
    if backend == "torch":
        from edgefuse.engines.pyt import TorchEngine

        return TorchEngine(path, **kwargs)
    raise EdgefuseError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


__all__ = ["BACKENDS", "BackendUnavailable", "Engine", "TensorSpec", "load_engine"]
