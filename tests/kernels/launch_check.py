"""Does ``kernels/_launch.launch`` hand the CUDA driver what Triton's own path would?

Runs without a GPU, in compiled mode (no ``TRITON_INTERPRET``): a stand-in sm_90 driver
(``aot.stand_in_gpu``) lets Triton compile every launch for real and records, at the point
where the CUDA driver's launch would be called, the compiled kernel and every argument it
gets (grid, stream, function, metadata, hooks, the kernel's arguments). Each call below runs
first with ``launch`` switched off (every launch through Triton's ``JITFunction.run``), then
twice through ``launch``; all three must reach the driver with the same binary and the same
arguments (tensors: the same objects). The calls share shapes and keys on purpose, so most
of ``launch``'s calls are hits of its cache (counted, and required): a key that let two calls
share a binary Triton would tell apart shows up here as a different binary.

``--mutant no-align`` drops the tensors' addresses from ``launch``'s key, ``--mutant
no-constexprs`` drops the constexprs it passes from Triton 3.3: each must be caught (exit 1).

    python tests/kernels/launch_check.py [--mutant no-align|no-constexprs]

Prints one summary line; exits 1 on a difference or when no call took the cache.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path[:0] = [p for p in (str(Path(__file__).resolve().parents[2]),) if p not in sys.path]  # tools.*


def _calls():
    import torch

    from edgefuse.kernels.triton_bilinear import bilinear_triton, mfb_triton
    from edgefuse.kernels.triton_gated import gated_fusion_backward_triton, gated_fusion_triton
    from edgefuse.kernels.triton_projection import fused_projection_triton

    g = torch.Generator().manual_seed(0)

    def t(*shape, dtype=torch.float16):
        x = torch.randn(*shape, generator=g, dtype=dtype)
        INPUTS[id(x)] = x
        return x

    def misaligned(
        b, k, dtype=torch.float16
    ):  # rows 1.. of a [b + 1, k] buffer: contiguous, odd k: not 16-byte aligned
        x = t(b + 1, k, dtype=dtype)[1:]
        assert x.is_contiguous() and x.data_ptr() % 16, "expected a misaligned view"
        INPUTS[id(x)] = x
        return x

    ks, d = (40, 24, 7), 48
    ws, bias = [t(d, k) for k in ks], t(3, d)
    xs, xs_other = [t(3, k) for k in ks], [t(3, k) for k in ks]
    xs_misaligned = [xs[0], xs[1], misaligned(3, 7)]
    ws32 = [t(d, k, dtype=torch.float32) for k in ks]
    x32 = [t(1, k, dtype=torch.float32) for k in ks]
    w_split, x_split = [t(32, 512)], [t(1, 512)]
    w9, x9 = [t(16, 16) for _ in range(9)], [t(2, 16) for _ in range(9)]
    feats, logits, rows, mask = (
        t(3, 3, 40),
        t(3, 3, 40),
        t(3, 3),
        torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=torch.bool),
    )
    feats_other, dout = t(3, 3, 40), t(3, 40)
    x, y, u, v, ub, vb = t(5, 24), t(5, 40), t(4 * 20, 24), t(4 * 20, 40), t(4 * 20), t(4 * 20)
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.bool)
    INPUTS.update({id(mask): mask, id(present): present})
    wb, bb = t(6, 24, 40), t(6)
    return [
        ("projection relu+l2", lambda: fused_projection_triton(xs, ws, bias, "relu", True)),
        ("projection, other inputs", lambda: fused_projection_triton(xs_other, ws, bias, "relu", True)),
        (
            "projection, modality 1 absent",
            lambda: fused_projection_triton([xs[0], None, xs[2]], ws, bias, "relu", True),
        ),
        ("projection, misaligned input", lambda: fused_projection_triton(xs_misaligned, ws, bias, "relu", True)),
        ("projection relu+l2 again", lambda: fused_projection_triton(xs, ws, bias, "relu", True)),
        ("projection fp32 gelu, no bias", lambda: fused_projection_triton(x32, ws32, None, "gelu")),
        ("projection split-K", lambda: fused_projection_triton(x_split, w_split, None, "tanh", True)),
        ("projection 9 modalities", lambda: fused_projection_triton(x9, w9, None, "none", True)),
        (
            "projection 9 modalities, 8 absent",
            lambda: fused_projection_triton([x9[0]] + [None] * 8, w9, None, "none", True),
        ),
        ("gated per-feature softmax", lambda: gated_fusion_triton(feats, logits, mask)),
        ("gated, other features", lambda: gated_fusion_triton(feats_other, logits, mask)),
        ("gated per-row sigmoid", lambda: gated_fusion_triton(feats, rows, mask, "sigmoid")),
        ("gated backward", lambda: gated_fusion_backward_triton(feats, logits, mask, dout)),
        ("mfb present+bias", lambda: mfb_triton(x, y, u, ub, v, vb, 4, present)),
        ("mfb no bias, no norm", lambda: mfb_triton(x, y, u, None, v, None, 4, normalize=False)),
        ("bilinear", lambda: bilinear_triton(x, y, wb, bb)),
        ("bilinear no bias", lambda: bilinear_triton(x, y, wb)),
    ]


#: every tensor the calls pass in, by id (the launchers allocate the others: outputs, workspaces)
INPUTS: dict = {}


def _same(a, b) -> bool:
    """The same argument: an input tensor the same object; a tensor a launcher allocated (new
    each call) the same dtype, shape, strides and 16-byte alignment, and not an input."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if id(a) in INPUTS or id(b) in INPUTS:
            return a is b
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.stride() == b.stride()
            and a.data_ptr() % 16 == b.data_ptr() % 16
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a).__name__ == "LazyDict":  # Triton's launch metadata for its hooks: built anew per launch
        return _same(vars(a), vars(b))
    return a == b


def _differences(want, got) -> list[str]:
    if len(want) != len(got):
        return [f"{len(got)} launches reached the driver, Triton's path made {len(want)}"]
    out = []
    for i, ((k_want, a_want), (k_got, a_got)) in enumerate(zip(want, got)):
        if k_got is not k_want:
            out.append(
                f"launch {i}: a different binary ({getattr(k_got, 'name', '?')}) than Triton's "
                f"({getattr(k_want, 'name', '?')})"
            )
        elif not _same(a_want, a_got):
            out.append(
                f"launch {i} ({getattr(k_want, 'name', '?')}): arguments differ: "
                f"{len(a_got)} given, {len(a_want)} from Triton's path; first difference at "
                f"{next((j for j, (x, y) in enumerate(zip(a_want, a_got)) if not _same(x, y)), min(len(a_want), len(a_got)))}"  # noqa: E501
            )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutant", choices=("no-align", "no-constexprs"))
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        print("launch_check: unset TRITON_INTERPRET (it checks the compiled launch path)", file=sys.stderr)
        return 2
    import triton
    import triton.runtime.jit as jit

    from edgefuse.kernels import _launch
    from tools.aot import stand_in_gpu

    if not _launch.enabled:  # an unchecked release: check it all the same, as if it were checked
        _launch.enabled = True
        print(
            f"launch_check: Triton {triton.__version__} is outside launch's checked releases {_launch.CHECKED}; "
            "checking it"
        )
    if args.mutant == "no-align":
        spec = _launch._spec
        _launch._spec = lambda a: tuple(x for x in spec(a) if not (type(x) is int and 0 <= x < 16))
    elif args.mutant == "no-constexprs":
        _launch._PASS_CONSTEXPRS = not _launch._PASS_CONSTEXPRS

    runs = 0
    real_run = jit.JITFunction.run

    def counted(self, *a, **k):
        nonlocal runs
        runs += 1
        return real_run(self, *a, **k)

    record: list = []
    compared = hits = 0
    failures = []
    jit.JITFunction.run = counted
    try:
        with stand_in_gpu(90, record=record):
            for name, call in _calls():
                _launch.enabled = False
                record.clear()
                call()
                want = list(record)
                _launch.enabled = True
                for attempt in ("first", "second"):
                    record.clear()
                    before = runs
                    try:
                        call()
                    except Exception as e:  # a wrong launch raising in Triton's launcher is a difference too
                        failures.append(f"{name} ({attempt} through launch): {type(e).__name__}: {e}")
                        continue
                    compared += len(record)
                    hits += len(record) - (runs - before)
                    failures += [f"{name} ({attempt} through launch): {d}" for d in _differences(want, list(record))]
    finally:
        jit.JITFunction.run = real_run
    print(
        f"Triton {triton.__version__}: {compared} launches through launch compared with Triton's path, "
        f"{hits} from launch's cache; {len(failures)} difference(s)"
    )
    for f in failures:
        print("  " + f)
    if not hits:
        print("  no launch came from launch's cache: nothing was checked")
    return 1 if failures or not hits else 0


if __name__ == "__main__":
    sys.exit(main())
