"""TensorRT runner (TensorRT 10 and 11 Python API): load a plan and run it (``loader.py`` builds plans).

Device buffers, the stream and CUDA graphs come from the CUDA runtime through ``cuda-python``
(``edgefuse.engines.trt.cuda``): no torch on the device. Per batch size the engine keeps one
execution context, bound once to that batch's shapes and buffers, so a CUDA graph captured for
it is never replayed after a shape change (NVIDIA/TensorRT#3798); it is captured after a plain
enqueue, in thread-local mode. Contexts of engines that never run at the same time (the runtime's
one-engine-at-a-time swap) share one scratch block (``SharedDeviceMemory``), which every engine
attached to it holds and whose lock serialises their runs.

Nothing here imports tensorrt or cuda-python at module import: ``import edgefuse.engines`` works
without them, and constructing an engine raises ``BackendUnavailable`` with the install command.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from edgefuse.engines.base import Engine, TensorSpec
from edgefuse.engines.trt.loader import _logger, import_tensorrt
from edgefuse.errors import EdgefuseError


class SharedDeviceMemory:
    """One scratch block for the execution contexts of engines that never run at the same time
    (the runtime calls one engine at a time): the total is the largest, not the sum.

    Every attached engine holds the block (TensorRT: memory given to ``set_device_memory`` must stay
    valid while a context may run), runs under its ``lock``, and detaches when closed. When a later
    engine needs more, a larger block is allocated, every attached engine is re-pointed at it (and
    drops the CUDA graphs that hold the old address), and only then is the old one freed. Attach
    every engine before running any (``Bundle.load_engines`` does), so no graph is ever dropped.
    """

    def __init__(self, alloc=None) -> None:
        self._buf = None
        self._users: list = []  # weak references: an engine holds the block, not the other way round
        self._alloc = alloc
        self.lock = threading.RLock()

    def attach(self, engine, size: int) -> None:
        """Point ``engine``'s contexts (via ``engine._set_device_memory(ptr, size)``) at the block."""
        with self.lock:
            self._users = [r for r in self._users if r() is not None]
            if self._buf is None or size > self._buf.size:
                buf = (self._alloc or engine._cuda.alloc)(max(int(size), 1))
                for ref in self._users:
                    ref()._set_device_memory(buf.ptr, buf.size)
                old, self._buf = self._buf, buf
                if old is not None:
                    old.free()  # no context points at it any more
            self._users.append(weakref.ref(engine))
            engine._set_device_memory(self._buf.ptr, self._buf.size)

    def detach(self, engine) -> None:
        with self.lock:
            self._users = [r for r in self._users if r() is not None and r() is not engine]

    @property
    def size(self) -> int:
        """Bytes of the block (0 before the first engine attaches)."""
        return self._buf.size if self._buf is not None else 0

    @property
    def users(self) -> int:
        return sum(r() is not None for r in self._users)


def _device_memory_size(engine) -> int:
    """Scratch bytes a context of ``engine`` needs (``device_memory_size_v2`` since TensorRT 10.1;
    TensorRT 11 has only that)."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def _set_context_memory(context, ptr: int, size: int) -> None:
    if hasattr(context, "set_device_memory"):  # TensorRT >= 10.1: setDeviceMemoryV2(memory, size)
        context.set_device_memory(ptr, size)
    else:  # TensorRT 10.0
        context.device_memory = ptr


@dataclass
class _Slot:
    """One batch size: its own execution context, bound once, its buffers and its CUDA graph."""

    context: object
    device: dict  # name -> DeviceBuffer
    host: dict  # output name -> numpy array the results land in
    graph: object = None
    runs: int = 0
    keep: list = field(default_factory=list)  # host inputs of the run in flight


class TrtEngine(Engine):
    """A deserialised TensorRT plan behind the Engine interface (inputs/outputs as numpy on the host)."""

    backend = "trt"

    def __init__(
        self,
        plan_path: str | Path,
        shared_memory: SharedDeviceMemory | None = None,
        cuda_graph: bool = True,
        name: str | None = None,
        cuda=None,
    ) -> None:
        super().__init__()
        trt = import_tensorrt()
        if cuda is None:
            from edgefuse.engines.trt.cuda import Cuda

            cuda = Cuda()
        self._trt, self._cuda = trt, cuda
        plan_path = Path(plan_path)
        self.name = name or plan_path.stem
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EdgefuseError(
                f"TensorRT could not deserialise {plan_path.name} (built by another TensorRT version or GPU? "
                "run `edgefuse compile` on this device)"
            )
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
        lo, _, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.inputs[0].name, 0))
        self.batch_range = (int(lo[0]), int(hi[0]))
        self.use_cuda_graph = cuda_graph
        self.graph_failures: dict[int, str] = {}
        self._slots: dict[int, _Slot] = {}
        self._memory: tuple[int, int] | None = None
        self._shared = shared_memory  # held: the contexts point into it
        self._lock = shared_memory.lock if shared_memory is not None else threading.RLock()
        self.stream = cuda.stream()
        if shared_memory is not None:
            shared_memory.attach(self, _device_memory_size(self.engine))

    def _set_device_memory(self, ptr: int, size: int) -> None:
        """Point every context's scratch memory at ``ptr`` (SharedDeviceMemory calls this)."""
        self._memory = (ptr, size)
        for slot in self._slots.values():
            _set_context_memory(slot.context, ptr, size)
            if slot.graph is not None:  # a captured graph holds the old address
                slot.graph.destroy()
                slot.graph = None

    def _slot(self, batch: int) -> _Slot:
        slot = self._slots.get(batch)
        if slot is not None:
            return slot
        lo, hi = self.batch_range
        if not lo <= batch <= hi:
            raise ValueError(
                f"TensorRT engine {self.name!r}: batch {batch} is outside its optimisation profile "
                f"({lo}..{hi}); rebuild the plans with a larger --max-batch"
            )
        trt, cuda = self._trt, self._cuda
        if self._shared is not None:
            context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            _set_context_memory(context, *self._memory)
        else:
            context = self.engine.create_execution_context()
        if context is None:
            raise EdgefuseError(f"TensorRT engine {self.name!r}: could not create an execution context")
        device, host = {}, {}
        try:
            for t in self.inputs:
                shape = (batch, *t.shape[1:])
                if not context.set_input_shape(t.name, shape):
                    raise ValueError(
                        f"TensorRT engine {self.name!r}: input {t.name!r} shape {shape} is outside the "
                        f"profile (batch {lo}..{hi}, per sample {tuple(t.shape[1:])})"
                    )
                device[t.name] = cuda.alloc(int(np.prod(shape)) * self._np_dtype[t.name].itemsize)
            for t in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(t.name))
                host[t.name] = np.empty(shape, self._np_dtype[t.name])
                device[t.name] = cuda.alloc(host[t.name].nbytes)
            for n, buf in device.items():
                if not context.set_tensor_address(n, buf.ptr):
                    raise EdgefuseError(f"TensorRT engine {self.name!r}: set_tensor_address({n!r}) failed")
        except BaseException:
            for buf in device.values():
                buf.free()
            raise
        slot = self._slots[batch] = _Slot(context, device, host)
        return slot

    def _enqueue(self, slot: _Slot) -> None:
        if not slot.context.execute_async_v3(self.stream):
            raise EdgefuseError(f"TensorRT engine {self.name!r}: enqueue failed")

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.engine is None:
            raise EdgefuseError(f"TensorRT engine {self.name!r} is closed")
        batch = int(next(iter(feeds.values())).shape[0])
        cuda = self._cuda
        with self._lock:  # the shared scratch block serves one context at a time
            slot = self._slot(batch)
            slot.keep = [np.ascontiguousarray(feeds[t.name], dtype=self._np_dtype[t.name]) for t in self.inputs]
            for t, arr in zip(self.inputs, slot.keep):
                cuda.htod(slot.device[t.name].ptr, arr, self.stream)
            if slot.graph is not None:
                slot.graph.replay(self.stream)
            else:
                self._enqueue(slot)  # a plain enqueue first: TensorRT sets up the shapes' state there
                if self.use_cuda_graph and batch not in self.graph_failures and slot.runs > 0:
                    self._capture(slot, batch)
            slot.runs += 1
            for t in self.outputs:
                cuda.dtoh(slot.host[t.name], slot.device[t.name].ptr, self.stream)
            cuda.synchronize(self.stream)
            slot.keep = []
            return {t.name: slot.host[t.name].copy() for t in self.outputs}

    def _capture(self, slot: _Slot, batch: int) -> None:
        try:
            self._cuda.synchronize(self.stream)
            slot.graph = self._cuda.capture(self.stream, lambda: self._enqueue(slot))
        except Exception as e:  # some plans (e.g. data-dependent shapes) cannot be captured: run them plainly
            self.graph_failures[batch] = f"{type(e).__name__}: {e}"

    def close(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                if slot.graph is not None:
                    slot.graph.destroy()
                for buf in slot.device.values():
                    buf.free()
            self._slots.clear()
            if self._shared is not None:
                self._shared.detach(self)
            self.engine = None
        super().close()
