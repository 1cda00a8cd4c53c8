"""Export detection: is torch exporting or compiling right now (ONNX, torch.jit, torch.compile)?

Dispatch runs the reference ops then, so graphs hold standard operators; the fusion layer asks
too, to leave per-frame mask arithmetic out of exported per-subset graphs.
"""

from __future__ import annotations

import functools
import importlib

import torch

#: where the TorchScript exporter's state (``GLOBALS.in_onnx_export``) has lived, newest first
ONNX_EXPORT_STATE = ("torch.onnx._internal.torchscript_exporter._globals", "torch.onnx._globals")
#: the dynamo exporter's flag (``_is_onnx_exporting``)
ONNX_EXPORT_FLAGS = "torch.onnx._internal.exporter._flags"


def onnx_export_flags():
    """``(state, flags)``: the TorchScript exporter's state (``state.in_onnx_export``) and the
    dynamo exporter's flags module (``flags._is_onnx_exporting``), the two that recent torch
    releases' ``torch.onnx.is_in_onnx_export`` reads; None where this torch has them elsewhere."""
    for where in ONNX_EXPORT_STATE:
        try:
            state = importlib.import_module(where).GLOBALS
            flags = importlib.import_module(ONNX_EXPORT_FLAGS)
        except (ImportError, AttributeError):
            continue
        if hasattr(state, "in_onnx_export") and hasattr(flags, "_is_onnx_exporting"):
            return state, flags
    return None


@functools.lru_cache(maxsize=1)
def _onnx_export_check():
    """A function that answers as ``torch.onnx.is_in_onnx_export``, found once.

    Recent torch releases' function imports the modules of the two flags it reads (the
    TorchScript exporter's and the dynamo exporter's) on every call, and this check runs on
    every fused op on a GPU and in every model forward's input check. Where
    ``onnx_export_flags`` finds them, this reads the same two flags; elsewhere it is torch's
    own function (older releases read one flag, imported once).
    """
    found = onnx_export_flags()
    if found is None:
        return torch.onnx.is_in_onnx_export
    state, flags = found
    return lambda: state.in_onnx_export or flags._is_onnx_exporting


def is_exporting() -> bool:
    """True while exporting or compiling (ONNX, torch.jit, torch.compile/export)."""
    return bool(
        (hasattr(torch, "compiler") and torch.compiler.is_compiling())
        or torch.jit.is_tracing()
        or _onnx_export_check()()
    )
