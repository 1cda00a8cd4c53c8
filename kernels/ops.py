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

from edgefuse._releases import major_minor
from edgefuse.kernels import checks
from edgefuse.kernels import reference as ref

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


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    """Why Triton cannot be used in this process (None: it can). Checked once."""
    try:
        importlib.import_module("triton.language")  # imports triton too; loads its compiled libraries
    except Exception as e:  # ImportError, or a wheel that fails to load its libraries
        return f"{type(e).__name__}: {e}"
    return None


#: what to do when Triton's CUDA driver cannot start
DRIVER_REMEDY = ("Triton needs a C compiler (gcc, or set CC), Python's headers (e.g. apt install gcc python3-dev) "
                 "and libcuda.so.1 (found by ldconfig, or set TRITON_LIBCUDA_PATH)")
#: The Triton releases that cannot compile the kernels for a GPU architecture, as
#: ``bench/triton_targets.sh`` measured by compiling every benchmark launch for it with each
#: release from 3.0 to 3.9 (``python -m edgefuse.kernels.aot --arch A``); the script also
#: checks this table. Per architecture: its parts, then (first, last release, what happens):
#: "aborts" (the whole process dies, SIGABRT, in an assertion or LLVM: no fallback can catch
#: that, so dispatch checks before the first launch), "fails" (an exception), or the
#: environment variable that makes it compile with CUDA 13's ptxas. A release in no range
#: compiles them. sm_80 to sm_90 (Ampere, Ada, Hopper, Jetson Orin) compile with every release.
#: (Older GPUs are not targets: the launchers plan for sm_80's shared memory.)
TRITON_TARGETS: dict[int, tuple[str, tuple[tuple[tuple[int, int], tuple[int, int], str], ...]]] = {
    100: ("B200, GB200", (((3, 0), (3, 2), "aborts"),)),
    110: ("Jetson Thor", (((3, 0), (3, 4), "aborts"), ((3, 5), (3, 5), "TRITON_PTXAS_PATH"),
                          ((3, 6), (3, 6), "TRITON_PTXAS_BLACKWELL_PATH"))),
    120: ("RTX 50, RTX PRO Blackwell", (((3, 0), (3, 2), "aborts"),)),
    121: ("DGX Spark GB10", (((3, 0), (3, 3), "aborts"), ((3, 4), (3, 4), "fails"), ((3, 5), (3, 5), "TRITON_PTXAS_PATH"))),
}


def triton_target_status(arch, triton_version: str) -> str | None:
    """What ``TRITON_TARGETS`` says this Triton does for ``sm_<arch>``: None (it compiles the
    kernels, or the table knows nothing against it), "aborts", "fails", or the variable that
    must name CUDA 13's ptxas."""
    release = major_minor(triton_version)
    ranges = TRITON_TARGETS[arch][1] if arch in TRITON_TARGETS and release is not None else ()
    return next((what for first, last, what in ranges if first <= release <= last), None)


def triton_target_error(arch, triton_version: str, environ=os.environ) -> tuple[str, str] | None:
    """Why this Triton cannot compile the kernels for ``sm_<arch>``, and what to do: ``(why,
    remedy)``; None when it can (or when ``TRITON_TARGETS`` knows nothing against it)."""
    what = triton_target_status(arch, triton_version)
    var = what if what not in (None, "aborts", "fails") else None
    if what is None or (var and environ.get(var)):
        return None
    parts, ranges = TRITON_TARGETS[arch]
    last = max(last for _, last, _ in ranges)
    remedy = f"install triton>={last[0]}.{last[1] + 1}"
    if var:
        remedy += f", or set {var} to CUDA 13's ptxas (e.g. /usr/local/cuda/bin/ptxas on JetPack 7)"
    how = {"aborts": "compiling aborts the process", "fails": "its compiler fails"}.get(what, f"its ptxas rejects sm_{arch}a")
    return f"Triton {triton_version} cannot compile for sm_{arch} ({parts}): {how}", remedy


def error_line(e: BaseException, limit: int | None = None) -> str:
    """``Type: message`` on one line (libcuda's and ptxas's messages run to several), cut to
    ``limit`` characters with an ellipsis."""
    line = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."


@functools.lru_cache(maxsize=1)
def triton_cuda_error() -> tuple[str, str, str] | None:
    """Why Triton cannot run the kernels on this process's CUDA GPU: ``(what, why, remedy)``;
    None when it can. Checked once, at the first call on CUDA tensors (it needs CUDA).

    1. Triton's CUDA driver must start. Importing Triton does not start it: its first use
       compiles C helpers with the host's C compiler against Python's headers (cached under
       ``~/.triton/cache`` after that) and finds ``libcuda``. A runtime image without ``gcc`` or
       ``python3-dev`` used to fail only at the first fused op's launch, inside the model
       ("Failed to find C compiler").
    2. This Triton must compile for the GPU's architecture (``triton_target_error``).
    3. Triton must build, load and run a kernel on the GPU (``kernel_load_error``): its ptxas
       may be newer than the driver can load. Not checked when the first call is being
       captured into a CUDA graph, where the test kernel would join the graph.
    """
    import triton

    try:
        target = triton.runtime.driver.active.get_current_target()  # starts the driver
    except Exception as e:  # RuntimeError (no compiler), CalledProcessError (no Python.h), AssertionError (no libcuda)
        return "Triton's CUDA driver cannot start", error_line(e), DRIVER_REMEDY  # (libcuda's message has two lines)
    bad = triton_target_error(target.arch, triton.__version__)
    if bad is not None:
        return ("Triton cannot compile the kernels for this GPU", *bad)
    if torch.cuda.is_current_stream_capturing():  # a launch now would join the user's graph: trust the first launch
        return None
    return kernel_load_error(torch.device("cuda", torch.cuda.current_device()), target.arch)


#: The first Triton release that cannot build the kernels with a CUDA 11 ptxas (JetPack 5's
#: toolkit is 11.4): it passes ptxas -regAllocOptLevel, which CUDA 11.8's lacks
#: (bench/triton_ptxas.sh, bench/results/aot/ptxas.txt).
CUDA11_PTXAS_BREAKS_FROM = (3, 7)


#: what to do when Triton's test kernel fails for a cause other than a ptxas newer than the driver
PROBE_REMEDY = ("get Triton itself to build and run a kernel on this GPU: it fails on a one-line test kernel, "
                "before any of edgefuse's")


def kernel_load_error(device, arch) -> tuple[str, str, str] | None:
    """Why Triton cannot build, load and run a kernel on ``device`` (``sm_<arch>``): ``(what,
    why, remedy)``; None when it can. Runs ``triton_probe``'s one-line kernel and reads it back.

    Triton builds kernels with the ptxas in its wheel, and a driver older than that ptxas's CUDA
    may refuse to load them ("device kernel image is invalid", at the first launch); Triton 3.9
    builds for Hopper and Blackwell with CUDA 13's. Where that is the case, ``why`` gives both
    versions and ``remedy`` names the variable that picks another ptxas.
    """
    try:
        from edgefuse.kernels import triton_probe

        triton_probe.run(device)
        return None
    except Exception as e:  # a compile error, a load the driver refused, a wrong result
        why = error_line(e, 300)  # (a ptxas error can run to pages)
    import triton

    ptxas, driver = triton_ptxas(arch), cuda_driver_version()
    remedy = PROBE_REMEDY
    if ptxas is not None and driver is not None:
        why += f"; Triton {triton.__version__} builds for sm_{arch} with CUDA {ptxas[1]}'s ptxas, this driver runs CUDA {driver}"
        if (major_minor(ptxas[1]) or (0, 0)) > (major_minor(driver) or (99, 0)):
            remedy = (f"update the NVIDIA driver to one for CUDA {ptxas[1]}, or set {ptxas[2]} to the ptxas of a CUDA "
                      f"toolkit no newer than {driver}, such as /usr/local/cuda/bin/ptxas where that toolkit matches "
                      "the driver (as JetPack's does)")
            if driver.startswith("11.") and (major_minor(triton.__version__) or (0, 0)) >= CUDA11_PTXAS_BREAKS_FROM:
                remedy += (f"; Triton {triton.__version__} cannot build with a CUDA 11 ptxas, so first install "
                           "triton<%d.%d" % (CUDA11_PTXAS_BREAKS_FROM[0], CUDA11_PTXAS_BREAKS_FROM[1]))
    return "Triton cannot build and load a kernel on this GPU", why, remedy


def cuda_driver_version() -> str | None:
    """The CUDA version the NVIDIA driver supports ("12.6"), from libcuda; None where it cannot be read."""
    import ctypes

    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):  # no libcuda (no NVIDIA driver, another OS)
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def triton_ptxas(arch) -> tuple[str, str, str] | None:
    """The ptxas this Triton builds ``sm_<arch>`` kernels with: ``(path, its CUDA version, the
    variable that names another)``; None where it does not say (not NVIDIA, or its internals
    moved). Triton 3.0-3.2 keep one ptxas. From 3.3 ``get_ptxas`` picks it, per architecture
    except in 3.4 and 3.5: ``ptxas-blackwell`` (``TRITON_PTXAS_BLACKWELL_PATH``) for Blackwell,
    and from 3.9 for Hopper too (CUDA 13.4's in 3.9's wheel). Up to 3.3 the variable is the
    binary's name as it is (``TRITON_PTXAS-BLACKWELL_PATH``)."""
    try:
        from triton.backends.nvidia import compiler

        if hasattr(compiler, "get_ptxas"):
            try:
                tool = compiler.get_ptxas(arch)
            except TypeError:  # 3.4, 3.5: one for every architecture
                tool = compiler.get_ptxas()
            path, version = (tool.path, tool.version) if hasattr(tool, "path") else tool  # 3.3: (path, version)
            named_as_is = not hasattr(tool, "path")
        else:
            (path, version), named_as_is = compiler._path_to_binary("ptxas"), True
    except Exception:  # ImportError, a Triton whose internals moved
        return None
    blackwell = "TRITON_PTXAS-BLACKWELL_PATH" if named_as_is else "TRITON_PTXAS_BLACKWELL_PATH"
    var = next((v for v in (blackwell, "TRITON_PTXAS_PATH") if os.environ.get(v) == path),
               blackwell if os.path.basename(path).startswith("ptxas-blackwell") else "TRITON_PTXAS_PATH")
    return path, version, var


def _no_triton(forced: str, cannot: str, why: str, remedy: str) -> str:
    if forced:
        raise RuntimeError(f"EDGEFUSE_KERNELS={forced} needs Triton: {cannot} here ({why}); {remedy}, "
                           "or unset EDGEFUSE_KERNELS")
    _warn_no_triton(cannot, why, remedy)
    return "reference"


@functools.lru_cache(maxsize=4)
def _warn_no_triton(cannot: str, why: str, remedy: str) -> None:
    """Once per process and cause (the cache is the 'already warned' state)."""
    warnings.warn(f"edgefuse.kernels: {cannot} ({why}); CUDA tensors run the PyTorch reference ops instead "
                  f"of the fused kernels. To run the kernels, {remedy}", RuntimeWarning, stacklevel=5)


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
        raise ValueError("EDGEFUSE_KERNELS=interpret needs TRITON_INTERPRET=1 set before edgefuse.kernels is imported"
                         if forced == "interpret" else
                         "EDGEFUSE_KERNELS=triton needs CUDA tensors (use EDGEFUSE_KERNELS=interpret on CPU)")
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
    x: torch.Tensor, y: torch.Tensor,
    u_w: torch.Tensor, u_b: torch.Tensor | None, v_w: torch.Tensor, v_b: torch.Tensor | None,
    factors: int, present: torch.Tensor | None = None, normalize: bool = True,
) -> torch.Tensor:
    """``[B, O]``: MFB pooling of ``(U x + bu) * (V y + bv)`` over ``factors``; absent side = 1."""
    x, y, u_w, u_b, v_w, v_b = _autocast([x, y, u_w, u_b, v_w, v_b])
    if backend(x, y, u_w, v_w, u_b, v_b) == "triton":
        with on_device(x):
            return _triton("bilinear").mfb_triton(
                x.contiguous(), y.contiguous(), u_w.contiguous(), _c(u_b), v_w.contiguous(), _c(v_b), factors, _c(present), normalize
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
