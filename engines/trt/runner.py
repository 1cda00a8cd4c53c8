"""TensorRT runner (TensorRT 10 and 11 Python API): load a plan and run it (``loader.py`` builds plans).

An execution context per plan; I/O in device buffers held as torch CUDA tensors (a
CUDA build of torch is required; pycuda buffers are not implemented); the enqueue is captured into a CUDA graph per
batch size when capture succeeds and replayed afterwards; contexts that never run
concurrently (the runtime's one-engine-at-a-time swap) share one device-memory block.

Nothing here imports tensorrt at module import: ``import edgefuse.engines`` works without it,
and constructing anything raises ``BackendUnavailable`` with the install command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edgefuse.engines.base import BackendUnavailable, Engine, TensorSpec
from edgefuse.engines.trt.loader import _logger, import_tensorrt
from edgefuse.errors import EdgefuseError


class SharedDeviceMemory:
    """One device-memory block for several execution contexts that never run at the same time
    (the runtime calls one engine at a time): the total is the largest, not the sum.

    Each engine ``attach``es with the scratch size its context needs. When a later engine
    needs more, the block is reallocated and every earlier context is re-pointed at the new
    block (and drops the CUDA graphs it captured, which hold the old address) before the old
    block is freed. Attach every engine before running any (``Bundle.load_engines`` does), so
    no graph is ever dropped; and never attach while an engine is running.
    """

    def __init__(self, alloc=None) -> None:
        self.size = 0
        self._buf = None
        self._users: list = []  # weak references to attached engines
        self._alloc = alloc or _cuda_bytes

    def attach(self, engine, size: int) -> None:
        """Point ``engine``'s context (via ``engine._set_device_memory(ptr, size)``) at the block."""
        import weakref

        self._users = [r for r in self._users if r() is not None]
        if size > self.size or self._buf is None:
            size = max(size, 1)
            buf = self._alloc(size)
            for ref in self._users:
                ref()._set_device_memory(buf.data_ptr(), size)
            self._buf, self.size = buf, size  # the old block is released here, once no context points at it
        self._users.append(weakref.ref(engine))
        engine._set_device_memory(self._buf.data_ptr(), self.size)

    @property
    def users(self) -> int:
        return sum(r() is not None for r in self._users)


def _cuda_bytes(size: int):
    import torch

    return torch.empty(size, dtype=torch.uint8, device="cuda")


def _device_memory_size(engine) -> int:
    """Scratch bytes a context of ``engine`` needs (``device_memory_size_v2`` since TensorRT 10.1;
    TensorRT 11 has only that)."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


class TrtEngine(Engine):
    """A deserialised TensorRT plan behind the Engine interface (inputs/outputs as numpy on the host)."""

    backend = "trt"

    def __init__(
        self,
        plan_path: str | Path,
        shared_memory: SharedDeviceMemory | None = None,
        cuda_graph: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__()
        trt = import_tensorrt()
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailable(
                "the TensorRT backend keeps device buffers as torch CUDA tensors: install torch with CUDA"
            ) from e
        if not torch.cuda.is_available():
            raise BackendUnavailable("the TensorRT backend needs a CUDA device; none is visible")
        self._trt, self._torch = trt, torch
        plan_path = Path(plan_path)
        self.name = name or plan_path.stem
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EdgefuseError(
                f"TensorRT could not deserialise {plan_path.name} (built by another TensorRT version or GPU?)"
            )
        self._graphs: dict[int, object] = {}
        if shared_memory is not None:
            self.context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            shared_memory.attach(self, _device_memory_size(self.engine))
        else:
            self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._np_dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.inputs = [
            TensorSpec(n, tuple(self.engine.get_tensor_shape(n)), self._np_dtype[n].name)
            for n in names
            if self._is_input[n]
        ]
        self.outputs = [
            TensorSpec(n, tuple(self.engine.get_tensor_shape(n)), self._np_dtype[n].name)
            for n in names
            if not self._is_input[n]
        ]
        self.use_cuda_graph = cuda_graph
        self._buffers: dict[int, dict[str, object]] = {}  # batch -> name -> torch tensor
        self._bound: int | None = None  # batch size whose buffers the context points at
        self.graph_failures: dict[int, str] = {}

    def _set_device_memory(self, ptr: int, size: int) -> None:
        """Point the context's scratch memory at ``ptr`` (SharedDeviceMemory calls this)."""
        if hasattr(self.context, "set_device_memory"):  # TensorRT >= 10.1: setDeviceMemoryV2(memory, size)
            self.context.set_device_memory(ptr, size)
        else:  # TensorRT 10.0
            self.context.device_memory = ptr
        self._graphs.clear()  # captured graphs hold the old address

    def _bind(self, batch: int) -> dict[str, object]:
        """Buffers for ``batch`` (allocated once), bound to the context only when the batch changes."""
        torch = self._torch
        if batch not in self._buffers:
            bufs = {}
            for t in self.inputs:
                bufs[t.name] = torch.empty(
                    (batch, *t.shape[1:]), dtype=_torch_dtype(torch, self._np_dtype[t.name]), device="cuda"
                )
                self.context.set_input_shape(t.name, tuple(bufs[t.name].shape))  # output shapes follow from these
            for t in self.outputs:
                shape = tuple(self.context.get_tensor_shape(t.name))
                bufs[t.name] = torch.empty(shape, dtype=_torch_dtype(torch, self._np_dtype[t.name]), device="cuda")
            self._buffers[batch] = bufs
            self._bound = None
        bufs = self._buffers[batch]
        if self._bound != batch:
            for t in self.inputs:
                self.context.set_input_shape(t.name, tuple(bufs[t.name].shape))
            for name, buf in bufs.items():
                self.context.set_tensor_address(name, buf.data_ptr())
            self._bound = batch
        return bufs

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EdgefuseError(f"TensorRT engine {self.name!r}: enqueue failed")

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = next(iter(feeds.values())).shape[0]
        bufs = self._bind(batch)
        with torch.cuda.stream(self.stream):
            for t in self.inputs:
                bufs[t.name].copy_(torch.from_numpy(np.ascontiguousarray(feeds[t.name])), non_blocking=True)
            graph = self._graphs.get(batch)
            if graph is not None:
                graph.replay()
            else:
                self._enqueue()
                if self.use_cuda_graph and batch not in self.graph_failures:
                    self._capture(batch)
            outs = {t.name: bufs[t.name].cpu() for t in self.outputs}
        self.stream.synchronize()
        return {k: v.numpy() for k, v in outs.items()}

    def _capture(self, batch: int) -> None:
        torch = self._torch
        try:
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._enqueue()
            self._graphs[batch] = graph
        except Exception as e:  # some plans (e.g. data-dependent shapes) cannot be captured: run them plainly
            self.graph_failures[batch] = f"{type(e).__name__}: {e}"

    def close(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self.context = None
        self.engine = None
        super().close()


def _torch_dtype(torch, dt: np.dtype):
    return {
        np.dtype("float32"): torch.float32,
        np.dtype("float16"): torch.float16,
        np.dtype("int64"): torch.int64,
        np.dtype("int32"): torch.int32,
        np.dtype("bool"): torch.bool,
        np.dtype("int8"): torch.int8,
    }[np.dtype(dt)]
