"""Differential fuzzing of the Triton kernels against their float64 references, over random shapes.

The tests pin a grid of shapes (B = 1, 3, 17; N = 1, 2, 5; widths not powers of two). This
draws each case's shapes, options and launch configuration at random, far outside that grid:

- fused_projection: N = 1..11 (past MAX_GROUPS = 8: several launches), B = 1..150 (edge
  batches and GEMM-shaped ones), D = 1..300, each K_i = 1..700 (long enough to split K),
  absent modalities, bias or none, every activation, with and without L2 norm; the launch
  plan is the launcher's own (``_config``, ``_split_k``) or a random valid override (block
  sizes, fused norm, split-K = 1..8); a quarter of the cases run the training path and
  compare the gradients in every input;
- mfb: B, K1, K2, O, factors = 1..7, biases, per-row presence, normalisation, and a random
  block configuration or the launcher's;
- bilinear: B, K1, K2 = 1..40, O = 1..90, bias or none;
- gated_fusion: B, N = 1..10, D = 1..2100, softmax or sigmoid, gates per modality or per
  feature, masks with empty rows, the launcher's blocks or a random override, forward and
  (half of the cases) the backward kernel's gradients.

Each case runs in float32 or float16 and passes within the tests' tolerance
(``reference.tolerance``: float64 reference, the reduction's length), or else within
TORCH_SLACK times the error of PyTorch's own ops on the same inputs in the same dtype, which
the record gives (``torch_error_over_tolerance``): the tolerance does not model every op's
conditioning (MFB's signed square root near 0 amplifies the pooled sum's rounding), nor a
ReLU's kink (a pre-activation within rounding of 0 turns its gradient on or off: ops seed 9's
case 4968). That error is the worst over ORDERS orders of summation (``_in_order``). Where the
conditioning is bad, which float32 order lands nearest float64 is chance. Ops seed 7's case
5136 (MFB, the kernel at 1.77 times the tolerance) puts PyTorch's float32 ops at 0.89 in the
given order, and anywhere from 0.20 to 3.62 over orders 0-7 (``--layer ops --seed 7 --only 5136
--orders 8``).

A case is fixed by ``(seed, index)``: ``--seed S --only I`` runs one again. On a CPU the kernels
run in Triton's interpreter (``TRITON_INTERPRET=1``, set here before Triton is imported; slow, so
the shapes stay small) under the tests' guard (``tests/kernels/_guard.py``: an access out of
bounds, a race between programs or a tl.dot the GPU would reject fails the case).
``--device cuda`` compiles the kernels for the GPU. On both, allocations are poisoned (an
output left partly unwritten is NaN); ``--bare`` runs without the guard and the poison.

``--layer ops`` fuzzes ``edgefuse.kernels.ops`` instead, as the fusion modules call it
(``draw_ops``): every input a random view (transposed, strided, off its storage's 16-byte
alignment, broadcast over the batch), float32, float16 or ``torch.autocast`` (bfloat16 too on
CUDA; on a CPU for gated fusion only, which has no dot), with gradients or without. On top
of the reference comparison (one reduction length per output and gradient), a case fails
when ops took the other path than its dispatch rules say (the kernel, or the reference for
training through an op without a Triton backward) or returned another dtype than they give.

    python tools/fuzz_kernels.py --cases 200 --out bench/results/fuzz     # fuzz.json; exit 1 on a failure
    python tools/fuzz_kernels.py --seed 0 --only 17                       # one case, printed
    python tools/fuzz_kernels.py --layer ops --cases 500 --out DIR        # fuzz_ops.json
    python tools/fuzz_kernels.py --layer ops --seed 7 --only 5136 --orders 8   # PyTorch's error in 8 orders
    python tools/fuzz_kernels.py --tally bench/results/cpu-2core-avx512vnni    # the committed runs, added up
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

OPS = ("fused_projection", "mfb", "bilinear", "gated_fusion")
#: past the tolerance, a case still passes within this many times PyTorch's own error on its inputs
TORCH_SLACK = 2.0
#: PyTorch's own error is the worst over this many orders of each reduction (``_in_order``; order 0: as given)
ORDERS = 4
ROOT = Path(__file__).resolve().parents[1]
# run from anywhere: the repository root (tools.*, tests.*) and bench/ (its _common helpers) on the path
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "bench")) if p not in sys.path]


def _batch(r: random.Random) -> int:
    return r.choice((r.randint(1, 4), r.randint(5, 40), r.randint(41, 150)))


def projection_case(r: random.Random, dtype):
    """(params, run, reference, reduction length) for one random fused_projection case."""
    import torch

    from edgefuse.kernels import checks
    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_projection import fused_projection_train, fused_projection_triton

    n, b = r.choice((1, 2, 3, r.randint(4, 11))), _batch(r)
    d = r.choice((r.randint(1, 20), r.randint(17, 300)))
    ks = [r.choice((r.randint(1, 40), r.randint(41, 300), r.randint(300, 700))) for _ in range(n)]
    absent = {i for i in range(n) if n > 1 and r.random() < 0.25}
    if len(absent) == n:
        absent.discard(r.randrange(n))
    act, norm, has_bias, grads = r.choice(tuple(checks.ACTS)), r.random() < 0.5, r.random() < 0.7, r.random() < 0.25
    config = None
    if not grads and r.random() < 0.35:  # a random valid launch plan instead of the launcher's
        config = (
            r.choice((16, 32, 64)),
            r.choice((16, 32, 64, 128)),
            r.choice((16, 32, 64)),
            4,
            r.random() < 0.5,
            r.choice((1, 1, 2, 3, 4, 8)),
        )
    g = torch.Generator().manual_seed(r.getrandbits(32))
    xs = [None if i in absent else torch.randn(b, k, generator=g) for i, k in enumerate(ks)]
    ws = [torch.randn(d, k, generator=g) * k**-0.5 for k in ks]
    bias = torch.randn(n, d, generator=g) * 0.1 if has_bias else None
    dout = torch.randn(b, n, d, generator=g)
    params = {
        "B": b,
        "N": n,
        "D": d,
        "K": ks,
        "absent": sorted(absent),
        "act": act,
        "normalize": norm,
        "bias": has_bias,
        "config": config,
        "gradients": grads,
    }

    def cast(t, dt, dev):
        return None if t is None else t.to(dt).to(dev)

    def run(dev):
        xq, wq, bq = [cast(x, dtype, dev) for x in xs], [cast(w, dtype, dev) for w in ws], cast(bias, dtype, dev)
        if not grads:
            return [fused_projection_triton(xq, wq, bq, act, norm, config=config)]
        return _grads(fused_projection_train, xq, wq, bq, act, norm, dout.to(dtype).to(dev))

    def reference(acc=torch.float64, order=0):
        xq, wq = [cast(x, dtype, "cpu") for x in xs], [cast(w, dtype, "cpu") for w in ws]
        x64, w64 = [None if x is None else x.to(acc) for x in xq], [w.to(acc) for w in wq]
        b64 = None if bias is None else bias.to(dtype).to(acc)
        fn = _in_order("fused_projection", ref.fused_projection_reference, order)
        if not grads:
            return [fn(x64, w64, b64, act, norm)]
        return _grads(fn, x64, w64, b64, act, norm, dout.to(dtype).to(acc))

    return params, run, reference, max(max(ks), b if grads else 1, d if grads else 1)


def _grads(fn, xs, ws, bias, act, norm, dout):
    """The output and its gradients in every present input, every weight and the bias."""
    from edgefuse.kernels.selfcheck import projection_grads

    out, grads = projection_grads(fn, xs, ws, bias, act, norm, dout)
    return [out, *grads]


def mfb_case(r: random.Random, dtype):
    import torch

    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_bilinear import mfb_triton
    from edgefuse.kernels.triton_projection import next_pow2

    b, k1, k2 = _batch(r), r.randint(1, 300), r.randint(1, 300)
    factors, o = r.randint(1, 7), r.randint(1, 70)
    has_bias, has_present, norm = r.random() < 0.7, r.random() < 0.5, r.random() < 0.7
    config = None
    if r.random() < 0.35:
        block_f = next_pow2(factors)
        block_m, warps = r.choice((16, 32, 64)), r.choice((4, 8))
        # at most 128 accumulator values a thread (two [BLOCK_M, BLOCK_O * BLOCK_F] fp32 tiles), as the
        # launcher's plans keep: past that a GPU compile spills to local memory
        config = (
            block_m,
            r.choice(
                [v for v in (1, 2, 4, 8, 16, 32) if 16 <= v * block_f and 2 * block_m * v * block_f <= 128 * 32 * warps]
            ),
            r.choice((16, 32, 64)),
            warps,
        )
    g = torch.Generator().manual_seed(r.getrandbits(32))
    rows = o * factors
    t = [
        torch.randn(b, k1, generator=g),
        torch.randn(b, k2, generator=g),
        torch.randn(rows, k1, generator=g) * k1**-0.5,
        torch.randn(rows, generator=g) * 0.1,
        torch.randn(rows, k2, generator=g) * k2**-0.5,
        torch.randn(rows, generator=g) * 0.1,
    ]
    if not has_bias:
        t[3] = t[5] = None
    present = torch.rand(b, 2, generator=g) > 0.3 if has_present else None
    params = {
        "B": b,
        "K1": k1,
        "K2": k2,
        "O": o,
        "factors": factors,
        "bias": has_bias,
        "present": has_present,
        "normalize": norm,
        "config": config,
    }

    def run(dev):
        q = [None if v is None else v.to(dtype).to(dev) for v in t]
        return [mfb_triton(*q, factors, None if present is None else present.to(dev), norm, config=config)]

    def reference(acc=torch.float64, order=0):
        q = [None if v is None else v.to(dtype).to(acc) for v in t]
        return [_in_order("mfb", ref.mfb_reference, order)(*q, factors, present, norm)]

    return params, run, reference, max(k1, k2)


def bilinear_case(r: random.Random, dtype):
    import torch

    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_bilinear import bilinear_triton

    b, k1, k2, o, has_bias = _batch(r), r.randint(1, 40), r.randint(1, 40), r.randint(1, 90), r.random() < 0.7
    g = torch.Generator().manual_seed(r.getrandbits(32))
    t = [
        torch.randn(b, k1, generator=g),
        torch.randn(b, k2, generator=g),
        torch.randn(o, k1, k2, generator=g) / math.sqrt(k1 * k2),
        torch.randn(o, generator=g) * 0.1 if has_bias else None,
    ]
    params = {"B": b, "K1": k1, "K2": k2, "O": o, "bias": has_bias}

    def run(dev):
        return [bilinear_triton(*[None if v is None else v.to(dtype).to(dev) for v in t])]

    def reference(acc=torch.float64, order=0):
        return [
            _in_order("bilinear", ref.bilinear_reference, order)(
                *[None if v is None else v.to(dtype).to(acc) for v in t]
            )
        ]

    return params, run, reference, k1 * k2


def gated_case(r: random.Random, dtype):
    import torch

    from edgefuse.kernels import checks
    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_gated import gated_fusion_backward_triton, gated_fusion_triton
    from edgefuse.kernels.triton_projection import next_pow2

    b, n = _batch(r), r.choice((1, 2, 3, r.randint(4, 10)))
    d = r.choice((r.randint(1, 64), r.randint(65, 2100)))
    mode, per_feature, backward = r.choice(checks.GATE_MODES), r.random() < 0.5, r.random() < 0.5
    config = None
    if r.random() < 0.35:
        block_n, warps = next_pow2(n) * r.choice((1, 1, 2)), r.choice((1, 2, 4, 8))
        # at most 64 values of a [BLOCK_N, BLOCK_D] tile a thread (the launcher keeps 32): no spills on a GPU
        config = (
            block_n,
            r.choice([v for v in (1, 2, 4, 8, 16, 64, 256, 1024, 2048) if block_n * v <= 64 * 32 * warps]),
            warps,
        )
    g = torch.Generator().manual_seed(r.getrandbits(32))
    feats = torch.randn(b, n, d, generator=g)
    logits = torch.randn(*((b, n, d) if per_feature else (b, n)), generator=g) * 2
    mask = torch.rand(b, n, generator=g) < r.choice((0.2, 0.6, 0.95))
    dout = torch.randn(b, d, generator=g)
    params = {
        "B": b,
        "N": n,
        "D": d,
        "mode": mode,
        "per_feature": per_feature,
        "backward": backward,
        "config": config,
        "empty_rows": int((~mask.any(1)).sum()),
    }

    def run(dev):
        f, lg, m = feats.to(dtype).to(dev), logits.to(dtype).to(dev), mask.to(dev)
        out, empty = gated_fusion_triton(f, lg, m, mode, config=config)
        if not backward:
            return [out, empty]
        return [out, empty, *gated_fusion_backward_triton(f, lg, m, dout.to(dtype).to(dev), mode, config=config)]

    def reference(acc=torch.float64, order=0):
        leaves = [feats.to(dtype).to(acc).requires_grad_(), logits.to(dtype).to(acc).requires_grad_()]
        out, empty = _in_order("gated_fusion", ref.gated_fusion_reference, order)(*leaves, mask, mode)
        if not backward:
            return [out.detach(), empty]
        return [out.detach(), empty, *torch.autograd.grad(out, leaves, dout.to(dtype).to(acc))]

    # the output sums N terms; with the backward, a per-modality logit's gradient sums D (as
    # tests/kernels/test_gated.py takes it), a feature's is its gate times the output's
    return params, run, reference, [n, 1] + ([n, n * (1 if per_feature else d)] if backward else [])


CASES = {"fused_projection": projection_case, "mfb": mfb_case, "bilinear": bilinear_case, "gated_fusion": gated_case}


# ---- the ops layer: edgefuse.kernels.ops, as the fusion modules call it ----------------------


def _layout(r: random.Random, shape: tuple[int, ...], kinds: tuple[str, ...]):
    """(label, base shape, view): an input of ``shape`` as the op gets it, a view of a base tensor."""
    kind = r.choice(kinds)
    if kind == "transposed":  # the first two dimensions' storage swapped (a transposed activation or weight)
        return kind, (shape[1], shape[0], *shape[2:]), lambda t: t.transpose(0, 1)
    if kind == "strided":  # every other element of a last dimension twice as wide
        return kind, (*shape[:-1], 2 * shape[-1]), lambda t: t[..., ::2]
    if kind == "offset":  # contiguous, one row into its storage: a pointer off a 16-byte boundary
        return kind, (shape[0] + 1, *shape[1:]), lambda t: t[1:]
    if kind == "expanded":  # one row broadcast over the batch (stride 0)
        return kind, (1, *shape[1:]), lambda t: t.expand(*shape)
    return "contiguous", tuple(shape), lambda t: t


ACTIVATION = ("contiguous", "contiguous", "transposed", "strided", "offset", "expanded")
PARAMETER = ("contiguous", "contiguous", "transposed", "strided", "offset")
VECTOR = ("contiguous", "contiguous", "strided", "offset")


def _ops_projection(r: random.Random):
    from edgefuse.kernels import checks

    n, b = r.choice((1, 2, 3, r.randint(4, 9))), _batch(r)
    d = r.choice((r.randint(1, 20), r.randint(17, 200)))
    ks = [r.choice((r.randint(1, 40), r.randint(41, 300))) for _ in range(n)]
    absent = {i for i in range(n) if n > 1 and r.random() < 0.25}
    if len(absent) == n:
        absent.discard(r.randrange(n))
    act, norm = r.choice(tuple(checks.ACTS)), r.random() < 0.5
    inputs = {f"x{i}": None if i in absent else ((b, k), ACTIVATION, 1.0) for i, k in enumerate(ks)}
    inputs |= {f"w{i}": ((d, k), PARAMETER, k**-0.5) for i, k in enumerate(ks)}
    if r.random() < 0.7:
        inputs["bias"] = ((n, d), PARAMETER, 0.1)

    def call(fn, a):
        return [fn([a.get(f"x{i}") for i in range(n)], [a[f"w{i}"] for i in range(n)], a.get("bias"), act, norm)]

    params = {"B": b, "N": n, "D": d, "K": ks, "absent": sorted(absent), "act": act, "normalize": norm}
    # the gradients: an input's sums over D (the norm's too), a weight's and the bias's over B
    return params, inputs, call, [max(ks)], {"x": d, "w": b, "bias": b}


def _ops_mfb(r: random.Random):
    b, k1, k2, factors, o = _batch(r), r.randint(1, 200), r.randint(1, 200), r.randint(1, 5), r.randint(1, 50)
    rows, norm, has_bias = o * factors, r.random() < 0.7, r.random() < 0.7
    inputs = {
        "x": ((b, k1), ACTIVATION, 1.0),
        "y": ((b, k2), ACTIVATION, 1.0),
        "u_w": ((rows, k1), PARAMETER, k1**-0.5),
        "v_w": ((rows, k2), PARAMETER, k2**-0.5),
    }
    if has_bias:
        inputs |= {"u_b": ((rows,), VECTOR, 0.1), "v_b": ((rows,), VECTOR, 0.1)}
    if r.random() < 0.5:
        inputs["present"] = ((b, 2), ("contiguous", "transposed"), "mask")

    def call(fn, a):
        return [fn(a["x"], a["y"], a["u_w"], a.get("u_b"), a["v_w"], a.get("v_b"), factors, a.get("present"), norm)]

    params = {
        "B": b,
        "K1": k1,
        "K2": k2,
        "O": o,
        "factors": factors,
        "bias": has_bias,
        "present": "present" in inputs,
        "normalize": norm,
    }
    return params, inputs, call, [max(k1, k2)], {"x": rows, "y": rows, "u_w": b, "v_w": b, "u_b": b, "v_b": b}


def _ops_bilinear(r: random.Random):
    b, k1, k2, o = _batch(r), r.randint(1, 30), r.randint(1, 30), r.randint(1, 60)
    inputs = {
        "x": ((b, k1), ACTIVATION, 1.0),
        "y": ((b, k2), ACTIVATION, 1.0),
        "weight": ((o, k1, k2), PARAMETER, (k1 * k2) ** -0.5),
    }
    if r.random() < 0.7:
        inputs["bias"] = ((o,), VECTOR, 0.1)

    def call(fn, a):
        return [fn(a["x"], a["y"], a["weight"], a.get("bias"))]

    params = {"B": b, "K1": k1, "K2": k2, "O": o, "bias": "bias" in inputs}
    return params, inputs, call, [k1 * k2], {"x": o * k2, "y": o * k1, "weight": b, "bias": b}


def _ops_gated(r: random.Random):
    from edgefuse.kernels import checks

    b, n = _batch(r), r.choice((1, 2, 3, r.randint(4, 8)))
    d = r.choice((r.randint(1, 64), r.randint(65, 1100)))
    mode, per_feature = r.choice(checks.GATE_MODES), r.random() < 0.5
    inputs = {
        "feats": ((b, n, d), ACTIVATION, 1.0),
        "logits": ((b, n, d) if per_feature else (b, n), ACTIVATION, 2.0),
        "mask": ((b, n), ("contiguous", "transposed", "offset"), "mask"),
    }

    def call(fn, a):
        return list(fn(a["feats"], a["logits"], a["mask"], mode))

    params = {"B": b, "N": n, "D": d, "mode": mode, "per_feature": per_feature}
    # the output and the empty-row flag; a feature's gradient is its gate times the output's, a
    # per-modality logit's sums over D (as tests/kernels/test_gated.py takes it)
    return params, inputs, call, [n, 1], {"feats": n, "logits": n * (1 if per_feature else d)}


OPS_CASES = {
    "fused_projection": _ops_projection,
    "mfb": _ops_mfb,
    "bilinear": _ops_bilinear,
    "gated_fusion": _ops_gated,
}
#: the ops whose Triton path is differentiable; the others train on the reference
HAS_BACKWARD = ("fused_projection", "gated_fusion")


@contextlib.contextmanager
def _spied(name: str, calls: list):
    """``edgefuse.kernels.reference.<name>`` counted in ``calls`` while inside: which path ops took."""
    from edgefuse.kernels import reference as ref

    real = getattr(ref, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    setattr(ref, name, spy)
    try:
        yield
    finally:
        setattr(ref, name, real)


def draw_ops(seed: int, index: int, device: str):
    """Ops-layer case ``index`` of ``seed``: (op, compute dtype, params, run(device), reference(),
    reduction lengths, one per output and gradient).

    Each input is a random view (transposed, strided, off its storage's alignment, broadcast
    over the batch). The case runs in float32, float16, bfloat16 (on CUDA; on a CPU gated
    fusion only, which has no dot: the interpreter's bfloat16 dot is wrong), or under
    ``torch.autocast``; with gradients (training: the ops with a Triton backward keep the
    kernel, the others take the reference) or without. ``run`` fails when ops took the other
    path than its rules say, or when an output's dtype is not the one they give (autocast's
    for the matmul-like ops)."""
    import torch

    from edgefuse.kernels import ops
    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.selfcheck import _kernels_env

    r = random.Random(f"ops:{seed}:{index}")
    op = r.choice(OPS)
    precisions = ["float32", "float16", "autocast float16"]
    if device == "cuda":
        precisions += ["bfloat16", "autocast bfloat16"]
    elif op == "gated_fusion":  # no tl.dot in it: the interpreter runs bfloat16 right
        precisions.append("bfloat16")
    precision, grads = r.choice(precisions), r.random() < 0.4
    autocast = precision.startswith("autocast ")
    low = getattr(torch, precision.removeprefix("autocast "))
    stored = torch.float32 if autocast else low
    dtype = torch.float32 if autocast and op == "gated_fusion" else low  # gated fusion is a sum: autocast leaves it
    params, inputs, call, forward_lens, grad_lens = OPS_CASES[op](r)
    g = torch.Generator().manual_seed(r.getrandbits(32))
    tensors, layouts = {}, {}
    for name, spec in inputs.items():
        if spec is None:
            tensors[name] = None
            continue
        shape, kinds, scale = spec
        layouts[name], base_shape, view = _layout(r, shape, kinds)
        base = (
            torch.rand(base_shape, generator=g) < 0.7
            if scale == "mask"
            else torch.randn(base_shape, generator=g) * scale
        )
        tensors[name] = (base, view)
    dout_seed = r.getrandbits(32)
    # each output's reduction length. A gradient also carries the forward's rounding (the norm's
    # Jacobian takes the pre-activations, which sum over K), and one in a view broadcast over the
    # batch sums B rows more
    reduce_len = list(forward_lens)
    if grads:
        reduce_len += [
            max(
                forward_lens[0],
                grad_lens[name.rstrip("0123456789")] * (params["B"] if layouts[name] == "expanded" else 1),
            )
            for name, spec in inputs.items()
            if spec is not None and spec[2] != "mask"
        ]
    expected = "triton" if not grads or op in HAS_BACKWARD else "reference"
    params = {**params, "precision": precision, "gradients": grads, "layouts": layouts, "path": expected}

    def leaves(to, dev):
        out = {}
        for name, t in tensors.items():
            if t is not None:
                base, view = t
                leaf = base.to(dev) if base.dtype == torch.bool else to(base).to(dev).requires_grad_(grads)
                out[name] = (leaf, view(leaf))
        return out

    def finish(outs, ls, acc=None):
        """``outs`` and, with gradients, every float leaf's for a random output gradient (rounded to
        ``dtype``, in ``acc`` if given)."""
        if not grads:
            return outs
        floats = [o for o in outs if o.is_floating_point()]
        outs = [o.detach() for o in outs]
        gen = torch.Generator().manual_seed(dout_seed)
        douts = [torch.randn(o.shape, generator=gen).to(dtype).to(acc or o.dtype).to(o.device) for o in floats]
        wrt = [leaf for leaf, _ in ls.values() if leaf.requires_grad]
        got = torch.autograd.grad(floats, wrt, douts, allow_unused=True)
        # no gradient (an absent modality's weight) as an empty tensor: it matches only another None
        return [*outs, *(w.new_empty(0) if d is None else d for w, d in zip(wrt, got))]

    def run(dev):
        ls, calls = leaves(lambda t: t.to(stored), dev), []
        context = torch.autocast(torch.device(dev).type, dtype=low) if autocast else contextlib.nullcontext()
        # on a CPU ops would take the reference: EDGEFUSE_KERNELS=interpret; on CUDA, ops' own default
        with _kernels_env("interpret" if dev == "cpu" else None), context, _spied(f"{op}_reference", calls):
            outs = call(getattr(ops, op), {k: v for k, (_, v) in ls.items()})
        took = "reference" if calls else "triton"
        if took != expected:
            raise AssertionError(f"ops.{op} ran the {took} path, its rules say {expected}")
        wrong = [str(o.dtype) for o in outs if o.is_floating_point() and o.dtype != dtype]
        if wrong:
            raise AssertionError(f"ops.{op} returned {', '.join(wrong)}, expected {dtype}")
        return finish(outs, ls)

    def reference(acc=torch.float64, order=0):
        # the inputs as the op computes with them (autocast casts them first), then in ``acc``;
        # ``order``: each sum in another order (``_in_order``)
        ls = leaves(lambda t: t.to(dtype if autocast else stored).to(acc), "cpu")
        fn = _in_order(op, getattr(ref, f"{op}_reference"), order)
        return finish(call(fn, {k: v for k, (_, v) in ls.items()}), ls, acc)

    return op, dtype, params, run, reference, reduce_len


def draw(seed: int, index: int):
    """Case ``index`` of ``seed``: (op, dtype, params, run(device), reference(), reduction length or one per output)."""
    import torch

    r = random.Random(f"{seed}:{index}")
    op, dtype = r.choice(OPS), r.choice((torch.float32, torch.float16))
    return (op, dtype, *CASES[op](r, dtype))


LAYERS = ("launchers", "ops")


def _in_order(op: str, fn, order: int):
    """``op``'s reference ``fn`` with each of its sums taken in another order: the same value in
    exact arithmetic, another rounding in float32 or float16. Order 0 is ``fn`` itself; another
    permutes the summed dimension (the projection's and MFB's K, bilinear's K1 and K2, gated
    fusion's modalities) inside the call, so gradients reach the caller's tensors in their own
    order: order 1 reverses it (a sum of three or more terms then associates otherwise; a random
    permutation of three may only swap the first two, which rounds alike), later orders permute
    it at random. The permutations depend on ``order`` and the shapes alone."""
    if not order:
        return fn
    import torch

    def perms(*sizes):
        if order == 1:
            return [torch.arange(n - 1, -1, -1) for n in sizes]
        g = torch.Generator().manual_seed(order)
        return [torch.randperm(n, generator=g) for n in sizes]

    if op == "fused_projection":

        def permuted(xs, ws, bias, act, normalize):
            ps = perms(*(w.shape[1] for w in ws))
            return fn(
                [None if x is None else x[:, p] for x, p in zip(xs, ps)],
                [w[:, p] for w, p in zip(ws, ps)],
                bias,
                act,
                normalize,
            )
    elif op == "mfb":

        def permuted(x, y, u_w, u_b, v_w, v_b, *rest):
            p1, p2 = perms(x.shape[1], y.shape[1])
            return fn(x[:, p1], y[:, p2], u_w[:, p1], u_b, v_w[:, p2], v_b, *rest)
    elif op == "bilinear":

        def permuted(x, y, weight, bias):
            p1, p2 = perms(x.shape[1], y.shape[1])
            return fn(x[:, p1], y[:, p2], weight[:, p1][:, :, p2], bias)
    elif op == "gated_fusion":

        def permuted(feats, logits, mask, mode):
            (p,) = perms(feats.shape[1])
            return fn(feats[:, p], logits[:, p], mask[:, p], mode)
    else:
        raise ValueError(f"_in_order: expected one of {OPS}, got {op!r}")
    return permuted


def run_case(seed: int, index: int, device: str, layer: str = "launchers", orders: int = ORDERS) -> dict:
    """Case ``index`` of ``seed`` on ``layer`` (the Triton launchers, or ``draw_ops``'s ops-layer
    cases): its op, dtype and shapes, and how far it is from the reference. Past the tolerance,
    also PyTorch's error in each of ``orders`` orders of summation and the worst of them."""
    from edgefuse.kernels.selfcheck import _compare

    op, dtype, params, run, reference, reduce_len = (
        draw(seed, index) if layer == "launchers" else draw_ops(seed, index, device)
    )
    rec = {"index": index, "op": op, "dtype": str(dtype).removeprefix("torch."), **params}
    t = time.perf_counter()
    try:
        outs = [o.detach().cpu() for o in run(device)]
        ref64 = reference()
        ratio = _compare(outs, ref64, dtype, reduce_len)
        rec["error"] = (
            None if math.isfinite(ratio) else "a NaN or infinite value, a wrong shape or a wrong empty-row flag"
        )
    except Exception as e:  # a launch the launcher should have refused, or one that broke: a failure either way
        ratio, rec["error"] = math.inf, f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
    rec["error_over_tolerance"] = round(ratio, 4) if math.isfinite(ratio) else None
    ok = ratio <= 1.0
    if not ok and math.isfinite(ratio):
        # past the tolerance, which does not model every op's conditioning (MFB's signed square
        # root near 0 amplifies the pooled sum's rounding) nor a ReLU's kink: PyTorch's own ops
        # on the same inputs, on the CPU in the same dtype, measured the same way, the worst of
        # ``orders`` orders of summation; the kernel may be at most TORCH_SLACK x that
        each = [
            _compare([o.detach() for o in reference(dtype, order)], ref64, dtype, reduce_len) for order in range(orders)
        ]
        torch_ratio = max(each)
        rec["torch_error_by_order"] = [round(e, 4) if math.isfinite(e) else None for e in each]
        rec["torch_error_over_tolerance"] = round(torch_ratio, 4) if math.isfinite(torch_ratio) else None
        ok = ratio <= TORCH_SLACK * torch_ratio
    rec["ok"], rec["seconds"] = ok, round(time.perf_counter() - t, 3)
    return rec


def tally(folder: Path) -> dict:
    """What the committed runs in ``folder`` add up to: per file (``fuzz*.json``, gzip'd or not)
    its layer, seed, torch and Triton, cases and failures; then the totals and the stacks."""
    import gzip
    import json

    files = sorted(f for f in folder.glob("fuzz*.json*") if f.name.endswith((".json", ".json.gz")))
    if not files:
        raise SystemExit(f"fuzz_kernels --tally: expected fuzz*.json or fuzz*.json.gz files in {folder}, found none")
    runs = []
    for f in files:
        with gzip.open(f, "rt") if f.suffix == ".gz" else f.open() as fh:
            doc = json.load(fh)
        layer = doc.get("layer", "launchers")  # (the first runs had the launchers layer only, unnamed)
        recs = doc.get("records", [])
        ratios = [r["error_over_tolerance"] for r in recs if r.get("error_over_tolerance") is not None]
        by_rule = [
            {k: r[k] for k in ("index", "op", "dtype", "error_over_tolerance", "torch_error_over_tolerance") if k in r}
            for r in recs
            if r.get("ok") and (r.get("error_over_tolerance") or 0) > 1
        ]
        runs.append(
            {
                "file": f.name,
                "layer": layer,
                "seed": doc["seed"],
                "torch": doc["versions"]["torch"],
                "triton": doc["versions"]["triton"],
                "cases": doc["cases"],
                "failed": doc["failed"],
                "seconds": doc.get("seconds"),
                "by_op": doc.get("by_op"),
                "worst_error_over_tolerance": max(ratios) if ratios else None,
                "passed_by_the_2x_rule": by_rule,
            }
        )
    stacks = sorted({(r["torch"], r["triton"]) for r in runs})
    return {
        "format": "edgefuse-fuzz-tally/1",
        "runs": runs,
        "cases": sum(r["cases"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "stacks": stacks,
    }


def _print_tally(t: dict) -> int:
    for r in t["runs"]:
        print(
            f"{r['file']:45s} {r['layer']:9s} seed {r['seed']:<3} torch {r['torch']:14s} triton {r['triton']:6s} "
            f"{r['cases']:6d} cases {r['failed']} failed"
        )
    print(
        f"{len(t['runs'])} runs: {t['cases']} cases, {t['failed']} failed, on {len(t['stacks'])} torch/Triton stacks: "
        + ", ".join(f"{a} + {b}" for a, b in t["stacks"])
    )
    return 1 if t["failed"] else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=100, help="how many cases (indices 0..CASES-1)")
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--only", type=int, default=None, help="run this one case and print it")
    p.add_argument("--seconds", type=float, default=None, help="start no new case after this long")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--layer",
        default="launchers",
        choices=LAYERS,
        help="the Triton launchers, or edgefuse.kernels.ops over views, dtypes, autocast and training (draw_ops)",
    )
    p.add_argument("--bare", action="store_true", help="on a CPU, without the guard and poisoned allocations")
    p.add_argument("--out", type=Path, default=None, help="folder for fuzz.json")
    p.add_argument(
        "--orders",
        type=int,
        default=ORDERS,
        help="past the tolerance, PyTorch's error is the worst over this many orders of summation",
    )
    p.add_argument(
        "--tally",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: count the cases and failures of the fuzz*.json[.gz] files in DIR "
        "(with --out, write them up as kernel_fuzz_summary.json there)",
    )
    args = p.parse_args(argv)
    if args.orders < 1:
        p.error(f"--orders must be >= 1, got {args.orders}")
    if args.tally is not None:
        t = tally(args.tally)
        if args.out is not None:
            from edgefuse._fs import write_json

            # the summary that stays in the repository when the dumps leave it
            write_json(t, args.out / "kernel_fuzz_summary.json")
            print(f"wrote {args.out / 'kernel_fuzz_summary.json'}")
        return _print_tally(t)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
    checks = contextlib.ExitStack()
    if not args.bare:
        sys.path.insert(0, str(ROOT))
        from tests.kernels._guard import guard, poisoned_allocations

        if args.device == "cpu":
            checks.enter_context(guard())
        checks.enter_context(poisoned_allocations())
    with checks:
        return _run(args)


def _run(args) -> int:
    import torch
    import triton

    from edgefuse._fs import write_json

    if args.only is not None:
        rec = run_case(args.seed, args.only, args.device, args.layer, args.orders)
        print(rec)
        return 0 if rec["ok"] else 1
    t0, records = time.perf_counter(), []
    for i in range(args.start, args.start + args.cases):
        if args.seconds is not None and time.perf_counter() - t0 > args.seconds:
            break
        rec = run_case(args.seed, i, args.device, args.layer, args.orders)
        records.append(rec)
        if not rec["ok"]:
            print(f"FAIL {rec}", flush=True)
    by_op = {}
    for op in OPS:
        rs = [x for x in records if x["op"] == op]
        finite = [x["error_over_tolerance"] for x in rs if x["error_over_tolerance"] is not None]
        by_op[op] = {
            "cases": len(rs),
            "failed": sum(not x["ok"] for x in rs),
            "worst_error_over_tolerance": max(finite, default=None),
            "passed_within_torch_slack": sum(x["ok"] and "torch_error_over_tolerance" in x for x in rs),
        }
    failed = [x for x in records if not x["ok"]]
    where = "cuda" if args.device == "cuda" else "cpu, Triton's interpreter"
    if not args.bare:
        where += ", guarded, poisoned allocations" if args.device == "cpu" else ", poisoned allocations"
    doc = {
        "seed": args.seed,
        "layer": args.layer,
        "device": where,
        "orders": args.orders,
        "versions": {"torch": torch.__version__, "triton": triton.__version__},
        "seconds": round(time.perf_counter() - t0, 1),
        "cases": len(records),
        "failed": len(failed),
        "by_op": by_op,
        "failures": failed,
        "records": records,
    }
    if args.layer == "ops":  # what the cases reached
        doc["coverage"] = {
            key: dict(sorted(Counter(v for x in records for v in values(x)).items()))
            for key, values in (
                ("precision", lambda x: [x["precision"]]),
                ("path", lambda x: [x["path"]]),
                ("layout", lambda x: x["layouts"].values()),
            )
        }
    if args.out:
        write_json(doc, args.out / ("fuzz.json" if args.layer == "launchers" else "fuzz_ops.json"))
    print(f"{len(records)} {args.layer} cases in {doc['seconds']} s, {len(failed)} failed")
    for key, counts in doc.get("coverage", {}).items():
        print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for op, s in by_op.items():
        print(
            f"  {op:17} {s['cases']:4} cases  {s['failed']} failed  worst error/tolerance "
            f"{s['worst_error_over_tolerance']}"
            f"  ({s['passed_within_torch_slack']} passed within {TORCH_SLACK:g}x PyTorch's own error)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
