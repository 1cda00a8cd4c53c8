"""TensorRT loader (TensorRT 10 and 11 Python API): build a plan from an ONNX graph.

The ONNX graph (FP32, or Q/DQ INT8 from ``edgefuse.calibration``) is parsed into a
*strongly typed* network: precision comes from the graph's own types and Q/DQ nodes
(explicit quantization; TensorRT 11 removed implicit INT8 and calibrators). One
optimisation profile covers batch 1..``max_batch`` (optimised at ``opt_batch``); a timing
cache file is read and updated so rebuilds are fast. FP16 is a cast pass on the ONNX graph
(``edgefuse.engines.fp16``), not a builder flag, since strongly typed networks take none.
Nothing here imports tensorrt at module import.
"""

from __future__ import annotations

from pathlib import Path

from edgefuse.engines.base import BackendUnavailable
from edgefuse.errors import EdgefuseError

INSTALL = (
    "pip install 'edgefuse[trt]' (TensorRT 10+ and cuda-python; on Jetson, JetPack's python3-libnvinfer and "
    "pip install cuda-python)"
)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f"the TensorRT backend needs the tensorrt package: {INSTALL}") from e
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise BackendUnavailable(
            "the TensorRT backend needs TensorRT >= 10 (explicit quantization, strongly typed networks), found "
            f"{trt.__version__}"
        )
    return trt


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_plan(
    onnx_path: str | Path,
    plan_path: str | Path,
    max_batch: int = 32,
    opt_batch: int = 1,
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    tf32: bool = True,
    hardware_compatible: bool = False,
) -> Path:
    """Parse ``onnx_path`` into a strongly typed network and serialise a plan to ``plan_path``.

    ``tf32=False`` clears TensorRT's TF32 flag (on by default), so FP32 layers compute in full FP32 as
    ONNX Runtime does. ``hardware_compatible``: a plan for every Ampere-or-newer discrete GPU
    (``HardwareCompatibilityLevel.AMPERE_PLUS``; TensorRT does not support it on Jetson's integrated
    GPUs), at some speed cost."""
    trt = import_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgefuseError(f"TensorRT could not parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        per_sample = dims[1:]
        if any(d < 0 for d in per_sample):
            raise EdgefuseError(
                f"{Path(onnx_path).name}: input {tensor.name!r} has dynamic non-batch dims {dims}; only the batch may "
                "vary"
            )
        profile.set_shape(tensor.name, [1, *per_sample], [opt_batch, *per_sample], [max_batch, *per_sample])
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        data = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EdgefuseError(
            f"TensorRT failed to build an engine from {Path(onnx_path).name} (see the TensorRT log above)"
        )
    Path(plan_path).write_bytes(bytes(plan))
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return Path(plan_path)
