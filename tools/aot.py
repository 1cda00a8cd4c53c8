"""Compile the Triton kernels ahead of time for a GPU architecture, with no GPU present.

Every launch a launcher would make for a set of shapes is captured (nothing runs) and
compiled by Triton's own JIT, as a GPU run would compile it, for a stand-in GPU of the target
architecture (sm_90 for H100/H200, sm_87 for Jetson Orin, ...; see ``stand_in_gpu``). The
binaries are therefore exactly the ones a run on that GPU would build, Triton's argument
specialisation included (integers equal to 1 or divisible by 16, pointer alignment), and the
check works across the Triton versions whose JIT internals ``stand_in_gpu`` knows (3.0 to
3.9). This catches what the interpreter cannot: the ``tl.dot`` size minimums, type errors in
the compiled lowering, tiles whose shared memory exceeds the target's per-block limit, and
register spills; ``cuobjdump`` (shipped in Triton's wheel) reads each cubin's registers,
spill (local) bytes and shared memory, and each record counts the PTX's memory instructions:
global loads and stores by width, shared-memory accesses, barriers and atomics
(``memory_instructions``), and its tensor-core instructions by family and shape
(``tensor_core_instructions``: whether a GEMM tile runs Hopper's warpgroup MMA).

It must run in a process where ``TRITON_INTERPRET`` is unset (the interpreter replaces the
JIT functions this needs).

    python -m tools.aot --arch 90 --arch 87 [--json kernels_aot.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch

#: shared memory one block may use (opt-in maximum), bytes, per compute capability. sm_110
#: (Jetson Thor): not confirmed from NVIDIA's tables here, so the smallest Blackwell limit
#: (sm_120's) stands in as a lower bound; the launchers' 96 KiB plan stays under it.
MAX_SHARED = {
    75: 65536,
    80: 166912,
    86: 101376,
    87: 166912,
    89: 101376,
    90: 232448,
    100: 232448,
    110: 101376,
    120: 101376,
}
#: 32-bit registers per SM (all listed architectures)
REGS_PER_SM = 65536
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "enable_fp_fusion")


@dataclass(frozen=True)
class Launch:
    """One captured kernel launch: the kernel, its argument types, constexprs and options;
    ``compiled`` is Triton's CompiledKernel when ``capture`` compiled it."""

    kernel: object  # triton JITFunction
    signature: tuple[tuple[str, str], ...]  # (name, tensor dtype or Python type) of each runtime argument
    constexprs: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, int | bool], ...]
    grid: tuple[int, ...]
    compiled: object = field(default=None, compare=False, repr=False)
    seconds: float = field(default=0.0, compare=False)

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def key(self) -> tuple:
        """What tells launches apart, short of Triton's value specialisation (the grid does not)."""
        return (self.name, self.signature, self.constexprs, self.options)


@dataclass
class Compiled:
    kernel: str
    arch: int
    constexprs: dict
    num_warps: int
    registers: int
    spill_bytes: int  # per-thread local memory: > 0 means registers spilled
    shared_bytes: int
    max_shared_bytes: int | None
    blocks_per_sm_by_regs: int
    seconds: float
    cases: list[str] = field(default_factory=list)
    #: the launch's enable_fp_fusion; None: left to Triton's default, which differs by version
    fp_fusion: bool | None = None
    #: the binary's memory instructions (``memory_instructions``): instructions in the code,
    #: not executions (a loop body counts once)
    memory: dict = field(default_factory=dict)
    #: the same counted from the binary's SASS (``sass_memory_instructions``), when asked for
    memory_sass: dict | None = None
    #: the binary's tensor-core instructions (``tensor_core_instructions``): {"wgmma m64n64k16 f16": n, ...}
    tensor_cores: dict = field(default_factory=dict)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


@contextlib.contextmanager
def capture(compile_if: Callable[[Launch], bool] | None = None) -> Iterator[list[Launch]]:
    """Within the block, kernel launches are recorded instead of run. A launch for which
    ``compile_if`` is true is also compiled by Triton's JIT (its warmup: compile and cache, no
    launch) for the active driver's target: under ``stand_in_gpu``, the stand-in's."""
    if _interpreting():
        raise RuntimeError("tools.aot: unset TRITON_INTERPRET (the interpreter has no compilable kernels)")
    import triton.runtime.jit as jit

    from edgefuse.kernels import _launch

    launches: list[Launch] = []
    original = jit.JITFunction.run
    _launch.clear()  # a launch it kept would not come through JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        launch = launch_of(self, args, kwargs, grid)
        if compile_if is not None and compile_if(launch):
            t = time.perf_counter()
            compiled = original(self, *args, grid=grid, warmup=True, **kwargs)
            launch = replace(launch, compiled=compiled, seconds=time.perf_counter() - t)
        launches.append(launch)

    jit.JITFunction.run = record
    try:
        yield launches
    finally:
        jit.JITFunction.run = original


def launch_of(fn, args, kwargs, grid) -> Launch:
    """A launch of JIT function ``fn`` as ``run`` receives it (``kwargs`` without ``grid`` and
    ``warmup``): its argument types, constexprs, options and grid."""
    bound = dict(zip(fn.arg_names, args))
    bound.update({k: v for k, v in kwargs.items() if k not in _LAUNCH_OPTIONS})
    missing = [n for n in fn.arg_names if n not in bound]
    if missing:
        raise TypeError(f"{fn.__name__}: launch is missing arguments {missing}")
    const_idx = {p.num for p in fn.params if p.is_constexpr}
    signature, constexprs = [], []
    for i, name in enumerate(fn.arg_names):
        v = bound[name]
        if i in const_idx or v is None:
            constexprs.append((name, v))
        elif isinstance(v, torch.Tensor):
            signature.append((name, str(v.dtype).replace("torch.", "")))
        elif isinstance(v, (bool, int, float)):
            signature.append((name, type(v).__name__))
        else:
            raise TypeError(
                f"{fn.__name__}: argument {name} is a {type(v).__name__}; expected a tensor, int, float or None"
            )
    grid = tuple(grid(bound) if callable(grid) else grid)
    options = tuple((k, kwargs[k]) for k in _LAUNCH_OPTIONS if k in kwargs)
    return Launch(fn, tuple(signature), tuple(constexprs), options, grid)


def record_of(launch: Launch, arch: int, sass: bool = False) -> Compiled:
    """The resource usage and memory instructions of a launch's compiled binary for ``sm_<arch>``;
    ``sass``: also from its SASS (about 0.2 s more per binary)."""
    compiled = launch.compiled
    usage = resource_usage(compiled.asm["cubin"])
    warps = compiled.metadata.num_warps
    regs = usage["REG"]
    return Compiled(
        kernel=launch.name,
        arch=arch,
        constexprs={k: v for k, v in launch.constexprs if v is not None},
        num_warps=warps,
        registers=regs,
        spill_bytes=usage["LOCAL"],
        shared_bytes=int(compiled.metadata.shared),
        max_shared_bytes=MAX_SHARED.get(arch),
        blocks_per_sm_by_regs=REGS_PER_SM // max(1, regs * 32 * warps),
        seconds=round(launch.seconds, 3),
        fp_fusion=dict(launch.options).get("enable_fp_fusion"),
        memory=memory_instructions(compiled.asm["ptx"]),
        memory_sass=sass_memory_instructions(compiled.asm["cubin"]) if sass else None,
        tensor_cores=tensor_core_instructions(compiled.asm["ptx"]),
    )


def _cuobjdump(cubin: bytes, flag: str) -> str:
    """What ``cuobjdump flag`` (shipped in Triton's NVIDIA backend) prints for a cubin.
    ``TRITON_CUOBJDUMP_PATH``, Triton's own variable for it, names another: CUDA 13's cannot read
    what CUDA 12.2's ptxas builds for sm_90a ("does not contain device code"), and
    tools/triton_ptxas.sh builds with such older ptxas."""
    import triton

    tool = Path(
        os.environ.get("TRITON_CUOBJDUMP_PATH")
        or Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    )
    if not tool.is_file():
        raise FileNotFoundError(f"cuobjdump not found at {tool}; it ships in Triton's NVIDIA backend")
    with tempfile.TemporaryDirectory(prefix="edgefuse-aot.") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([str(tool), flag, str(path)], capture_output=True, text=True, check=True).stdout


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, LOCAL (spill bytes per thread), SHARED... of a one-kernel cubin, via cuobjdump."""
    out = _cuobjdump(cubin, "-res-usage")
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    if "REG" not in fields:
        raise ValueError(f"cuobjdump printed no resource usage:\n{out}")
    return {k: int(v) for k, v in fields.items()}


#: a PTX instruction's opcode, after an optional guard predicate (@%p1, @!%p2)
_OPCODE = re.compile(r"^\s*(?:@!?%\w+\s+)?([a-z][\w.:]*)(.*)$", re.M)


def _bits(opcode: str, operands: str) -> str:
    """Bits one load or store moves per thread: ld.global.v4.b32 -> 128, st.global.b8 -> 8;
    an asynchronous copy's size is its third operand, in bytes (cp.async... [dst], [src], 0x10)."""
    if opcode.startswith("cp.async"):
        size = operands.split(",")[2].strip().rstrip(";").strip()  # a fourth operand (source size) may follow
        return str(8 * int(size, 0))
    vector = re.search(r"\.v(\d)\b", opcode)
    width = re.search(r"\.[bfus](\d+)$", opcode)
    return str((int(vector.group(1)) if vector else 1) * (int(width.group(1)) if width else 32))


def _tally(kinds) -> dict:
    """``memory_instructions``' record from ``(kind, bits)`` pairs: kind "load" or "store" with
    their width in bits, or "shared", "barriers", "atomics"."""
    loads: collections.Counter[str] = collections.Counter()
    stores: collections.Counter[str] = collections.Counter()
    out = {"shared": 0, "barriers": 0, "atomics": 0}
    for kind, bits in kinds:
        if kind == "load":
            loads[bits] += 1
        elif kind == "store":
            stores[bits] += 1
        else:
            out[kind] += 1
    return {"global_loads": dict(sorted(loads.items())), "global_stores": dict(sorted(stores.items())), **out}


def memory_instructions(ptx: str) -> dict:
    """The memory instructions of a kernel's PTX (Triton's ``asm["ptx"]``), by kind.

    ``global_loads`` / ``global_stores``: {bits per thread: instructions} of loads from global
    memory (``ld.global``, and ``cp.async``, the asynchronous copies to shared memory) and
    stores to it (``st.global``); ``shared``: loads and stores between registers and shared
    memory (``ld.shared``, ``st.shared``, ``ldmatrix``, ``stmatrix``); ``barriers``: block-wide
    barriers (``bar.*``, ``barrier.*``); ``atomics``: ``atom`` and ``red``. These are
    instructions in the code, not executions (a loop body counts once). ptxas may unroll
    loops, merge shared-memory accesses and drop barriers it does not need, so the binary's
    counts can differ; the widths used, zero barriers or shared accesses, and the atomics
    agree (``sass_disagreements``; ``check(sass=True)`` compares every binary, at about 0.2 s
    each: docs/kernels.md). A reduction whose values all lie in one warp needs no shared memory and no barrier;
    one across warps needs both."""
    instructions = _OPCODE.findall(ptx)
    if not instructions:
        raise ValueError(f"no PTX instructions found in:\n{ptx[:2000]}")

    def kind(op: str, operands: str):
        if op.startswith("ld.global") or (op.startswith("cp.async.") and ".shared.global" in op):
            return "load", _bits(op, operands)
        if op.startswith("st.global"):
            return "store", _bits(op, operands)
        if op.startswith(("ld.shared", "st.shared", "ldmatrix", "stmatrix")):
            return "shared", None
        if op.startswith(("bar.", "barrier.")):
            return "barriers", None
        if op.startswith(("atom.", "red.")):
            return "atomics", None
        return None, None

    return _tally(k for k in (kind(op, operands) for op, operands in instructions) if k[0])


#: the tensor-core instruction families, oldest first: Ampere's warp-level MMA (also Ada,
#: Orin, and Hopper/Blackwell for tiles under 64 rows), Hopper's warpgroup MMA,
#: Blackwell's tensor-memory MMA
_TENSOR_CORE_FAMILIES = {"mma.sync": "mma", "wgmma.mma_async": "wgmma", "tcgen05.mma": "tcgen05"}
#: the input types a tensor-core instruction names (its accumulator is f32 in every edgefuse kernel)
_TENSOR_CORE_TYPES = ("f16", "bf16", "tf32", "e4m3", "e5m2", "s8", "u8")


def tensor_core_instructions(ptx: str) -> dict[str, int]:
    """The tensor-core instructions of a kernel's PTX: {"<family> <shape> <input type>": count},
    e.g. ``wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16`` -> "wgmma m64n64k16 f16",
    ``mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32`` -> "mma m16n8k16 f16",
    ``tcgen05.mma.cta_group::1.kind::f16`` -> "tcgen05 - f16" (its shape is in a descriptor).
    Empty for a dot Triton lowers to FMAs (fp32 with ``input_precision="ieee"``)."""
    out: collections.Counter[str] = collections.Counter()
    for op, _ in _OPCODE.findall(ptx):
        family = next((name for prefix, name in _TENSOR_CORE_FAMILIES.items() if op.startswith(prefix + ".")), None)
        if family is None or (family == "tcgen05" and ".kind::" not in op):
            continue
        parts = re.split(r"\.|::", op)
        shape = next((p for p in parts if re.fullmatch(r"m\d+n\d+k\d+", p)), "-")
        kind = next((p for p in parts if p in _TENSOR_CORE_TYPES), "?")
        out[f"{family} {shape} {kind}"] += 1
    return dict(sorted(out.items()))


#: a SASS instruction's opcode, after its address and an optional predicate (@P0, @!UP1, @PT)
_SASS_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)")
#: SASS opcode -> memory_instructions' kind
_SASS_KINDS = {
    "LDG": "load",
    "LDGSTS": "load",
    "STG": "store",
    "LDS": "shared",
    "STS": "shared",
    "LDSM": "shared",
    "STSM": "shared",
    "BAR": "barriers",
    "ATOMG": "atomics",
    "ATOM": "atomics",
    "RED": "atomics",
    "REDG": "atomics",
}
#: a SASS load's or store's width from its modifiers (none of these: 32 bits)
_SASS_BITS = (("128", {"128"}), ("64", {"64"}), ("16", {"U16", "S16"}), ("8", {"U8", "S8"}))


def sass_memory_instructions(cubin: bytes) -> dict:
    """``memory_instructions``' counts, read from the binary's SASS (``cuobjdump -sass``)."""
    opcodes = _SASS_OPCODE.findall(_cuobjdump(cubin, "-sass"))
    if not opcodes:
        raise ValueError("cuobjdump printed no SASS")

    def kind(op: str):
        head, *mods = op.split(".")
        k = _SASS_KINDS.get(head)
        if k in ("load", "store"):
            return k, next((bits for bits, names in _SASS_BITS if names.intersection(mods)), "32")
        return k, None

    return _tally(k for k in map(kind, opcodes) if k[0])


def sass_disagreements(ptx: dict, sass: dict) -> list[str]:
    """Where the binary contradicts what ``memory_instructions`` read from the PTX. ptxas may
    unroll loops, merge shared-memory accesses and drop barriers it proves unneeded, so counts
    differ; what must hold is the access widths used, zero barriers or shared accesses staying
    zero, and the atomics."""
    out = []
    for key in ("global_loads", "global_stores"):
        if set(ptx[key]) != set(sass[key]):
            out.append(f"{key} widths {sorted(ptx[key])} in the PTX, {sorted(sass[key])} in the binary")
    for key in ("barriers", "shared"):
        if ptx[key] == 0 and sass[key]:
            out.append(f"no {key} in the PTX, {sass[key]} in the binary")
    if ptx["atomics"] != sass["atomics"]:
        out.append(f"{ptx['atomics']} atomics in the PTX, {sass['atomics']} in the binary")
    return out


def kernels_in(*modules) -> dict[str, object]:
    """The Triton kernels defined in ``modules``, by name: JIT functions, or interpreted ones
    where ``TRITON_INTERPRET=1`` was set when they were decorated."""
    import triton.runtime.jit as jit
    from triton.runtime.interpreter import InterpretedFunction

    return {
        name: fn
        for mod in modules
        for name, fn in vars(mod).items()
        if isinstance(fn, (jit.JITFunction, InterpretedFunction))
    }


def our_kernels() -> dict[str, object]:
    """Every Triton kernel of edgefuse.kernels, by name."""
    from edgefuse.kernels import triton_bilinear, triton_gated, triton_probe, triton_projection

    return kernels_in(triton_projection, triton_bilinear, triton_gated, triton_probe)


def _per_device(fn) -> dict:
    """A JIT function's per-device state: ``device_caches`` from Triton 3.3 (device -> a tuple
    whose first item is the kernel cache), ``cache`` in 3.0-3.2 (device -> the kernel cache)."""
    return fn.device_caches if hasattr(fn, "device_caches") else fn.cache


def _kernel_cache(fn, device: int = 0) -> dict:
    """A JIT function's compiled kernels for ``device``."""
    state = _per_device(fn)[device]
    return state[0] if hasattr(fn, "device_caches") else state


def binary_counts() -> dict[str, int]:
    """How many binaries each of edgefuse's kernels has compiled for device 0 (those with none
    are left out). Under ``stand_in_gpu``: the ones its JIT built for the stand-in."""
    return {name: n for name, fn in our_kernels().items() if (n := len(_kernel_cache(fn)))}


@contextlib.contextmanager
def stand_in_gpu(arch: int = 90, record: list | None = None) -> Iterator[collections.Counter[str]]:
    """Triton's launch path runs for real on CPU tensors, up to the CUDA driver call.

    A stand-in active driver reports device 0, stream 0 and an ``sm_<arch>`` target, so the
    JIT compiles each kernel for that target (Triton's compiler and the ptxas in its wheel; no
    GPU needed) and caches it. Loading a compiled kernel onto a GPU is replaced by handing it
    a no-op launcher, so nothing runs: what this serves is the AOT check (``check``),
    Triton's host path (bench/bench_launch_overhead.py) and counting the binaries its JIT
    compiles (``jit_binaries``). The block gets a ``Counter`` of the launches that reached
    that launcher, by kernel name: the calls that went through Triton's whole launch path to
    where the CUDA driver would be called; ``record``, if given, gets ``(compiled kernel,
    launcher arguments)`` for each (grid, stream, function, metadata, hooks, kernel
    arguments). On leaving, edgefuse's kernels get their own device-0 caches back, and
    ``kernels/_launch``'s cache is emptied, so no no-op binary outlives the block. Relies on
    Triton internals: the driver config's attributes, ``CompiledKernel._init_handles`` and
    ``run``, and the JIT's per-device caches (``device_caches`` from 3.3, ``cache`` in
    3.0-3.2). tools/triton_versions.sh checks it on every release from 3.0.0 to 3.9.0.
    """
    if _interpreting():
        raise RuntimeError("tools.aot: unset TRITON_INTERPRET (the interpreter has no compiled launch path)")
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import CompiledKernel
    from triton.runtime import driver

    from edgefuse.kernels import _launch

    class StandIn:
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def is_active(self):
            return True

    launches: collections.Counter[str] = collections.Counter()
    run_is_property = isinstance(getattr(CompiledKernel, "run", None), property)  # from 3.5; an attribute before

    loaded = []  # kernels given a stand-in module: Triton would unload it from the real GPU when freed

    def no_gpu_load(self):
        if self.module is None:
            self.module, self.function = object(), 0
            loaded.append(self)
            name = getattr(self, "name", "?")

            def launch(*args):  # where the CUDA driver's launch would be
                launches[name] += 1
                if record is not None:
                    record.append((self, args))

            if run_is_property:
                self._run = launch
            else:
                self.run = launch

    kernels = list(our_kernels().values())
    per_device = [_per_device(fn) for fn in kernels]
    saved = [caches.pop(0, None) for caches in per_device]
    driver_state, init_handles = dict(vars(driver)), CompiledKernel._init_handles
    driver.set_active(StandIn())
    CompiledKernel._init_handles = no_gpu_load
    _launch.clear()  # nothing compiled for the real GPU is launched on the stand-in, and back
    try:
        yield launches
    finally:
        vars(driver).update(driver_state)
        CompiledKernel._init_handles = init_handles
        _launch.clear()
        for kernel in loaded:
            kernel.module = None
        for caches, cache in zip(per_device, saved):
            caches.pop(0, None)
            if cache is not None:
                caches[0] = cache


def jit_binaries(calls: list[Callable[[], object]], arch: int = 90) -> dict[str, int]:
    """Run ``calls`` through Triton's real JIT on a stand-in ``sm_<arch>`` GPU (see
    ``stand_in_gpu``): how many binaries each of edgefuse's kernels needed. Triton's own
    specialisation rules decide (constexprs, integer arguments equal to 1 or divisible by 16,
    pointer alignment), so this is how many compiles these calls would cost on a GPU."""
    with stand_in_gpu(arch):
        for call in calls:
            call()
        return binary_counts()


# -- the shapes to check: issue 3's benchmark grid, in the bench's fp16 and the models' fp32 ----

BATCHES = (1, 8, 32, 256, 4096)
DIMS = (256, 1024)
KS = (2048, 1024, 128)


#: fp32 is also compiled with TF32 allowed (``triton_projection.dot_precision``) at these batches
TF32_BATCHES = (8, 4096)


@contextlib.contextmanager
def fp32_matmul_precision(precision: str) -> Iterator[None]:
    """Within the block, ``torch.set_float32_matmul_precision(precision)``; restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def cases(dtype: torch.dtype) -> Iterator[tuple[str, Callable[[], object]]]:
    """(label, a call of a launcher) for every op at the benchmark shapes; for fp32, the GEMM
    ops at TF32_BATCHES once more with TF32 allowed (label ending " tf32")."""
    from edgefuse.kernels.triton_bilinear import bilinear_triton, mfb_triton
    from edgefuse.kernels.triton_gated import gated_fusion_backward_triton, gated_fusion_triton
    from edgefuse.kernels.triton_projection import fused_projection_triton

    def t(*shape, dt=dtype):
        return torch.empty(shape, dtype=dt)

    def gemm(label: str, b: int, call: Callable[[], object]):
        yield label, call
        if dtype == torch.float32 and b in TF32_BATCHES:

            def tf32():
                with fp32_matmul_precision("high"):
                    return call()

            yield f"{label} tf32", tf32

    tag = str(dtype).replace("torch.", "")
    for d in DIMS:
        ws, bias = [t(d, k) for k in KS], t(len(KS), d)
        for b in BATCHES:
            xs = [t(b, k) for k in KS]
            for normalize in (True, False):
                yield from gemm(
                    f"fused_projection {tag} B={b} D={d} l2={normalize}",
                    b,
                    lambda xs=xs, ws=ws, bias=bias, n=normalize: fused_projection_triton(xs, ws, bias, "relu", n),
                )
            if b >= 256:  # training batches: ProjectionFunction's launch (pre-activations: no act, no norm)
                yield from gemm(
                    f"fused_projection {tag} B={b} D={d} pre-activation",
                    b,
                    lambda xs=xs, ws=ws, bias=bias: fused_projection_triton(xs, ws, bias, "none", False),
                )
            mask = torch.ones(b, len(KS), dtype=torch.bool)
            for per_feature in (True, False):
                logits = t(b, len(KS), d) if per_feature else t(b, len(KS))
                for mode in ("softmax", "sigmoid"):
                    yield (
                        f"gated_fusion {tag} B={b} D={d} per_feature={per_feature} {mode}",
                        lambda f=t(b, len(KS), d), lg=logits, m=mask, mode=mode: gated_fusion_triton(f, lg, m, mode),
                    )
                    yield (
                        f"gated_fusion backward {tag} B={b} D={d} per_feature={per_feature} {mode}",
                        lambda f=t(b, len(KS), d), lg=logits, m=mask, g=t(b, d), mode=mode: (
                            gated_fusion_backward_triton(f, lg, m, g, mode)
                        ),
                    )
            o, factors = 256, 4
            u, v, ub, vb = t(o * factors, d), t(o * factors, d), t(o * factors), t(o * factors)
            yield from gemm(
                f"mfb {tag} B={b} D={d}",
                b,
                lambda x=t(b, d), y=t(b, d), u=u, v=v, ub=ub, vb=vb: mfb_triton(x, y, u, ub, v, vb, factors),
            )
    w, bb = t(64, 256, 256), t(64)
    for b in BATCHES:
        yield from gemm(f"bilinear {tag} B={b} D=256", b, lambda x=t(b, 256), y=t(b, 256): bilinear_triton(x, y, w, bb))


def check(
    archs=(90, 87),
    dtypes=(torch.float16, torch.float32),
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    sass: bool = False,
    source: Callable[[torch.dtype], Iterator[tuple[str, Callable[[], object]]]] = cases,
) -> list[Compiled]:
    """Compile every launch of ``source`` (the benchmark's ``cases``, or another such generator) for each arch with
    Triton's JIT on a stand-in GPU; one record per distinct binary (Triton's cache decides what is distinct).
    ``sass``: count each binary's memory instructions from its SASS too (``problems`` then compares).

    ``shard=(k, n)`` compiles only the launches whose ``Launch.key()`` is the k-th, (k+n)-th...
    to appear (n processes, one per core, each run with its own k, cover them all: every
    process enumerates the same cases in the same order)."""
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    order: dict[tuple, int] = {}

    def mine(launch: Launch) -> bool:
        return order.setdefault(launch.key(), len(order)) % n == k

    out = []
    for arch in archs:
        records: dict[int, Compiled] = {}  # by CompiledKernel (Triton's cache returns one per binary)
        with stand_in_gpu(arch):
            for dtype in dtypes:
                for label, call in source(dtype):
                    with capture(compile_if=mine) as launches:
                        call()
                    if not launches:
                        raise RuntimeError(f"{label}: the launcher made no kernel launch")
                    for launch in launches:
                        if launch.compiled is None:
                            continue
                        rec = records.get(id(launch.compiled))
                        if rec is None:
                            rec = records[id(launch.compiled)] = record_of(launch, arch, sass)
                            out.append(rec)
                            if progress:
                                print(f"[{len(records)}] sm_{arch} {_row(rec)}", file=sys.stderr, flush=True)
                        rec.cases.append(label)
    return out


#: kernels bound by memory bandwidth whose every reduction runs inside one warp, by name: for
#: which launches (a test of their constexprs). Gated fusion's reductions over the modalities
#: (triton_gated._blocks), for up to four modalities: with more, _blocks may spread them over
#: warps to bound each thread's registers. Not the per-modality backward, which sums over D
#: across warps. A reduction across warps goes through shared memory with a barrier each time
#: (10 barriers in Triton 3.0's fp16 forward at D = 1024 over 8 warps, 25 in 3.9's:
#: tools/gated_layouts.py). One barrier is allowed: Triton 3.2 to 3.4 move a tiny tile's
#: output (D = 16, one warp) to the store's layout through shared memory. Triton 3.0 and 3.1 do
#: so for every tile, whatever the warps (one warp included), in as many pieces as the store's
#: width needs: 1 barrier where D is a multiple of 16 (128-bit stores), 7 to 63 at D = 1100
#: (32-bit stores). There barriers do not tell a reduction across warps, so the check applies
#: from WARP_LOCAL_SINCE.
WARP_LOCAL: dict[str, Callable[[dict], bool]] = {
    "_gated_kernel": lambda c: c["BLOCK_N"] <= 4,
    "_gated_bwd_kernel": lambda c: c["PER_FEATURE"] and c["BLOCK_N"] <= 4,
}
WARP_LOCAL_BARRIERS = 1
WARP_LOCAL_SINCE = (3, 2)

#: the tensor-core family a GEMM-shaped tile must run on, by architecture, and the first Triton
#: release that emits it there: Hopper's warpgroup MMA (sm_90) and Blackwell's tensor-memory
#: MMA (sm_100, sm_110: Jetson Thor). Each works on 64-row tiles per warpgroup with its
#: operands in shared memory; the warp-level ``mma.sync`` that Triton falls back to on these
#: chips (and uses on Ampere/Ada/Orin/RTX 50) does 16 rows per warp from registers and cannot
#: reach the chip's full tensor throughput. Triton 3.5 and 3.6, which compile for Jetson Thor
#: only with CUDA 13's ptxas, emit ``mma.sync`` there whatever the tile
#: (bench/results/aot/gemm_layouts-float16-sm_110-triton-3.6.0.json): a limit of those
#: releases, not of a launch, so not flagged.
#: A tile is GEMM-shaped when it is triton_projection.GEMM_ROWS (64) rows tall or more, over
#: whole warpgroups (num_warps % 4 == 0).
GEMM_MMA = {90: ("wgmma", (3, 0)), 100: ("tcgen05", (3, 3)), 110: ("tcgen05", (3, 7))}


def problems(records: list[Compiled]) -> list[str]:
    """What would fail or run badly on the target, or differ by Triton version: shared memory
    over the limit, spills, FMA contraction left to Triton's default (on in 3.9, which warns
    about it; off from 3.10); a GEMM-shaped tensor-core tile that does not use the target's
    GEMM_MMA family; a WARP_LOCAL kernel that reduces across warps; and, where
    counted, SASS that contradicts the PTX's memory counts."""
    import triton

    from edgefuse._releases import major_minor
    from edgefuse.kernels.triton_projection import GEMM_ROWS

    release = major_minor(triton.__version__) or (99, 0)  # a source build: hold it to the newest rules
    out = []
    for r in records:
        family, since = GEMM_MMA.get(r.arch, (None, None))
        if (
            family
            and release >= since
            and r.constexprs.get("PRECISION", "ieee") != "ieee"
            and r.constexprs.get("BLOCK_M", 0) >= GEMM_ROWS
            and r.num_warps % 4 == 0
            and not any(k.startswith(family + " ") for k in r.tensor_cores)
        ):
            out.append(
                f"{r.kernel} sm_{r.arch} {r.constexprs} num_warps={r.num_warps}: a GEMM-shaped tile without {family} "
                f"(tensor-core instructions: {r.tensor_cores or 'none'})"
            )
        local = WARP_LOCAL.get(r.kernel)
        if (
            local is not None
            and release >= WARP_LOCAL_SINCE
            and local(r.constexprs)
            and r.memory["barriers"] > WARP_LOCAL_BARRIERS
        ):
            out.append(
                f"{r.kernel} sm_{r.arch} {r.constexprs} num_warps={r.num_warps}: reduces across warps "
                f"({r.memory['shared']} shared-memory accesses, {r.memory['barriers']} barriers)"
            )
        if r.memory_sass is not None:
            out += [f"{r.kernel} sm_{r.arch} {r.constexprs}: {d}" for d in sass_disagreements(r.memory, r.memory_sass)]
        if r.max_shared_bytes is not None and r.shared_bytes > r.max_shared_bytes:
            out.append(
                f"{r.kernel} sm_{r.arch} {r.constexprs}: {r.shared_bytes} B shared > the {r.max_shared_bytes} B limit"
            )
        if r.spill_bytes:
            out.append(f"{r.kernel} sm_{r.arch} {r.constexprs}: spills {r.spill_bytes} B per thread to local memory")
        if r.fp_fusion is None:
            out.append(
                f"{r.kernel} sm_{r.arch} {r.constexprs}: launched without enable_fp_fusion (Triton's default differs "
                "by version)"
            )
    return out


def _row(r: Compiled) -> str:
    blocks = {k: v for k, v in r.constexprs.items() if k.startswith("BLOCK")}
    mma = f" mma={','.join(r.tensor_cores)}" if r.tensor_cores else ""
    return (
        f"{r.kernel:<26} warps={r.num_warps} {blocks} regs={r.registers} spill={r.spill_bytes} "
        f"shared={r.shared_bytes} barriers={r.memory.get('barriers')}{mma} ({r.seconds:.1f} s)"
    )


def selfcheck_cases(dtype: torch.dtype) -> Iterator[tuple[str, Callable[[], object]]]:
    """(label, call) for every launch ``edgefuse kernels --check`` makes on a GPU by default, on CPU
    tensors (``--cases selfcheck``)."""
    from edgefuse.kernels.selfcheck import _cases, _shapes, _short

    for op, label, dt, _, run, _ in _cases("cpu", *_shapes("cuda", None, None, None), (dtype,)):
        yield f"{op} {_short(dt)} {label}", run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compile edgefuse's Triton kernels for GPU architectures without a GPU.")
    p.add_argument(
        "--arch",
        type=int,
        action="append",
        help="compute capability as an integer, e.g. 90 (H100/H200), 87 (Jetson Orin), 110 (Jetson Thor; Triton >= "
        "3.7); repeatable",
    )
    p.add_argument(
        "--dtype",
        action="append",
        choices=["float16", "float32", "bfloat16"],
        help="repeatable; default float16 and float32",
    )
    p.add_argument(
        "--cases",
        choices=["bench", "selfcheck"],
        default="bench",
        help="bench: the benchmark's shapes (default); selfcheck: every launch of `edgefuse kernels --check` "
        "at its GPU defaults",
    )
    p.add_argument("--json", type=Path, help="write every record here")
    p.add_argument("--shard", default="0/1", help="K/N: compile the K-th of N slices (run N processes to use N cores)")
    p.add_argument(
        "--sass",
        action="store_true",
        help="also count memory instructions from each binary's SASS and report "
        "where it contradicts the PTX's counts (about 0.2 s more per binary)",
    )
    args = p.parse_args(argv)
    try:
        shard = tuple(int(x) for x in args.shard.split("/"))
        assert len(shard) == 2
    except (ValueError, AssertionError):
        p.error(f"--shard expects K/N, e.g. 0/2; got {args.shard!r}")
    archs = args.arch or [90, 87]
    dtypes = [getattr(torch, d) for d in (args.dtype or ["float16", "float32"])]
    import triton

    start = time.perf_counter()
    if args.cases == "selfcheck":
        source = selfcheck_cases
    else:
        source = cases
    records = check(archs, dtypes, progress=True, shard=shard, sass=args.sass, source=source)
    found = problems(records)
    if args.json:
        doc = {
            "triton": triton.__version__,
            "cases": args.cases,
            "archs": archs,
            "shard": args.shard,
            "sass": args.sass,
            "seconds": round(time.perf_counter() - start, 1),
            "problems": found,
            "binaries": [asdict(r) for r in records],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    print(
        f"compiled {len(records)} binaries for sm_{', sm_'.join(map(str, archs))} with Triton {triton.__version__} "
        f"in {time.perf_counter() - start:.0f} s; {len(found)} problem(s)"
    )
    for line in found:
        print("  " + line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
