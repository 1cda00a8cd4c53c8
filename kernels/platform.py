"""Can Triton run here, and if not, why and what fixes it: the import, the CUDA driver, the GPU target, ptxas.

Each check runs once per process (cached) and returns None when all is well, or the reason
and the remedy. Dispatch (``ops.py``) calls them at the first CUDA call; ``edgefuse kernels``
reports them.
"""

from __future__ import annotations

import functools
import importlib
import os

import torch

from edgefuse._releases import major_minor


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    """Why Triton cannot be used in this process (None: it can). Checked once."""
    try:
        importlib.import_module("triton.language")  # imports triton too; loads its compiled libraries
    except Exception as e:  # ImportError, or a wheel that fails to load its libraries
        return f"{type(e).__name__}: {e}"
    return None


#: what to do when Triton's CUDA driver cannot start
DRIVER_REMEDY = (
    "Triton needs a C compiler (gcc, or set CC), Python's headers (e.g. apt install gcc python3-dev) "
    "and libcuda.so.1 (found by ldconfig, or set TRITON_LIBCUDA_PATH)"
)
#: The Triton releases that cannot compile the kernels for a GPU architecture, as
#: ``tools/triton_targets.sh`` measured by compiling every benchmark launch for it with each
#: release from 3.0 to 3.9 (``python -m tools.aot --arch A``); the script also
#: checks this table. Per architecture: its parts, then (first, last release, what happens):
#: "aborts" (the whole process dies, SIGABRT, in an assertion or LLVM: no fallback can catch
#: that, so dispatch checks before the first launch), "fails" (an exception), or the
#: environment variable that makes it compile with CUDA 13's ptxas. A release in no range
#: compiles them. sm_80 to sm_90 (Ampere, Ada, Hopper, Jetson Orin) compile with every release.
#: (Older GPUs are not targets: the launchers plan for sm_80's shared memory.)
TRITON_TARGETS: dict[int, tuple[str, tuple[tuple[tuple[int, int], tuple[int, int], str], ...]]] = {
    100: ("B200, GB200", (((3, 0), (3, 2), "aborts"),)),
    110: (
        "Jetson Thor",
        (
            ((3, 0), (3, 4), "aborts"),
            ((3, 5), (3, 5), "TRITON_PTXAS_PATH"),
            ((3, 6), (3, 6), "TRITON_PTXAS_BLACKWELL_PATH"),
        ),
    ),
    120: ("RTX 50, RTX PRO Blackwell", (((3, 0), (3, 2), "aborts"),)),
    121: (
        "DGX Spark GB10",
        (((3, 0), (3, 3), "aborts"), ((3, 4), (3, 4), "fails"), ((3, 5), (3, 5), "TRITON_PTXAS_PATH")),
    ),
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
    how = {"aborts": "compiling aborts the process", "fails": "its compiler fails"}.get(
        what, f"its ptxas rejects sm_{arch}a"
    )
    return f"Triton {triton_version} cannot compile for sm_{arch} ({parts}): {how}", remedy


def error_line(e: BaseException, limit: int | None = None) -> str:
    """``Type: message`` on one line (libcuda's and ptxas's messages run to several), cut to
    ``limit`` characters with an ellipsis."""
    line = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


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
#: (tools/triton_ptxas.sh, bench/results/aot/ptxas.txt).
CUDA11_PTXAS_BREAKS_FROM = (3, 7)


#: what to do when Triton's test kernel fails for a cause other than a ptxas newer than the driver
PROBE_REMEDY = (
    "get Triton itself to build and run a kernel on this GPU: it fails on a one-line test kernel, "
    "before any of edgefuse's"
)


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
        why += (
            f"; Triton {triton.__version__} builds for sm_{arch} with CUDA {ptxas[1]}'s ptxas, "
            f"this driver runs CUDA {driver}"
        )
        if (major_minor(ptxas[1]) or (0, 0)) > (major_minor(driver) or (99, 0)):
            remedy = (
                f"update the NVIDIA driver to one for CUDA {ptxas[1]}, or set {ptxas[2]} to the ptxas of a CUDA "
                f"toolkit no newer than {driver}, such as /usr/local/cuda/bin/ptxas where that toolkit matches "
                "the driver (as JetPack's does)"
            )
            if driver.startswith("11.") and (major_minor(triton.__version__) or (0, 0)) >= CUDA11_PTXAS_BREAKS_FROM:
                remedy += (
                    f"; Triton {triton.__version__} cannot build with a CUDA 11 ptxas, so first install "
                    "triton<%d.%d" % (CUDA11_PTXAS_BREAKS_FROM[0], CUDA11_PTXAS_BREAKS_FROM[1])
                )
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
    var = next(
        (v for v in (blackwell, "TRITON_PTXAS_PATH") if os.environ.get(v) == path),
        blackwell if os.path.basename(path).startswith("ptxas-blackwell") else "TRITON_PTXAS_PATH",
    )
    return path, version, var
