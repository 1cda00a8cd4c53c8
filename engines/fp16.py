"""FP16 cast pass for strongly typed TensorRT builds: a float32 ONNX graph -> a float16 graph with float32 I/O.

Strongly typed networks take their precision from the graph (no FP16 builder flag), so FP16
engines are built from a graph whose float tensors are float16. Float32 initializers and
Constant/ConstantOfShape values become float16 (clipped to +-65504, so a mask fill of
float32's lowest value becomes -65504, not -inf), Cast-to-float32 becomes Cast-to-float16,
and graph inputs/outputs keep float32 through a Cast at each boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_F16_MAX = float(np.finfo(np.float16).max)


def _half(t: onnx.TensorProto) -> onnx.TensorProto:
    arr = numpy_helper.to_array(t)
    return numpy_helper.from_array(np.clip(arr, -_F16_MAX, _F16_MAX).astype(np.float16), t.name)


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
    casts_in, casts_out = [], []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{inp.name}__fp16"
        for node in g.node:
            for k, name in enumerate(node.input):
                if name == inp.name:
                    node.input[k] = half
        casts_in.append(helper.make_node("Cast", [inp.name], [half], to=TensorProto.FLOAT16, name=f"{inp.name}__to_fp16"))
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{out.name}__fp16"
        for node in g.node:
            for k, name in enumerate(node.output):
                if name == out.name:
                    node.output[k] = half
        casts_out.append(helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT, name=f"{out.name}__to_fp32"))
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(dst))
    return Path(dst)
