"""Explicit quantization: a float ONNX graph + calibration ranges -> one Q/DQ INT8 ONNX graph.

The form TensorRT 10/11 (strongly typed) and ONNX Runtime both build from: symmetric INT8
(every zero point 0), per-tensor activation scales, per-channel weight scales, Q/DQ nodes
only (no QOperator ``MatMulInteger``/``ConvInteger``). The rewrite itself is
``onnxruntime.quantization.quantize_static`` fed with precomputed ranges.
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from edgefuse.engines.base import BackendUnavailable
from edgefuse.errors import EdgefuseError

#: the first onnxruntime whose quantize_static reads precomputed ranges from a calibration
#: cache (``calibration_cache_path``, ``save_tensors_data``); it has no Python 3.10 wheels
MIN_ONNXRUNTIME = "1.27"


class OnnxruntimeTooOld(ImportError, BackendUnavailable):
    """The installed onnxruntime cannot write Q/DQ graphs from precomputed ranges. An
    ImportError (it fails the import) and a ``BackendUnavailable`` (the CLI reports it as
    an error, not a traceback)."""


try:
    from onnxruntime.quantization.calibrate import save_tensors_data
except ImportError as e:  # an older onnxruntime: say what is needed, not which name is missing
    import onnxruntime

    raise OnnxruntimeTooOld(
        f"edgefuse.calibration needs onnxruntime >= {MIN_ONNXRUNTIME} (quantize_static with precomputed ranges); "
        f"found onnxruntime {onnxruntime.__version__}. A bundle's engines run on older releases: calibrate "
        f"on a host with Python >= 3.11 and onnxruntime >= {MIN_ONNXRUNTIME}, then copy the bundle"
    ) from e

#: ops whose inputs get Q/DQ: the weighted ops, TensorRT's recommended placement (it fuses
#: the rest around them). Measured on SensorScenes' gated model, batch 1, 1 thread (2-core
#: AVX2 VM, ORT 1.32): this placement ran at 150-160 us against 180-270 us when Relu, pooling,
#: Add and Concat were quantized too (bench/bench_engines.py reproduces the engine numbers).
OP_TYPES = ("Conv", "Gemm", "MatMul")


def weighted_nodes(path: str | Path, min_weights: int = 0, op_types: Sequence[str] = OP_TYPES) -> tuple[list[str], int]:
    """``(names, total)``: the ``op_types`` nodes of the graph whose weight (a constant second input) has
    at least ``min_weights`` values, and how many ``op_types`` nodes there are. With ``min_weights`` 0, or
    when no weight is that large, every ``op_types`` node (activation-by-activation MatMuls included)."""
    model = onnx.load(str(path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type in op_types]
    kept = [n.name for n in nodes if not (len(n.input) > 1 and _fp32_kept(n.input[1]))]
    big = [
        n.name for n in nodes if n.name in kept and len(n.input) > 1 and weight_size(model, n.input[1]) >= min_weights
    ]
    return (big if min_weights > 0 and big else kept), len(nodes)


#: ops a weight may pass through between its initializer and the node that uses it (a gated fusion's
#: per-sensor gate weights are slices of one stacked parameter)
_WEIGHT_PATH = ("Gather", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Identity", "Cast", "Flatten")


def _fp32_kept(weight: str) -> bool:
    """A lean gated graph's gate weight (``edgefuse.export._LeanGatedSubset``): block-diagonal, mostly
    zeros, feeding a softmax; quantized, the demo model's INT8 engines lost more accuracy and ran slower
    (the all-sensor one at 2x FP32; dequantized on every run, the weight costs more than its MatMul
    saves), so it stays FP32 in every INT8 form, TensorRT's included."""
    return weight.endswith("w_gate")


def weight_size(model: onnx.ModelProto, name: str) -> int:
    """How many values the tensor ``name`` holds when it is a weight: an initializer, or one reached
    through ``_WEIGHT_PATH`` ops (a Gather along the first axis takes one of its slices); 0 for an
    activation."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    gathered = False
    for _ in range(16):
        if name in inits:
            dims = list(inits[name].dims)
            total = int(np.prod(dims)) if dims else 1
            return total // dims[0] if gathered and dims and dims[0] else total
        node = producer.get(name)
        if node is None or node.op_type not in _WEIGHT_PATH:
            return 0
        gathered = gathered or node.op_type == "Gather"
        name = node.input[0]
    return 0


def quantize_qdq(
    fp32_path: str | Path,
    out_path: str | Path,
    ranges,
    op_types: Sequence[str] = OP_TYPES,
    per_channel: bool = True,
    min_weights: int = 0,
) -> Path:
    """Write the Q/DQ INT8 graph of ``fp32_path`` to ``out_path`` using ``ranges`` (TensorsData).
    ``min_weights``: quantize only the weighted nodes with at least that many weights (0: all of them)."""
    out_path = Path(out_path)
    # quantize_static warns on the root logger that the model was not pre-processed (shape
    # inference + optimisation): export's graphs are already shape-inferred and optimised
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    # no weight that large: the whole graph (the build's timing then decides); FP32-kept weights never
    nodes, _ = weighted_nodes(fp32_path, min_weights, op_types)
    try:
        _quantize(fp32_path, out_path, ranges, op_types, per_channel, nodes)
    finally:
        quiet.setLevel(level)
    check_qdq(out_path)
    return out_path


def _quantize(fp32_path, out_path: Path, ranges, op_types: Sequence[str], per_channel: bool, nodes=None) -> None:
    with tempfile.TemporaryDirectory(prefix="edgefuse-qdq.") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(
            str(fp32_path),
            str(out_path),
            calibration_data_reader=None,
            calibration_cache_path=str(cache),
            calibrate_method=ranges.calibration_method,  # must match the cached ranges' method
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=False,
            op_types_to_quantize=list(op_types),
            nodes_to_quantize=nodes or None,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                # TensorRT fuses the bias into the INT8 GEMM/conv itself: keep it float
                "QuantizeBias": False,
            },
        )


def check_qdq(path: str | Path) -> dict[str, int]:
    """Raise ValueError unless the graph is the explicit-quantization form; return node counts."""
    path = Path(path)
    model = onnx.load(str(path))
    inits, consts = _constants(model)
    q = dq = 0
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"):
            raise EdgefuseError(
                f"{path.name}: found {node.op_type} ({node.name}); expected only QuantizeLinear/DequantizeLinear"
            )
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        q += node.op_type == "QuantizeLinear"
        dq += node.op_type == "DequantizeLinear"
        if len(node.input) < 3 or not node.input[2]:
            raise EdgefuseError(f"{path.name}: {node.op_type} {node.name} has no zero point; expected an explicit 0")
        zp = _value(node.input[2], inits, consts)
        if zp is None or np.any(zp != 0):
            raise EdgefuseError(
                f"{path.name}: {node.op_type} {node.name} has zero point {zp}; expected 0 (symmetric INT8)"
            )
        if zp.dtype != np.int8:
            raise EdgefuseError(f"{path.name}: {node.op_type} {node.name} zero point is {zp.dtype}; expected int8")
        scale = _value(node.input[1], inits, consts)
        is_weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        if scale is None:
            raise EdgefuseError(f"{path.name}: {node.op_type} {node.name} scale is not a constant")
        if not is_weight and scale.size != 1:
            raise EdgefuseError(
                f"{path.name}: activation {node.op_type} {node.name} has scale shape {scale.shape}; expected a scalar"
            )
    if q == 0:
        raise EdgefuseError(f"{path.name}: no QuantizeLinear nodes; expected an INT8 Q/DQ graph")
    return {"QuantizeLinear": q, "DequantizeLinear": dq}


def _constants(model: onnx.ModelProto) -> tuple[dict, dict]:
    """The graph's initializers and Constant-node values by tensor name (what _value reads)."""
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    return inits, consts


def _value(name: str, inits, consts) -> np.ndarray | None:
    if name in inits:
        return numpy_helper.to_array(inits[name])
    if name in consts:
        return numpy_helper.to_array(consts[name])
    return None


def activation_scales(path: str | Path) -> dict[str, float]:
    """``{tensor name: float32 scale}`` of every per-tensor QuantizeLinear in a Q/DQ graph."""
    model = onnx.load(str(path))
    inits, consts = _constants(model)
    out = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            s = _value(node.input[1], inits, consts)
            if s is not None and s.size == 1:
                out[node.input[0]] = float(np.float32(s.reshape(-1)[0]))
    return out


# -- TensorRT native calibration cache -------------------------------------------------------
# Format (what IInt8Calibrator.writeCalibrationCache produces): a header line
# "TRT-<version>-EntropyCalibration2", then one "<tensor name>: <8 hex digits>" line per
# tensor, the hex digits being the big-endian IEEE-754 bits of the float32 scale
# (amax / 127). <version> is NV_TENSORRT_VERSION: major*10000 + minor*100 + patch for
# TensorRT >= 10 (e.g. 100300 for 10.3.0), major*1000 + minor*100 + patch before.


def trt_version_code(version: str) -> int:
    """'10.3.0' -> 100300; '8.6.1' -> 8601."""
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def write_trt_cache(
    scales: Mapping[str, float], path: str | Path, trt_version: str = "10.3.0", algorithm: str = "EntropyCalibration2"
) -> Path:
    path = Path(path)
    lines = [f"TRT-{trt_version_code(trt_version)}-{algorithm}"]
    for name in sorted(scales):
        if ":" in name or "\n" in name:
            raise EdgefuseError(
                f"tensor name {name!r} cannot be written to a TensorRT cache (contains ':' or a newline)"
            )
        lines.append(f"{name}: {struct.pack('>f', float(scales[name])).hex()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, ``{tensor name: float32 scale}``) of a TensorRT calibration cache."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise EdgefuseError(f"{path}: expected a header 'TRT-<version>-<algorithm>', got {lines[:1]}")
    scales = {}
    for ln in lines[1:]:
        name, _, hexbits = ln.rpartition(": ")
        if not name or len(hexbits) != 8:
            raise EdgefuseError(f"{path}: malformed line {ln!r}; expected '<tensor>: <8 hex digits>'")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexbits))[0]
    return lines[0], scales


def write_report(ranges: Mapping[str, object], path: str | Path, meta: Mapping[str, object]) -> Path:
    """The per-tensor calibration report (range, amax, scale, % saturated) as JSON."""
    doc = {**meta, "tensors": {k: v.to_dict() for k, v in sorted(ranges.items())}}
    Path(path).write_text(json.dumps(doc, indent=2))
    return Path(path)
