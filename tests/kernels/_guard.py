"""Bounds checks for Triton's CPU interpreter, which has none (on a GPU, compute-sanitizer checks them).

The interpreter loads and stores at whatever address a kernel computes: a dropped mask reads a
neighbour's bytes (or writes them), and the test may still pass, where the GPU would fault
with an illegal address or return garbage. Within ``guard()``, every lane that a load or store
keeps (mask true) must lie inside one tensor argument of that launch (the span of its
elements, not its whole storage); else ``OutOfBounds`` names the kernel, the program, the
access and the nearest argument, before the access is made.

It patches the interpreter's builder (``create_masked_load``/``create_masked_store``, which
every plain ``tl.load``/``tl.store`` goes through) and ``GridExecutor._init_args_hst`` (where
the launch's tensors are known), which exist with these argument orders in Triton 3.0 to 3.9.
``tests/conftest.py`` turns it on for the whole run when kernels are interpreted.
"""

from __future__ import annotations

import contextlib

import numpy as np

#: the launches running now, innermost last: (kernel name, [(argument name, first byte, end byte)])
_LAUNCHES: list[tuple[str, list[tuple[str, int, int]]]] = []


class OutOfBounds(AssertionError):
    """A kernel loaded or stored outside every tensor its launch was given."""


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
    kernel, spans = _LAUNCHES[-1]
    addrs = np.asarray(ptrs.data).astype(np.uint64, copy=False)
    kept = addrs[np.broadcast_to(np.asarray(mask.data, dtype=bool), addrs.shape)]
    if kept.size == 0:
        return
    first, end = int(kept.min()), int(kept.max()) + itemsize
    if any(lo <= first and end <= hi for _, lo, hi in spans):
        return
    from triton.runtime.interpreter import interpreter_builder

    def distance(span):
        _, lo, hi = span
        return max(lo - first, 0) + max(end - hi, 0)

    name, lo, hi = min(spans, key=distance) if spans else ("(no tensor)", 0, 0)
    outside = int(np.count_nonzero((kept < lo) | (kept + itemsize > hi)))
    raise OutOfBounds(
        f"{kernel}, program {tuple(getattr(interpreter_builder, 'grid_idx', ()) or ())}: a {op} of "
        f"{kept.size} masked-in lanes spans bytes [{first - lo:+d}, {end - lo:+d}) of argument {name!r} "
        f"({hi - lo} bytes); {outside} lanes fall outside it and outside every other tensor argument"
    )


def _itemsize(ti, ptrs) -> int:
    return np.dtype(ti._get_np_dtype(ptrs.get_element_ty())).itemsize


@contextlib.contextmanager
def guard():
    """Within: an interpreted Triton launch that loads or stores out of bounds raises
    ``OutOfBounds`` (wrapped in Triton's ``InterpreterError``). Nests (an inner guard checks
    again); on leaving, the interpreter is as it was on entering."""
    from triton.runtime import interpreter as ti

    builder, executor = ti.InterpreterBuilder, ti.GridExecutor
    saved = (builder.create_masked_load, builder.create_masked_store, executor.__call__, executor._init_args_hst)
    load, store, call, init = saved

    def create_masked_load(self, ptrs, mask, other, *rest):
        _check("load", ptrs, mask, _itemsize(ti, ptrs))
        return load(self, ptrs, mask, other, *rest)

    def create_masked_store(self, ptrs, value, mask, *rest):
        _check("store", ptrs, mask, _itemsize(ti, ptrs))
        return store(self, ptrs, value, mask, *rest)

    def _init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = init(self, args_dev, kwargs)
        _LAUNCHES[-1] = (self.fn.__name__, _spans(self.arg_names, args_hst, kwargs_hst))
        return args_hst, kwargs_hst

    def __call__(self, *args, **kwargs):
        _LAUNCHES.append((self.fn.__name__, []))
        try:
            return call(self, *args, **kwargs)
        finally:
            _LAUNCHES.pop()

    builder.create_masked_load, builder.create_masked_store = create_masked_load, create_masked_store
    executor.__call__, executor._init_args_hst = __call__, _init_args_hst
    try:
        yield
    finally:
        builder.create_masked_load, builder.create_masked_store, executor.__call__, executor._init_args_hst = saved
