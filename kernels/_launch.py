"""Launching a compiled kernel again without Triton's JIT dispatch: the edge-batch host path.

At edge batches (1-32 rows) a fused op's latency is host time, and most of it was Triton's
``JITFunction.run``: it binds and specialises every argument, builds a cache key, reads its
knobs and checks the kernel's globals on every launch: for fused_projection's two launches
(31 and 8 arguments) about 11 us more per call than ``launch`` on the development VM
(bench/bench_launch_overhead.py). ``launch`` does that once per distinct call and then keeps
the compiled kernel under a key of its own:

* the current device (Triton keeps one compiled kernel per device, loaded on it);
* the constexpr values and launch options, by name;
* per argument: an int's value, a tensor's dtype and the low 4 bits of its address.

Triton specialises on less than that (an int's divisibility by 16 and equality to 1, its
32/64-bit range; a pointer's 16-byte alignment; the dtype), so two calls with one key always
get the same binary from Triton too, and a new key is a Triton call that finds its binary in
Triton's cache (no compile). A hit launches through ``CompiledKernel[grid]`` with the
arguments Triton's run would pass: the runtime ones, and from Triton 3.3 the constexprs
after them. tests/kernels/test_launch.py checks, on a stand-in GPU, that a hit reaches the
CUDA driver's launch with the same binary and the same arguments as Triton's own path, over
the launches of all three ops; tools/triton_versions.sh runs it on every release from 3.0.

What a hit skips that Triton's run does: its pre-run hooks (edgefuse registers none), the
check that the kernel's global variables have not changed since the compile (edgefuse's
kernels read none), and re-reading the debug and instrumentation knobs (``TRITON_DEBUG``
set after the first launch of a shape is not seen).

Used for Triton releases this was checked on (``CHECKED``); a later one (whose internals may
have changed) and the interpreter go through Triton's own ``kernel[grid](...)``.
"""

from __future__ import annotations

import triton
from triton.runtime import driver
from triton.runtime.jit import JITFunction

from edgefuse._releases import major_minor

#: Triton releases whose launch path tests/kernels/test_launch.py has matched (the first
#: and last checked); tools/triton_versions.sh runs it on each.
CHECKED = ((3, 0), (3, 9))
#: from Triton 3.3 the compiled kernel's launcher takes every argument, constexprs included
_PASS_CONSTEXPRS = (major_minor(triton.__version__) or (0, 0)) >= (3, 3)


def checked(version: str) -> bool:
    """Whether ``launch`` was checked on this Triton release (a source build's "main": no)."""
    release = major_minor(version)
    return release is not None and CHECKED[0] <= release <= CHECKED[1]


#: (id(kernel), device, constexprs and options, argument key) -> (compiled kernel, constexpr values
#: in signature order, or () before 3.3). aot.stand_in_gpu empties it on entry and exit, so
#: a stand-in binary (whose launch is a no-op) never outlives the stand-in, and aot.capture
#: on entry, so every launch comes through the JIT it records.
_CACHE: dict = {}
#: entries kept at most: every batch size, sensor subset and dtype is an entry (a few hundred
#: bytes); a long run through ever new shapes empties it rather than grow without bound
MAX_ENTRIES = 4096
enabled = checked(triton.__version__)


def launch(kernel, grid: tuple, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, faster after the first call with the same key.

    ``grid``: a tuple of 1-3 ints; ``args``: every runtime parameter, positionally, in
    signature order (ints and tensors); ``kwargs``: the constexprs and launch options
    (``num_warps``, ``num_stages``, ...). A call of another form still launches, through
    Triton's path each time.
    """
    if not enabled or type(kernel) is not JITFunction:  # the interpreter, an unchecked Triton
        kernel[grid](*args, **kwargs)
        return
    active = driver.active
    device = active.get_current_device()
    try:
        spec = _spec(args)
    except AttributeError:  # neither an int nor a tensor: no key of ours, Triton's path
        kernel[grid](*args, **kwargs)
        return
    key = (id(kernel), device, tuple(kwargs.items()), spec)  # (a JITFunction hashes slowly)
    hit = _CACHE.get(key)
    if hit is None:
        compiled = kernel[grid](*args, **kwargs)  # Triton's own path: binds, compiles or finds, launches
        params = kernel.params
        # kept only when the call is what the hit path assumes: every runtime parameter
        # positional, the constexprs after them and all passed by name
        if (
            compiled is not None
            and len(args) == sum(not p.is_constexpr for p in params)
            and all(p.is_constexpr == (p.num >= len(args)) for p in params)
            and all(p.name in kwargs for p in params if p.is_constexpr)
        ):
            if len(_CACHE) >= MAX_ENTRIES:
                _CACHE.clear()
            _CACHE[key] = (
                compiled,
                tuple(kwargs[p.name] for p in params if p.is_constexpr) if _PASS_CONSTEXPRS else (),
            )
        return
    compiled, consts = hit
    if len(grid) < 3:  # the compiled kernel's launcher reads three grid dimensions
        grid = (*grid, 1, 1)[:3]
    compiled[grid](*args, *consts, stream=active.get_current_stream(device))


def _spec(args) -> tuple:
    """The arguments' part of the key: an int's value; a tensor's dtype and address mod 16."""
    spec = []
    for a in args:
        if type(a) is int:
            spec.append(a)
        else:
            spec.append(a.dtype)
            spec.append(a.data_ptr() & 15)
    return tuple(spec)


def clear() -> None:
    """Forget every compiled kernel ``launch`` keeps (Triton keeps its own)."""
    _CACHE.clear()
