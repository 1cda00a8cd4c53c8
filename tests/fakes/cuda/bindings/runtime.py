"""Fake ``cuda.bindings.runtime`` (cuda-python): device memory is host memory, streams are objects,
graphs are lists of recorded work. Module-level ``STATE`` lets tests inspect and reset it."""

from __future__ import annotations

import ctypes
import threading
from enum import IntEnum

import numpy as np


class cudaError_t(IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureImplicit = 906
    cudaErrorStreamCaptureUnsupported = 900


class cudaMemcpyKind(IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStreamCaptureMode(IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


cudaStreamNonBlocking = 1
OK = cudaError_t.cudaSuccess


class FakeCudaError(RuntimeError):
    pass


class _Props:
    def __init__(self, name: bytes, major: int, minor: int) -> None:
        self.name, self.major, self.minor = name, major, minor


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self, name: bytes = b"Orin (nvgpu)", major: int = 8, minor: int = 7) -> None:
        self.props = _Props(name, major, minor)
        self.live: dict[int, np.ndarray] = {}
        self.freed: dict[int, np.ndarray] = {}  # poisoned (0xFF: NaN as float32) and kept, so never reused
        self.busy: dict[int, object] = {}  # scratch block -> the stream whose work uses it until synchronised
        self.collisions = 0  # two streams' work on one scratch block at once
        self.capture_modes: list[int] = []
        self.global_capture: threading.Thread | None = None
        self.lock = threading.Lock()

    def block(self, ptr: int, nbytes: int) -> np.ndarray:
        """The live allocation holding ``[ptr, ptr + nbytes)``; FakeCudaError on freed or unknown memory."""
        for base, arr in list(self.live.items()):
            if base <= ptr and ptr + nbytes <= base + arr.nbytes:
                return arr
        for base, arr in list(self.freed.items()):
            if base <= ptr < base + arr.nbytes:
                raise FakeCudaError(f"use of freed device memory at {ptr:#x}")
        raise FakeCudaError(f"illegal address {ptr:#x}")


STATE = _State()


class _Stream:
    def __init__(self) -> None:
        self.capturing: list | None = None


class _Graph:
    def __init__(self, work: list) -> None:
        self.work = work


def _guard():
    g = STATE.global_capture
    if g is not None and g is not threading.current_thread():
        return cudaError_t.cudaErrorStreamCaptureImplicit  # a global-mode capture is running in another thread
    return None


def cudaGetDeviceCount():
    return (OK, 1)


def cudaGetDeviceProperties(index):
    return (OK, STATE.props)


def cudaMalloc(size):
    err = _guard()
    if err:
        return (err, 0)
    arr = np.zeros(max(int(size), 1), np.uint8)
    ptr = arr.ctypes.data
    STATE.live[ptr] = arr
    return (OK, ptr)


def cudaFree(ptr):
    arr = STATE.live.pop(int(ptr), None)
    if arr is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    arr[:] = 0xFF
    STATE.freed[int(ptr)] = arr
    return (OK,)


def cudaStreamCreateWithFlags(flags):
    return (OK, _Stream())


def cudaMemcpyAsync(dst, src, count, kind, stream):
    err = _guard()
    if err:
        return (err,)
    if stream.capturing is not None:
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    STATE.block(dst if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else src, count)
    ctypes.memmove(dst, src, count)
    return (OK,)


def cudaStreamSynchronize(stream):
    with STATE.lock:
        for ptr, s in list(STATE.busy.items()):
            if s is stream:
                del STATE.busy[ptr]
    return (OK,)


def cudaStreamBeginCapture(stream, mode):
    STATE.capture_modes.append(int(mode))
    stream.capturing = []
    if mode == cudaStreamCaptureMode.cudaStreamCaptureModeGlobal:
        STATE.global_capture = threading.current_thread()
    return (OK,)


def cudaStreamEndCapture(stream):
    work, stream.capturing = stream.capturing, None
    if STATE.global_capture is threading.current_thread():
        STATE.global_capture = None
    return (OK, _Graph(work or []))


def cudaGraphInstantiate(graph, flags):
    return (OK, graph)


def cudaGraphLaunch(exe, stream):
    for work in exe.work:
        work(stream)
    return (OK,)


def cudaGraphExecDestroy(exe):
    return (OK,)


def cudaGraphDestroy(graph):
    return (OK,)


# --- for the fake tensorrt -------------------------------------------------------------------


def submit(stream, work) -> bool:
    """Run ``work(stream)`` now, or record it when ``stream`` is capturing; False when CUDA refuses."""
    if _guard():
        return False
    if stream.capturing is not None:
        stream.capturing.append(work)
    else:
        work(stream)
    return True


def use_scratch(ptr: int, size: int, stream) -> None:
    STATE.block(ptr, size)
    with STATE.lock:
        if ptr in STATE.busy and STATE.busy[ptr] is not stream:
            STATE.collisions += 1
        STATE.busy[ptr] = stream


def read(ptr: int, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    STATE.block(ptr, n)
    return np.frombuffer(ctypes.string_at(ptr, n), dtype).reshape(shape).copy()


def write(ptr: int, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    STATE.block(ptr, arr.nbytes)
    ctypes.memmove(ptr, arr.ctypes.data, arr.nbytes)
