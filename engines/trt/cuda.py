"""The few CUDA runtime calls the TensorRT backend needs, through NVIDIA's ``cuda-python`` (no torch).

A Jetson's device install is edgefuse + ``tensorrt`` (JetPack's) + ``cuda-python``: device buffers,
a stream, host<->device copies and CUDA-graph capture come from the CUDA runtime API
(``cuda.bindings.runtime``, or ``cuda.cudart`` before cuda-python 12.6), as NVIDIA's TensorRT
samples do. Capture uses ``cudaStreamCaptureModeThreadLocal``: the global mode makes CUDA calls
from other threads fail while one thread captures.

Nothing here imports cuda-python at module import; ``Cuda()`` raises ``BackendUnavailable`` with
the install command when it is missing.
"""

from __future__ import annotations

import numpy as np

from edgefuse.engines.base import BackendUnavailable
from edgefuse.errors import EdgefuseError

INSTALL_CUDA = "pip install cuda-python (the CUDA runtime bindings TensorRT's Python samples use)"


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise BackendUnavailable(f"the TensorRT backend needs the CUDA runtime bindings: {INSTALL_CUDA}") from e
    return cudart


class DeviceBuffer:
    """``size`` bytes of device memory at ``ptr``, freed by ``free()`` (or when collected)."""

    def __init__(self, cuda: "Cuda", size: int) -> None:
        self._cuda, self.size = cuda, int(size)
        self.ptr = int(cuda.call("cudaMalloc", max(self.size, 1)))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._cuda.call("cudaFree", ptr)

    def __del__(self) -> None:  # pragma: no cover - depends on collection order at exit
        try:
            self.free()
        except Exception:
            pass


class Graph:
    """An instantiated CUDA graph captured from one stream."""

    def __init__(self, cuda: "Cuda", graph, exe) -> None:
        self._cuda, self._graph, self._exec = cuda, graph, exe

    def replay(self, stream) -> None:
        self._cuda.call("cudaGraphLaunch", self._exec, stream)

    def destroy(self) -> None:
        if self._exec is not None:
            self._cuda.call("cudaGraphExecDestroy", self._exec)
            self._cuda.call("cudaGraphDestroy", self._graph)
            self._exec = self._graph = None


class Cuda:
    """The CUDA runtime through cuda-python: every call checked, errors named."""

    def __init__(self) -> None:
        self.rt = _import_cudart()
        count = self.call("cudaGetDeviceCount")
        if not count:
            raise BackendUnavailable("the TensorRT backend needs a CUDA device; none is visible")

    def call(self, name: str, *args):
        """``cudart.<name>(*args)``; raise EdgefuseError unless it returned cudaSuccess; return its values."""
        out = getattr(self.rt, name)(*args)
        err, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if int(err) != int(self.rt.cudaError_t.cudaSuccess):
            raise EdgefuseError(f"CUDA {name} failed: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device(self, index: int = 0) -> dict:
        """``{"name", "compute_capability"}`` of the GPU a plan is built for and loaded on."""
        props = self.call("cudaGetDeviceProperties", index)
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {"name": name.strip("\x00").strip(), "compute_capability": f"{props.major}.{props.minor}"}

    def alloc(self, size: int) -> DeviceBuffer:
        return DeviceBuffer(self, size)

    def stream(self):
        return self.call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)

    def htod(self, ptr: int, host: np.ndarray, stream) -> None:
        self.call(
            "cudaMemcpyAsync", ptr, host.ctypes.data, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
        )

    def dtoh(self, host: np.ndarray, ptr: int, stream) -> None:
        self.call(
            "cudaMemcpyAsync", host.ctypes.data, ptr, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
        )

    def synchronize(self, stream) -> None:
        self.call("cudaStreamSynchronize", stream)

    def capture(self, stream, enqueue) -> Graph:
        """Capture what ``enqueue()`` puts on ``stream`` into a graph (thread-local capture mode)."""
        self.call("cudaStreamBeginCapture", stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        try:
            enqueue()
        except BaseException:
            try:
                self.call("cudaStreamEndCapture", stream)
            except EdgefuseError:
                pass
            raise
        graph = self.call("cudaStreamEndCapture", stream)
        return Graph(self, graph, self.call("cudaGraphInstantiate", graph, 0))
