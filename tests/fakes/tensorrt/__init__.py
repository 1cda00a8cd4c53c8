"""Fake ``tensorrt`` (the TensorRT 10/11 Python API edgefuse calls). A "plan" is JSON holding the ONNX
graph, the profile, the GPU and TensorRT version it was built for; running it runs the graph with ONNX
Runtime on host memory from the fake ``cuda.bindings.runtime``. ``FAKE_TRT_VERSION`` sets the version."""

from __future__ import annotations

import base64
import json
import os
import time
from enum import IntEnum

import numpy as np
from cuda.bindings import runtime as _cuda

__version__ = os.environ.get("FAKE_TRT_VERSION", "10.3.0")
BUILT: list[dict] = []  # every build's options, for tests


class FakeTrtError(RuntimeError):
    pass


class Logger:
    WARNING = 2

    def __init__(self, level=None) -> None:
        self.level = level


class TensorIOMode(IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 9


_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.INT64: np.int64,
}
_ORT = {
    "tensor(float)": DataType.FLOAT,
    "tensor(float16)": DataType.HALF,
    "tensor(int64)": DataType.INT64,
    "tensor(int32)": DataType.INT32,
    "tensor(bool)": DataType.BOOL,
    "tensor(int8)": DataType.INT8,
}


def nptype(dt):
    return _NP[DataType(dt)]


class ExecutionContextAllocationStrategy(IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class NetworkDefinitionCreationFlag(IntEnum):
    STRONGLY_TYPED = 5


class MemoryPoolType(IntEnum):
    WORKSPACE = 0


class BuilderFlag(IntEnum):
    TF32 = 7


class HardwareCompatibilityLevel(IntEnum):
    NONE = 0
    AMPERE_PLUS = 1


def _session(onnx_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def _io(sess) -> list[dict]:
    return [
        {
            "name": t.name,
            "mode": int(mode),
            "dtype": int(_ORT[t.type]),
            "shape": [d if isinstance(d, int) else -1 for d in t.shape],
        }
        for mode, ts in ((TensorIOMode.INPUT, sess.get_inputs()), (TensorIOMode.OUTPUT, sess.get_outputs()))
        for t in ts
    ]


class _Tensor:
    def __init__(self, d: dict) -> None:
        self.name, self.shape = d["name"], tuple(d["shape"])


class _Network:
    def __init__(self, flags) -> None:
        self.flags, self.onnx, self.io = flags, None, []

    @property
    def num_inputs(self) -> int:
        return sum(d["mode"] == TensorIOMode.INPUT for d in self.io)

    def get_input(self, i):
        return _Tensor([d for d in self.io if d["mode"] == TensorIOMode.INPUT][i])


class OnnxParser:
    def __init__(self, network, logger) -> None:
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path) -> bool:
        data = open(path, "rb").read()
        try:
            self.network.io = _io(_session(data))
        except Exception as e:  # what TensorRT's parser would report
            self.num_errors, self._error = 1, str(e)
            return False
        self.network.onnx = data
        return True

    def get_error(self, i):
        return self._error


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name, lo, opt, hi) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.entries = int(data.decode().split(":")[1]) if data else 0

    def serialize(self) -> bytes:
        return f"fake-timing-cache:{self.entries}".encode()


class _Config:
    def __init__(self) -> None:
        self.flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self.profiles: list[_Profile] = []
        self.cache = None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.workspace = size

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag)

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, p) -> int:
        self.profiles.append(p)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes):
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class Builder:
    def __init__(self, logger) -> None:
        self.logger = logger

    def create_network(self, flags=0):
        if not flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED):
            raise FakeTrtError("edgefuse builds strongly typed networks")
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        (profile,) = config.profiles
        if config.cache is not None:
            config.cache.entries += 1
        props = _cuda.STATE.props
        plan = {
            "fake_tensorrt_plan": 1,
            "tensorrt": __version__,
            "gpu": f"{props.major}.{props.minor}",
            "hardware_compatible": int(config.hardware_compatibility_level),
            "tf32": BuilderFlag.TF32 in config.flags,
            "io": network.io,
            "profile": profile.shapes,
            "onnx": base64.b64encode(network.onnx).decode(),
        }
        BUILT.append({k: v for k, v in plan.items() if k != "onnx"})
        return json.dumps(plan).encode()


class Runtime:
    def __init__(self, logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        try:
            plan = json.loads(data)
        except ValueError:
            return None
        props = _cuda.STATE.props
        if plan.get("tensorrt") != __version__:
            return None  # TensorRT refuses a plan of another version
        gpu = f"{props.major}.{props.minor}"
        if plan["gpu"] != gpu and not (plan["hardware_compatible"] and props.major >= 8):
            return None  # nor one built for another GPU
        return _Engine(plan)


class _Engine:
    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.io = {d["name"]: d for d in plan["io"]}
        self.names = [d["name"] for d in plan["io"]]
        self.session = _session(base64.b64decode(plan["onnx"]))
        self.device_memory_size_v2 = 4096 + 64 * len(plan["onnx"]) // 1000

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode(self.io[name]["mode"])

    def get_tensor_dtype(self, name):
        return DataType(self.io[name]["dtype"])

    def get_tensor_shape(self, name):
        return tuple(self.io[name]["shape"])

    def get_tensor_profile_shape(self, name, profile):
        return tuple(tuple(s) for s in self.plan["profile"][name])

    def create_execution_context(self, strategy=ExecutionContextAllocationStrategy.STATIC):
        return _Context(self, strategy)


class _Context:
    """Records what it was told; enforces what TensorRT and CUDA graphs require."""

    def __init__(self, engine: _Engine, strategy) -> None:
        self.engine, self.strategy = engine, strategy
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.memory: tuple[int, int] | None = None
        self.epoch = 0  # bumped by every shape change
        self.needs_enqueue = False  # after a shape change, until a plain enqueue
        self.log: list[tuple] = []

    def set_input_shape(self, name, shape) -> bool:
        self.log.append(("shape", name, tuple(shape)))
        lo, _, hi = self.engine.plan["profile"][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        if self.shapes.get(name) != shape:
            self.shapes[name] = shape
            self.epoch += 1
            self.needs_enqueue = True
        return True

    def get_tensor_shape(self, name):
        batch = next(iter(self.shapes.values()))[0]
        return tuple(batch if d < 0 else d for d in self.engine.io[name]["shape"])

    def set_tensor_address(self, name, ptr) -> bool:
        self.log.append(("address", name, int(ptr)))
        if not ptr or name not in self.engine.io:
            return False
        self.addresses[name] = int(ptr)
        return True

    def set_device_memory(self, ptr, size) -> None:
        if size < self.engine.device_memory_size_v2:
            raise FakeTrtError(f"device memory of {size} bytes < the {self.engine.device_memory_size_v2} needed")
        self.memory = (int(ptr), int(size))

    def execute_async_v3(self, stream) -> bool:
        self.log.append(("enqueue", stream.capturing is not None))
        if self.strategy == ExecutionContextAllocationStrategy.USER_MANAGED and self.memory is None:
            return False
        inputs = [n for n in self.engine.names if self.engine.io[n]["mode"] == TensorIOMode.INPUT]
        if any(n not in self.shapes for n in inputs) or any(n not in self.addresses for n in self.engine.names):
            return False
        if stream.capturing is not None:
            if self.needs_enqueue:  # NVIDIA/TensorRT#3798: enqueue once after a shape change before capture
                return False
            epoch = self.epoch

            def replay(s):
                if self.epoch != epoch:
                    raise FakeTrtError("a CUDA graph replayed after its context's shapes changed")
                self._compute(s)

            return _cuda.submit(stream, replay)
        self.needs_enqueue = False
        return _cuda.submit(stream, self._compute)

    def _compute(self, stream) -> None:
        if self.memory is not None:
            _cuda.use_scratch(*self.memory, stream)
        eng = self.engine
        feeds = {}
        for t in eng.session.get_inputs():
            dt = nptype(eng.io[t.name]["dtype"])
            feeds[t.name] = _cuda.read(self.addresses[t.name], dt, self.shapes[t.name])
        time.sleep(0.0005)  # the GPU's time: long enough for another thread to collide
        for t, out in zip(eng.session.get_outputs(), eng.session.run(None, feeds)):
            _cuda.write(self.addresses[t.name], out.astype(nptype(eng.io[t.name]["dtype"])))
