"""Public fusion ops: each call runs the Triton kernel or the torch reference.

Rules, in order:

1. ``EDGEFUSE_KERNELS=reference`` -> reference. ``=triton`` -> Triton (CUDA tensors only).
   ``=interpret`` -> Triton through its CPU interpreter (tests; orders of magnitude slower).
2. While exporting or tracing (ONNX, torch.jit, torch.compile) -> reference, so graphs hold
   standard operators.
3. When autograd needs gradients (training) -> reference, except for ops with an autograd
   Function: gated_fusion (a Triton backward kernel) and fused_projection (the kernel's
   pre-activations, then torch's activation and norm; a matmul backward).
4. Otherwise CUDA tensors -> Triton, anything else -> reference. If Triton cannot be imported
   (a Jetson image without it, a broken install), or it cannot run on this GPU (checked once,
   at the first CUDA call: its CUDA driver builds C helpers on first use, which needs a C
   compiler and Python's headers that slim runtime images lack; and some Triton releases
   cannot compile for some GPUs, Jetson Thor with Triton <= 3.6 among them; and a driver may
   refuse to load what Triton's own ptxas built, so a one-line test kernel is built, loaded
   and run first), CUDA tensors take the reference too, with one warning that says why;
   forcing ``triton`` or ``interpret`` then raises instead.

Triton launches on the current CUDA device's stream, whatever device the tensors are on;
so, as torch's own ops do, a call switches to its tensors' device first when that is not the
current one (a model on ``cuda:1`` while ``cuda:0`` is current).

Production never interprets Triton (decision 6 of DESIGN.md): ``interpret`` is opt-in only.

Under ``torch.autocast`` the matmul-like ops (projection, bilinear, MFB) run in the autocast
dtype on both paths, as ``F.linear`` would: their floating-point arguments are cast first
(weights stay float32 parameters, so AMP training keeps its master weights). ``gated_fusion``
is a weighted sum and keeps its inputs' dtypes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from typing import Sequence

import torch

from edgefuse.kernels import checks
from edgefuse.kernels import reference as ref
from edgefuse.kernels.exporting import is_exporting
from edgefuse.kernels.platform import triton_cuda_error, triton_import_error

_CHOICES = ("triton", "interpret", "reference")


_FORCED_CACHE: tuple[str | None, str] = (None, "")


def _forced() -> str:
    global _FORCED_CACHE
    raw = os.environ.get("EDGEFUSE_KERNELS")
    if raw == _FORCED_CACHE[0]:  # parsed once per value: this runs on every fused-op call
        return _FORCED_CACHE[1]
    forced = (raw or "").strip().lower()
    if forced and forced not in _CHOICES:
        raise ValueError(f"EDGEFUSE_KERNELS must be one of {_CHOICES}, got {forced!r}")
    _FORCED_CACHE = (raw, forced)
    return forced


def _no_triton(forced: str, cannot: str, why: str, remedy: str) -> str:
    if forced:
        raise RuntimeError(
            f"EDGEFUSE_KERNELS={forced} needs Triton: {cannot} here ({why}); {remedy}, or unset EDGEFUSE_KERNELS"
        )
    _warn_no_triton(cannot, why, remedy)
    return "reference"


@functools.lru_cache(maxsize=4)
def _warn_no_triton(cannot: str, why: str, remedy: str) -> None:
    """Once per process and cause (the cache is the 'already warned' state)."""
    warnings.warn(
        f"edgefuse.kernels: {cannot} ({why}); CUDA tensors run the PyTorch reference ops instead "
        f"of the fused kernels. To run the kernels, {remedy}",
        RuntimeWarning,
        stacklevel=5,
    )


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Autograd will want gradients through a call on these tensors (None = absent, skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def backend(*tensors: torch.Tensor | None, has_backward: bool = False) -> str:
    """'triton' or 'reference': what a call on these tensors runs (see the module docstring).

    ``has_backward``: the op's Triton path is differentiable, so training need not fall back.
    """
    forced = _forced()
    if forced == "reference":
        return "reference"
    on_cuda = False  # every tensor given is a CUDA one (and there is one); a loop: this runs on every call
    for t in tensors:
        if t is not None:
            on_cuda = t.is_cuda
            if not on_cuda:
                break
    if not forced and not on_cuda:
        return "reference"  # the default on CPU: no need for the export and autograd checks
    if is_exporting():
        return "reference"
    if not has_backward and needs_grad(*tensors):
        return "reference"
    why = triton_import_error()
    if why is not None:
        return _no_triton(forced, "Triton cannot be imported", why, "install it (pip install triton)")
    if forced == "interpret" or (forced == "triton" and not on_cuda):
        if os.environ.get("TRITON_INTERPRET") == "1":
            return "triton"  # the interpreter: no driver, no GPU
        raise ValueError(
            "EDGEFUSE_KERNELS=interpret needs TRITON_INTERPRET=1 set before edgefuse.kernels is imported"
            if forced == "interpret"
            else "EDGEFUSE_KERNELS=triton needs CUDA tensors (use EDGEFUSE_KERNELS=interpret on CPU)"
        )
    cannot = triton_cuda_error()  # CUDA tensors: cached after the first call
    return "triton" if cannot is None else _no_triton(forced, *cannot)


def on_device(t: torch.Tensor):
    """A context that makes ``t``'s CUDA device the current one, if it is not already."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device.index)
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def _triton(kernel: str):
    """The module ``edgefuse.kernels.triton_<kernel>``, imported at its first call (an import
    statement in the op would run the import machinery again on every call)."""
    return importlib.import_module(f"edgefuse.kernels.triton_{kernel}")


def _c(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.contiguous() if t is not None else None


if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4: one API per device type

    def autocast_dtype(device_type: str) -> torch.dtype | None:
        """The dtype ``torch.autocast`` casts matmuls to on ``device_type`` now, or None when it is off."""
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None

else:  # torch < 2.4 (JetPack 6.0): per-device functions; decided once here, not per call

    def autocast_dtype(device_type: str) -> torch.dtype | None:
        """The dtype ``torch.autocast`` casts matmuls to on ``device_type`` now, or None when it is off."""
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return None


def _autocast(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """``tensors`` with every floating-point one cast to the autocast dtype, if autocast is on
    (the list itself when it is off). Runs on every call: loops, no device object."""
    for first in tensors:
        if first is not None:
            dt = autocast_dtype("cuda" if first.is_cuda else first.device.type)
            break
    else:
        return tensors
    if dt is None:
        return tensors
    return [t.to(dt) if t is not None and t.is_floating_point() and t.dtype != dt else t for t in tensors]


def fused_projection(
    xs: Sequence[torch.Tensor | None],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    act: str = "none",
    normalize: bool = False,
) -> torch.Tensor:
    """``[B, N, D]``: ``act(x_i W_i^T + b_i)`` per modality (L2-normalised rows if asked); None -> zeros."""
    n = len(xs)
    *cast, bias = _autocast([*xs, *weights, bias])
    xs, weights = cast[:n], cast[n:]
    if backend(*xs, *weights, bias, has_backward=True) == "triton":
        launchers = _triton("projection")
        xs, weights, bias = [_c(x) for x in xs], [w.contiguous() for w in weights], _c(bias)
        run = launchers.fused_projection_train if needs_grad(*xs, *weights, bias) else launchers.fused_projection_triton
        with on_device(weights[0]):
            return run(xs, weights, bias, act, normalize)
    checks.projection(xs, weights, bias, act)
    return ref.fused_projection_reference(xs, weights, bias, act, normalize)


def bilinear(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, O]``: ``x^T W_k y + b_k`` (torch.nn.functional.bilinear)."""
    x, y, weight, bias = _autocast([x, y, weight, bias])
    if backend(x, y, weight, bias) == "triton":
        with on_device(x):
            return _triton("bilinear").bilinear_triton(x.contiguous(), y.contiguous(), weight.contiguous(), _c(bias))
    checks.bilinear(x, y, weight, bias)
    return ref.bilinear_reference(x, y, weight, bias)


def mfb(
    x: torch.Tensor,
    y: torch.Tensor,
    u_w: torch.Tensor,
    u_b: torch.Tensor | None,
    v_w: torch.Tensor,
    v_b: torch.Tensor | None,
    factors: int,
    present: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """``[B, O]``: MFB pooling of ``(U x + bu) * (V y + bv)`` over ``factors``; absent side = 1."""
    x, y, u_w, u_b, v_w, v_b = _autocast([x, y, u_w, u_b, v_w, v_b])
    if backend(x, y, u_w, v_w, u_b, v_b) == "triton":
        with on_device(x):
            return _triton("bilinear").mfb_triton(
                x.contiguous(),
                y.contiguous(),
                u_w.contiguous(),
                _c(u_b),
                v_w.contiguous(),
                _c(v_b),
                factors,
                _c(present),
                normalize,
            )
    checks.mfb(x, y, u_w, u_b, v_w, v_b, factors, present)
    return ref.mfb_reference(x, y, u_w, u_b, v_w, v_b, factors, present, normalize)


def gated_fusion(
    feats: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, mode: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, D], [B] bool)``: gates normalised over present modalities, weighted sum, empty-row flag.

    Differentiable in feats and logits on both paths (the Triton one has its own backward kernel).
    """
    if backend(feats, logits, has_backward=True) == "triton":
        launchers = _triton("gated")
        feats, logits, mask = feats.contiguous(), logits.contiguous(), mask.contiguous()
        with on_device(feats):  # (autograd runs a CUDA backward with its device current)
            if needs_grad(feats, logits):
                return launchers.GatedFusionFunction.apply(feats, logits, mask, mode)
            return launchers.gated_fusion_triton(feats, logits, mask, mode)  # inference: no autograd node to build
    checks.gated(feats, logits, mask, mode)
    return ref.gated_fusion_reference(feats, logits, mask, mode)
