"""edgefuse.calibration: INT8 calibration ranges and explicit (Q/DQ) quantization for ONNX Runtime and TensorRT.

Ranges come from onnxruntime.quantization's calibrators; edgefuse adds the stratified
sample, the TensorRT-compatible Q/DQ options and checks, the TensorRT cache file, the
per-tensor report and the accuracy gate.
"""

from edgefuse.calibration.calibrate import METHODS, StratifiedReader, TensorRange, compute_ranges, tensor_ranges
from edgefuse.calibration.gate import AccuracyGateError, GateResult
from edgefuse.calibration.quantize import (
    activation_scales,
    check_qdq,
    quantize_qdq,
    read_trt_cache,
    trt_version_code,
    write_trt_cache,
)
from edgefuse.calibration.run import calibrate_export

__all__ = [
    "METHODS",
    "AccuracyGateError",
    "GateResult",
    "StratifiedReader",
    "TensorRange",
    "activation_scales",
    "calibrate_export",
    "check_qdq",
    "compute_ranges",
    "quantize_qdq",
    "read_trt_cache",
    "tensor_ranges",
    "trt_version_code",
    "write_trt_cache",
]
