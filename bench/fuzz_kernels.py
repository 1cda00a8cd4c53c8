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
conditioning (MFB's signed square root near 0 amplifies the pooled sum's rounding). A case
is fixed by ``(seed, index)``: ``--seed S --only I`` runs one again. On a CPU the kernels run in
Triton's interpreter (``TRITON_INTERPRET=1``, set here before Triton is imported; slow, so
the shapes stay small) under the tests' guard (``tests/kernels/_guard.py``: an access out of
bounds, a race between programs or a tl.dot the GPU would reject fails the case).
``--device cuda`` compiles the kernels for the GPU. On both, allocations are poisoned (an
output left partly unwritten is NaN); ``--bare`` runs without the guard and the poison.

    python bench/fuzz_kernels.py --cases 200 --out bench/results/fuzz     # fuzz.json; exit 1 on a failure
    python bench/fuzz_kernels.py --seed 0 --only 17                       # one case, printed
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import time
from pathlib import Path

OPS = ("fused_projection", "mfb", "bilinear", "gated_fusion")
#: past the tolerance, a case still passes within this many times PyTorch's own error on its inputs
TORCH_SLACK = 2.0
ROOT = Path(__file__).resolve().parents[1]


def _batch(r: random.Random) -> int:
    return r.choice((r.randint(1, 4), r.randint(5, 40), r.randint(41, 150)))


def projection_case(r: random.Random, dtype):
    """(params, run, reference, reduction length) for one random fused_projection case."""
    import torch

    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_projection import fused_projection_train, fused_projection_triton

    n, b = r.choice((1, 2, 3, r.randint(4, 11))), _batch(r)
    d = r.choice((r.randint(1, 20), r.randint(17, 300)))
    ks = [r.choice((r.randint(1, 40), r.randint(41, 300), r.randint(300, 700))) for _ in range(n)]
    absent = {i for i in range(n) if n > 1 and r.random() < 0.25}
    if len(absent) == n:
        absent.discard(r.randrange(n))
    act, norm, has_bias, grads = r.choice(("none", "relu", "gelu", "tanh")), r.random() < 0.5, r.random() < 0.7, r.random() < 0.25
    config = None
    if not grads and r.random() < 0.35:  # a random valid launch plan instead of the launcher's
        config = (r.choice((16, 32, 64)), r.choice((16, 32, 64, 128)), r.choice((16, 32, 64)), 4, r.random() < 0.5,
                  r.choice((1, 1, 2, 3, 4, 8)))
    g = torch.Generator().manual_seed(r.getrandbits(32))
    xs = [None if i in absent else torch.randn(b, k, generator=g) for i, k in enumerate(ks)]
    ws = [torch.randn(d, k, generator=g) * k ** -0.5 for k in ks]
    bias = torch.randn(n, d, generator=g) * 0.1 if has_bias else None
    dout = torch.randn(b, n, d, generator=g)
    params = {"B": b, "N": n, "D": d, "K": ks, "absent": sorted(absent), "act": act, "normalize": norm, "bias": has_bias,
              "config": config, "gradients": grads}

    def cast(t, dt, dev):
        return None if t is None else t.to(dt).to(dev)

    def run(dev):
        xq, wq, bq = [cast(x, dtype, dev) for x in xs], [cast(w, dtype, dev) for w in ws], cast(bias, dtype, dev)
        if not grads:
            return [fused_projection_triton(xq, wq, bq, act, norm, config=config)]
        return _grads(fused_projection_train, xq, wq, bq, act, norm, dout.to(dtype).to(dev))

    def reference(acc=torch.float64):
        xq, wq = [cast(x, dtype, "cpu") for x in xs], [cast(w, dtype, "cpu") for w in ws]
        x64, w64 = [None if x is None else x.to(acc) for x in xq], [w.to(acc) for w in wq]
        b64 = None if bias is None else bias.to(dtype).to(acc)
        if not grads:
            return [ref.fused_projection_reference(x64, w64, b64, act, norm)]
        return _grads(ref.fused_projection_reference, x64, w64, b64, act, norm, dout.to(dtype).to(acc))

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
        config = (block_m, r.choice([v for v in (1, 2, 4, 8, 16, 32) if 16 <= v * block_f and 2 * block_m * v * block_f <= 128 * 32 * warps]),
                  r.choice((16, 32, 64)), warps)
    g = torch.Generator().manual_seed(r.getrandbits(32))
    rows = o * factors
    t = [torch.randn(b, k1, generator=g), torch.randn(b, k2, generator=g), torch.randn(rows, k1, generator=g) * k1 ** -0.5,
         torch.randn(rows, generator=g) * 0.1, torch.randn(rows, k2, generator=g) * k2 ** -0.5, torch.randn(rows, generator=g) * 0.1]
    if not has_bias:
        t[3] = t[5] = None
    present = torch.rand(b, 2, generator=g) > 0.3 if has_present else None
    params = {"B": b, "K1": k1, "K2": k2, "O": o, "factors": factors, "bias": has_bias, "present": has_present,
              "normalize": norm, "config": config}

    def run(dev):
        q = [None if v is None else v.to(dtype).to(dev) for v in t]
        return [mfb_triton(*q, factors, None if present is None else present.to(dev), norm, config=config)]

    def reference(acc=torch.float64):
        q = [None if v is None else v.to(dtype).to(acc) for v in t]
        return [ref.mfb_reference(*q, factors, present, norm)]

    return params, run, reference, max(k1, k2)


def bilinear_case(r: random.Random, dtype):
    import torch

    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_bilinear import bilinear_triton

    b, k1, k2, o, has_bias = _batch(r), r.randint(1, 40), r.randint(1, 40), r.randint(1, 90), r.random() < 0.7
    g = torch.Generator().manual_seed(r.getrandbits(32))
    t = [torch.randn(b, k1, generator=g), torch.randn(b, k2, generator=g), torch.randn(o, k1, k2, generator=g) / math.sqrt(k1 * k2),
         torch.randn(o, generator=g) * 0.1 if has_bias else None]
    params = {"B": b, "K1": k1, "K2": k2, "O": o, "bias": has_bias}

    def run(dev):
        return [bilinear_triton(*[None if v is None else v.to(dtype).to(dev) for v in t])]

    def reference(acc=torch.float64):
        return [ref.bilinear_reference(*[None if v is None else v.to(dtype).to(acc) for v in t])]

    return params, run, reference, k1 * k2


def gated_case(r: random.Random, dtype):
    import torch

    from edgefuse.kernels import reference as ref
    from edgefuse.kernels.triton_gated import gated_fusion_backward_triton, gated_fusion_triton
    from edgefuse.kernels.triton_projection import next_pow2

    b, n = _batch(r), r.choice((1, 2, 3, r.randint(4, 10)))
    d = r.choice((r.randint(1, 64), r.randint(65, 2100)))
    mode, per_feature, backward = r.choice(("softmax", "sigmoid")), r.random() < 0.5, r.random() < 0.5
    config = None
    if r.random() < 0.35:
        block_n, warps = next_pow2(n) * r.choice((1, 1, 2)), r.choice((1, 2, 4, 8))
        # at most 64 values of a [BLOCK_N, BLOCK_D] tile a thread (the launcher keeps 32): no spills on a GPU
        config = (block_n, r.choice([v for v in (1, 2, 4, 8, 16, 64, 256, 1024, 2048) if block_n * v <= 64 * 32 * warps]), warps)
    g = torch.Generator().manual_seed(r.getrandbits(32))
    feats = torch.randn(b, n, d, generator=g)
    logits = torch.randn(*((b, n, d) if per_feature else (b, n)), generator=g) * 2
    mask = torch.rand(b, n, generator=g) < r.choice((0.2, 0.6, 0.95))
    dout = torch.randn(b, d, generator=g)
    params = {"B": b, "N": n, "D": d, "mode": mode, "per_feature": per_feature, "backward": backward, "config": config,
              "empty_rows": int((~mask.any(1)).sum())}

    def run(dev):
        f, lg, m = feats.to(dtype).to(dev), logits.to(dtype).to(dev), mask.to(dev)
        out, empty = gated_fusion_triton(f, lg, m, mode, config=config)
        if not backward:
            return [out, empty]
        return [out, empty, *gated_fusion_backward_triton(f, lg, m, dout.to(dtype).to(dev), mode, config=config)]

    def reference(acc=torch.float64):
        leaves = [feats.to(dtype).to(acc).requires_grad_(), logits.to(dtype).to(acc).requires_grad_()]
        out, empty = ref.gated_fusion_reference(*leaves, mask, mode)
        if not backward:
            return [out.detach(), empty]
        return [out.detach(), empty, *torch.autograd.grad(out, leaves, dout.to(dtype).to(acc))]

    return params, run, reference, n


CASES = {"fused_projection": projection_case, "mfb": mfb_case, "bilinear": bilinear_case, "gated_fusion": gated_case}


def draw(seed: int, index: int):
    """Case ``index`` of ``seed``: (op, dtype, params, run(device), reference(), reduction length)."""
    import torch

    r = random.Random(f"{seed}:{index}")
    op, dtype = r.choice(OPS), r.choice((torch.float32, torch.float16))
    return (op, dtype, *CASES[op](r, dtype))


def run_case(seed: int, index: int, device: str) -> dict:
    """Case ``index`` of ``seed``: its op, dtype and shapes, and how far it is from the reference."""
    from edgefuse.kernels.selfcheck import _compare

    op, dtype, params, run, reference, reduce_len = draw(seed, index)
    rec = {"index": index, "op": op, "dtype": str(dtype).removeprefix("torch."), **params}
    t = time.perf_counter()
    try:
        outs = [o.detach().cpu() for o in run(device)]
        ref64 = reference()
        ratio = _compare(outs, ref64, dtype, reduce_len)
        rec["error"] = None if math.isfinite(ratio) else "a NaN or infinite value, a wrong shape or a wrong empty-row flag"
    except Exception as e:  # a launch the launcher should have refused, or one that broke: a failure either way
        ratio, rec["error"] = math.inf, f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
    rec["error_over_tolerance"] = round(ratio, 4) if math.isfinite(ratio) else None
    ok = ratio <= 1.0
    if not ok and math.isfinite(ratio):
        # past the tolerance, which does not model every op's conditioning (MFB's signed square
        # root near 0 amplifies the pooled sum's rounding): PyTorch's own ops on the same inputs,
        # on the CPU in the same dtype, measured the same way; the kernel may be at most TORCH_SLACK x that
        torch_ratio = _compare([o.detach() for o in reference(dtype)], ref64, dtype, reduce_len)
        rec["torch_error_over_tolerance"] = round(torch_ratio, 4) if math.isfinite(torch_ratio) else None
        ok = ratio <= TORCH_SLACK * torch_ratio
    rec["ok"], rec["seconds"] = ok, round(time.perf_counter() - t, 3)
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=100, help="how many cases (indices 0..CASES-1)")
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--only", type=int, default=None, help="run this one case and print it")
    p.add_argument("--seconds", type=float, default=None, help="start no new case after this long")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--bare", action="store_true", help="on a CPU, without the guard and poisoned allocations")
    p.add_argument("--out", type=Path, default=None, help="folder for fuzz.json")
    args = p.parse_args(argv)
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
        rec = run_case(args.seed, args.only, args.device)
        print(rec)
        return 0 if rec["ok"] else 1
    t0, records = time.perf_counter(), []
    for i in range(args.start, args.start + args.cases):
        if args.seconds is not None and time.perf_counter() - t0 > args.seconds:
            break
        rec = run_case(args.seed, i, args.device)
        records.append(rec)
        if not rec["ok"]:
            print(f"FAIL {rec}", flush=True)
    by_op = {}
    for op in OPS:
        rs = [x for x in records if x["op"] == op]
        finite = [x["error_over_tolerance"] for x in rs if x["error_over_tolerance"] is not None]
        by_op[op] = {"cases": len(rs), "failed": sum(not x["ok"] for x in rs), "worst_error_over_tolerance": max(finite, default=None),
                     "passed_within_torch_slack": sum(x["ok"] and "torch_error_over_tolerance" in x for x in rs)}
    failed = [x for x in records if not x["ok"]]
    where = "cuda" if args.device == "cuda" else "cpu, Triton's interpreter"
    if not args.bare:
        where += ", guarded, poisoned allocations" if args.device == "cpu" else ", poisoned allocations"
    doc = {"seed": args.seed, "device": where,
           "versions": {"torch": torch.__version__, "triton": triton.__version__}, "seconds": round(time.perf_counter() - t0, 1),
           "cases": len(records), "failed": len(failed), "by_op": by_op, "failures": failed, "records": records}
    if args.out:
        write_json(doc, args.out / "fuzz.json")
    print(f"{len(records)} cases in {doc['seconds']} s, {len(failed)} failed")
    for op, s in by_op.items():
        print(f"  {op:17} {s['cases']:4} cases  {s['failed']} failed  worst error/tolerance {s['worst_error_over_tolerance']}"
              f"  ({s['passed_within_torch_slack']} passed within {TORCH_SLACK:g}x PyTorch's own error)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
