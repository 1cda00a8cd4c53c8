"""Memory checks for Triton's CPU interpreter, which has none (on a GPU, compute-sanitizer has them).

The interpreter loads and stores at whatever address a kernel computes, and runs a launch's
programs one after another. So a dropped mask reads or writes a neighbour's bytes, and two
programs that write the same element (or one that reads what another wrote) give the result
of that one order, and the test may still pass, where a GPU faults with an illegal address,
returns garbage, or races. Within ``guard()``, for every lane that a load or store keeps (mask
true):

- it must lie inside one tensor argument of that launch (the span of its elements, not its
  whole storage), else ``OutOfBounds`` (``compute-sanitizer --tool memcheck``);
- it must not have been stored by another program of the same launch, else ``Race``
  (``--tool racecheck``, across programs rather than within one).

And two gaps of the interpreter's ``tl.dot`` fail too (``BadDot``): operands under 16 in M, N
or K, which the GPU compiler rejects and the interpreter multiplies; and bfloat16 operands,
which it multiplies as their raw 16-bit integers (garbage).

The error names the kernel, the program, the access and the argument, and is raised before the
access is made. It patches the interpreter's builder (``create_masked_load`` and
``create_masked_store``, which every plain ``tl.load``/``tl.store`` goes through) and
``GridExecutor`` (where a launch's tensors are known), which exist with these argument orders in
Triton 3.0 to 3.9. ``tests/conftest.py`` turns it on for the whole run when kernels are
interpreted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np


class OutOfBounds(AssertionError):
    """A kernel loaded or stored outside every tensor its launch was given."""


class Race(AssertionError):
    """Two programs of one launch stored the same element, or one loaded what another stored."""


class BadDot(AssertionError):
    """A tl.dot the GPU compiler would reject, or one the interpreter computes wrongly."""


#: tl.dot's smallest M, N and K on the GPU (kernels/triton_projection.py's DOT_MIN)
DOT_MIN = 16


@dataclass
class _Launch:
    kernel: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (argument, first byte, end byte)
    writer: dict[int, tuple] = field(default_factory=dict)  # address -> the program that stored it

    def argument(self, first: int, end: int) -> tuple[str, int, int]:
        """The argument whose span is nearest to [first, end) (the one containing it, if any)."""

        def distance(span):
            _, lo, hi = span
            return max(lo - first, 0) + max(end - hi, 0)

        return min(self.spans, key=distance) if self.spans else ("(no tensor)", 0, 0)


#: the launches running now, innermost last
_LAUNCHES: list[_Launch] = []


def _span(t) -> tuple[int, int]:
    """[first byte, end byte) of ``t``'s elements (empty for an empty tensor)."""
    t = getattr(t, "base", t)  # triton's TensorWrapper (a reinterpreted dtype) wraps a tensor
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    lo = hi = 0
    for size, stride in zip(t.shape, t.stride()):
        (lo, hi) = (lo + (size - 1) * stride, hi) if stride < 0 else (lo, hi + (size - 1) * stride)
    item = t.element_size()
    return t.data_ptr() + lo * item, t.data_ptr() + (hi + 1) * item


def _spans(names, args, kwargs) -> list[tuple[str, int, int]]:
    named = list(zip(names, args)) + list(kwargs.items())
    return [(name, *_span(a)) for name, a in named if hasattr(a, "data_ptr")]


def _check(op: str, ptrs, mask, itemsize: int) -> None:
    if not _LAUNCHES:
        return
    launch = _LAUNCHES[-1]
    addrs = np.asarray(ptrs.data).astype(np.uint64, copy=False)
    kept = addrs[np.broadcast_to(np.asarray(mask.data, dtype=bool), addrs.shape)]
    if kept.size == 0:
        return
    from triton.runtime.interpreter import interpreter_builder

    program = tuple(getattr(interpreter_builder, "grid_idx", ()) or ())
    first, end = int(kept.min()), int(kept.max()) + itemsize
    name, lo, hi = launch.argument(first, end)
    if not lo <= first or not end <= hi:
        outside = int(np.count_nonzero((kept < lo) | (kept + itemsize > hi)))
        raise OutOfBounds(
            f"{launch.kernel}, program {program}: a {op} of {kept.size} masked-in lanes spans bytes "
            f"[{first - lo:+d}, {end - lo:+d}) of argument {name!r} ({hi - lo} bytes); {outside} lanes "
            "fall outside it and outside every other tensor argument"
        )
    writer = launch.writer
    if op == "load" and not writer:
        return
    lanes = kept.tolist()
    if writer:
        others = [(a, writer[a]) for a in lanes if writer.get(a, program) != program]
        if others:
            address, other = others[0]
            raise Race(
                f"{launch.kernel}, program {program}: a {op} of {kept.size} masked-in lanes reaches "
                f"{len(others)} elements of argument {name!r} that program {other} of the same launch "
                f"stored (the first at byte {address - lo:+d}); on a GPU the programs run in no set order"
            )
    if op == "store":
        writer.update(dict.fromkeys(lanes, program))


def _check_dot(a, b) -> None:
    import triton.language as tl

    kernel = _LAUNCHES[-1].kernel if _LAUNCHES else "a kernel"
    (m, k), n = a.data.shape[-2:], b.data.shape[-1]
    if min(m, n, k) < DOT_MIN:
        raise BadDot(
            f"{kernel}: tl.dot of [{m}, {k}] x [{k}, {n}]; the GPU compiler needs M, N and K >= {DOT_MIN} "
            "(the interpreter does not check)"
        )
    if tl.bfloat16 in (a.dtype.scalar, b.dtype.scalar):
        raise BadDot(
            f"{kernel}: tl.dot of bfloat16 operands, which the interpreter multiplies as raw 16-bit "
            "integers; test this path in float16 or float32"
        )


def _itemsize(ti, ptrs) -> int:
    return np.dtype(ti._get_np_dtype(ptrs.get_element_ty())).itemsize


@contextlib.contextmanager
def guard():
    """Within: an interpreted Triton launch that loads or stores out of bounds raises
    ``OutOfBounds``, one whose programs race raises ``Race``, and a ``tl.dot`` too small for the
    GPU or of bfloat16 raises ``BadDot`` (each wrapped in Triton's ``InterpreterError``). Nests (an
    inner guard checks again); on leaving, the interpreter is as it was on entering."""
    from triton.runtime import interpreter as ti

    builder, executor = ti.InterpreterBuilder, ti.GridExecutor
    saved = (
        builder.create_masked_load,
        builder.create_masked_store,
        builder.create_dot,
        executor.__call__,
        executor._init_args_hst,
    )
    load, store, dot, call, init = saved

    def create_masked_load(self, ptrs, mask, other, *rest):
        _check("load", ptrs, mask, _itemsize(ti, ptrs))
        return load(self, ptrs, mask, other, *rest)

    def create_masked_store(self, ptrs, value, mask, *rest):
        _check("store", ptrs, mask, _itemsize(ti, ptrs))
        return store(self, ptrs, value, mask, *rest)

    def create_dot(self, a, b, *rest):
        _check_dot(a, b)
        return dot(self, a, b, *rest)

    def _init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = init(self, args_dev, kwargs)
        _LAUNCHES[-1].spans = _spans(self.arg_names, args_hst, kwargs_hst)
        return args_hst, kwargs_hst

    def __call__(self, *args, **kwargs):
        _LAUNCHES.append(_Launch(self.fn.__name__))
        try:
            return call(self, *args, **kwargs)
        finally:
            _LAUNCHES.pop()

    builder.create_masked_load, builder.create_masked_store, builder.create_dot = (
        create_masked_load,
        create_masked_store,
        create_dot,
    )
    executor.__call__, executor._init_args_hst = __call__, _init_args_hst
    try:
        yield
    finally:
        (
            builder.create_masked_load,
            builder.create_masked_store,
            builder.create_dot,
            executor.__call__,
            executor._init_args_hst,
        ) = saved


@contextlib.contextmanager
def poisoned_allocations():
    """Within: ``torch.empty`` and friends return NaN (floats) or the largest integer, not
    whatever the memory held, so an output a kernel leaves partly unwritten is wrong every time
    rather than only when the allocator hands back dirty memory (a GPU's caching allocator does;
    fresh CPU pages are zeros). PyTorch's own switch does the filling: deterministic mode with
    ``torch.utils.deterministic.fill_uninitialized_memory``, warn-only so no op is refused."""
    import torch

    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


_MISSING = object()


#: the first Triton release whose interpreter undoes its own patches after each launch
UNDOES_ITS_PATCHES = (3, 6)


@contextlib.contextmanager
def interpreter_patches_undone(always: bool = False):
    """Undo, on exit, what Triton's interpreter patched into ``triton.language``.

    Before Triton 3.6, an interpreted launch rewrites ``triton.language`` for good: its builtins
    get the interpreter's builder, and ``dtype.to_ir``, ``tl.tensor``'s ``__bool__`` and
    ``__index__``, ``tl.range``, ``tl.reduce`` and others are replaced. A kernel compiled for the
    GPU later in the same process then fails in Triton's code generator (``tl.cdiv(D, BLOCK_N)``:
    "'block_argument' object has no attribute 'dtype'"). Tests that interpret kernels whatever
    the machine (test_guard.py's, test_masks.py's mutants) run in a GPU session too, so each
    test runs inside this. Names a test added are removed, except modules (a submodule imported
    on the way stays an attribute of its package). Triton 3.6 and later undo their own patches
    (UNDOES_ITS_PATCHES), so there it does nothing unless ``always``.
    """
    import inspect

    import triton
    import triton.language as tl

    from edgefuse._releases import major_minor

    if not always and (major_minor(triton.__version__) or (99, 0)) >= UNDOES_ITS_PATCHES:
        yield
        return

    core = tl.core
    patched = [tl, core, tl.math] + [
        v for v in vars(core).values() if isinstance(v, type) and v.__module__ == core.__name__
    ]
    before = [(o, dict(vars(o))) for o in patched]
    try:
        yield
    finally:
        for o, saved in before:
            now = dict(vars(o))
            for name, value in now.items():
                if name not in saved and not inspect.ismodule(value):
                    delattr(o, name)
            for name, value in saved.items():
                if now.get(name, _MISSING) is not value:
                    setattr(o, name, value)
