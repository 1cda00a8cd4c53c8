"""edgefuse.calibration: INT8 calibration ranges and explicit (Q/DQ) quantization for ONNX Runtime and TensorRT.

Ranges come from onnxruntime.quantization's calibrators; edgefuse adds the stratified
sample, the TensorRT-compatible Q/DQ options and checks, the TensorRT cache file, the
per-tensor report, and applies the accuracy gate (``edgefuse.gate``).
"""

import importlib

#: public name -> the submodule that defines it. Loaded on first use (PEP 562): a name from
#: quantization raises quantize's own error saying which onnxruntime it needs (older than
#: quantize.MIN_ONNXRUNTIME, as on Python 3.10) only when it is used. The accuracy gate the
#: calibration applies lives in edgefuse.gate.
_WHERE = {
    **dict.fromkeys(("METHODS", "StratifiedReader", "TensorRange", "compute_ranges", "tensor_ranges"), "calibrate"),
    **dict.fromkeys(
        ("activation_scales", "check_qdq", "quantize_qdq", "read_trt_cache", "trt_version_code", "write_trt_cache"),
        "quantize",
    ),
    "calibrate_export": "run",
    "calibrate_split": "split",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = sorted(_WHERE)
