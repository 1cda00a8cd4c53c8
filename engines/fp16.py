"""FP16 cast pass for strongly typed TensorRT builds: a float32 ONNX graph -> a float16 graph with float32 I/O.

Strongly typed networks take their precision from the graph (no FP16 builder flag), so FP16
engines are built from a graph whose float tensors are float16. Float32 initializers and
Constant/ConstantOfShape values become float16 (clipped to +-65504, so a mask fill of
float32's lowest value becomes -65504, not -inf; and a nonzero value too small for float16
becomes +-2^-24, its smallest subnormal, not 0, so an epsilon such as a ``clamp_min(1e-12)``
before a log or a division stays positive), Cast-to-float32 becomes Cast-to-float16,
and graph inputs/outputs keep float32 through a Cast at each boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_F16_MAX = float(np.finfo(np.float16).max)
_F16_MIN_SUBNORMAL = float(np.float16(2.0**-24))


def _half(t: onnx.TensorProto) -> onnx.TensorProto:
    arr = numpy_helper.to_array(t)
    tiny = (arr != 0) & (np.abs(arr) < _F16_MIN_SUBNORMAL)
    arr = np.where(tiny, np.copysign(_F16_MIN_SUBNORMAL, arr), np.clip(arr, -_F16_MAX, _F16_MAX))
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def _boundary_cast(g: onnx.GraphProto, name: str, inward: bool) -> onnx.NodeProto:
    """Rename every use of graph input/output ``name`` inside the graph to ``name__fp16`` and
    return the Cast that connects the float32 boundary tensor to it."""
    half = f"{name}__fp16"
    for node in g.node:
        for field in (node.input, node.output):
            for k, n in enumerate(field):
                if n == name:
                    field[k] = half
    if inward:
        return helper.make_node("Cast", [name], [half], to=TensorProto.FLOAT16, name=f"{name}__to_fp16")
    return helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT, name=f"{name}__to_fp32")


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    model = onnx.load(str(src))
    g = model.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(_half(init))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_half(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    del g.value_info[:]  # re-inferred below with the new types
    casts_in = [
        _boundary_cast(g, v.name, inward=True) for v in g.input if v.type.tensor_type.elem_type == TensorProto.FLOAT
    ]
    casts_out = [
        _boundary_cast(g, v.name, inward=False) for v in g.output if v.type.tensor_type.elem_type == TensorProto.FLOAT
    ]
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(dst))
    return Path(dst)
