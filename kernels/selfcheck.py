"""``edgefuse kernels``: will the fused kernels run on this machine, and are they right here?

What a user runs on the device itself (a Jetson after a JetPack upgrade, a new Triton):

    edgefuse kernels                      # versions, the GPU, what a fused op on CUDA tensors runs, and why
    edgefuse kernels --check              # each op's Triton path against its float64 reference, on this GPU
    edgefuse kernels --batch 1 4 --dim 512 --widths 1536,256 --check   # at your model's shapes
    edgefuse kernels --check --interpret  # no GPU: through Triton's CPU interpreter (slow; keep shapes tiny)
    edgefuse kernels --checkpoint runs/x/checkpoint --dtype float16 --check   # your model, in float16

``--check`` compiles and runs every launcher (fused projection with and without an absent
modality, its training path's gradients, MFB with one side absent, full bilinear, gated
fusion with an empty row and its backward) in float32 and float16 (bfloat16 too where the GPU
has it), and compares each output with the reference computed in float64 on the CPU, with the
tolerances the test suite uses (``reference.tolerance``). An exception (a compile error, a
launch failure) fails its case, not the run. Exit status: 0 when every case passes, 1 when
one fails, 2 when it cannot run here (no GPU, Triton cannot run; the report says why).

How fast they are is measured by ``tools/kernel_bench.py`` (the same options plus timing), and in
full by ``bench/bench_kernels.py``.

``--json PATH`` writes the whole record (report, cases).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from edgefuse._fs import write_json
from edgefuse.errors import EdgefuseError
from edgefuse.kernel_options import KERNEL_SHAPES
from edgefuse.kernels import reference as ref
from edgefuse.kernels.platform import error_line

#: --check / --bench shapes when not given (defined with the command's options, which load without torch)
GPU_SHAPES, INTERPRET_SHAPES = KERNEL_SHAPES["gpu"], KERNEL_SHAPES["interpret"]
#: MFB's factors, and the widest full-bilinear operand (its weight is O x K1 x K2)
MFB_FACTORS, BILINEAR_MAX, BILINEAR_OUT = 4, 256, 64

OPS = ("fused_projection", "mfb", "bilinear", "gated_fusion")
#: what the launchers never run on Triton, whatever the device (ops.py's rules)
REFERENCE_ALWAYS = (
    "on CPU tensors: the reference (production never interprets Triton)",
    "while exporting or compiling (ONNX, torch.jit, torch.compile): the reference, so graphs hold standard ops",
    "while training: bilinear and mfb run the reference (no Triton backward); fused_projection "
    "and gated_fusion keep their kernels",
)


def _versions() -> dict:
    from edgefuse import __version__
    from edgefuse.kernels.platform import triton_import_error

    triton_version = None
    if triton_import_error() is None:
        import triton

        triton_version = triton.__version__
    return {
        "edgefuse": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "triton_import_error": triton_import_error(),
    }


def report() -> dict:
    """Versions, CUDA devices, and what a fused op on CUDA tensors runs here (``"triton"`` or
    ``"reference"``) with why and what to do about it. Never raises for a broken install: that
    is what it reports."""
    from edgefuse.kernels.ops import _CHOICES
    from edgefuse.kernels.platform import cuda_driver_version, triton_import_error, triton_ptxas

    rec = {
        "versions": _versions(),
        "EDGEFUSE_KERNELS": os.environ.get("EDGEFUSE_KERNELS"),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "devices": [],
    }
    if torch.cuda.is_available():
        rec["versions"]["driver_cuda"] = cuda_driver_version()  # what Triton's ptxas must not be newer than
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            ptxas = triton_ptxas(p.major * 10 + p.minor)  # (None without Triton)
            rec["devices"].append(
                {
                    "index": i,
                    "name": p.name,
                    "arch": f"sm_{p.major}{p.minor}",
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "sms": p.multi_processor_count,
                    "triton_ptxas": None if ptxas is None else dict(zip(("path", "cuda", "variable"), ptxas)),
                }
            )
    can, why, remedy = _kernels_can_run(bool(rec["devices"]))
    rec["kernels_can_run"] = can
    forced = (rec["EDGEFUSE_KERNELS"] or "").strip().lower()
    if forced == "reference":
        runs, why, remedy = "reference", "EDGEFUSE_KERNELS=reference", "unset EDGEFUSE_KERNELS" if can else remedy
    elif forced and forced not in _CHOICES:
        runs, why, remedy = (
            "error",
            f"EDGEFUSE_KERNELS must be one of {_CHOICES}, got {forced!r}",
            "unset EDGEFUSE_KERNELS",
        )
    elif forced == "interpret" or (forced == "triton" and not rec["devices"]):
        interpreting = rec["TRITON_INTERPRET"] == "1" and triton_import_error() is None
        runs = "interpreter" if interpreting else "error"
        why = f"EDGEFUSE_KERNELS={forced}" + ("" if interpreting else " without TRITON_INTERPRET=1 (or Triton)")
    elif forced == "triton" and not can:
        runs = "error"  # dispatch raises instead of falling back
    else:
        runs = "triton" if can else "reference"
    rec["cuda_calls_run"], rec["why"], rec["remedy"] = runs, why, remedy
    if triton_import_error() is None:
        from edgefuse.kernels import _launch

        rec["launch_path"] = (
            "Triton's interpreter (TRITON_INTERPRET=1)"
            if rec["TRITON_INTERPRET"] == "1"
            else "edgefuse's launch (kernels/_launch.py)"
            if _launch.enabled
            else f"Triton's JIT run (edgefuse's launch was checked on Triton "
            f"{'.'.join(map(str, _launch.CHECKED[0]))} to {'.'.join(map(str, _launch.CHECKED[1]))})"
        )
    rec["reference_always"] = list(REFERENCE_ALWAYS)
    return rec


def _kernels_can_run(cuda: bool) -> tuple[bool, str | None, str | None]:
    """Whether the Triton kernels can run on this process's current CUDA device, and if not,
    why and what to do (dispatch's own checks, ``ops.triton_cuda_error``)."""
    from edgefuse.kernels.platform import triton_cuda_error, triton_import_error

    if triton_import_error() is not None:
        return False, f"Triton cannot be imported ({triton_import_error()})", "pip install triton"
    if not cuda:
        return False, "no CUDA device", None
    cannot = triton_cuda_error()
    return (True, None, None) if cannot is None else (False, f"{cannot[0]} ({cannot[1]})", cannot[2])


def format_report(rec: dict) -> str:
    v = rec["versions"]
    lines = [
        f"edgefuse {v['edgefuse']}  torch {v['torch']} (CUDA {v['torch_cuda'] or 'none'})  "
        f"triton {v['triton'] or 'not importable'}"
        + (f"  driver: CUDA {v['driver_cuda']}" if v.get("driver_cuda") else "")
    ]
    for d in rec["devices"]:
        ptxas = d.get("triton_ptxas")
        lines.append(
            f"cuda:{d['index']}  {d['name']}  {d['arch']}  {d['sms']} SMs  {d['memory_gib']} GiB"
            + (f"  Triton builds with CUDA {ptxas['cuda']}'s ptxas ({ptxas['variable']})" if ptxas else "")
        )
    if not rec["devices"]:
        lines.append("no CUDA device")
    for var in ("EDGEFUSE_KERNELS", "TRITON_INTERPRET"):
        if rec[var]:
            lines.append(f"{var}={rec[var]}")
    verdict = {
        "triton": "the Triton kernels",
        "interpreter": "the Triton kernels through Triton's CPU interpreter",
        "reference": "the PyTorch reference ops",
        "error": "nothing: they raise",
    }
    lines.append(f"fused ops on CUDA tensors run: {verdict[rec['cuda_calls_run']]}")
    if rec["why"]:
        lines.append(f"  because: {rec['why']}")
    if rec["remedy"]:
        lines.append(f"  to run the kernels: {rec['remedy']}")
    if "launch_path" in rec:
        lines.append(f"launches go through: {rec['launch_path']}")
    lines += [f"and always {line}" for line in rec["reference_always"]]
    return "\n".join(lines)


@dataclass
class Case:
    """One checked launch: its worst error as a fraction of the tolerance (<= 1 passes)."""

    op: str
    case: str
    dtype: str
    error_over_tolerance: float | None
    ok: bool
    error: str | None = None


def _dtypes(device: str) -> tuple[torch.dtype, ...]:
    """float32 and float16, and bfloat16 on a GPU that has it (the interpreter's bf16 tl.dot is wrong)."""
    bf16 = device != "cpu" and torch.cuda.is_bf16_supported()
    return (torch.float32, torch.float16) + ((torch.bfloat16,) if bf16 else ())


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _compare(
    outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor], dtype: torch.dtype, reduce_len: int | Sequence[int]
) -> float:
    """The worst ``|out - ref| / tolerance`` over the outputs (inf for a non-finite value, a shape
    mismatch, or a bool output, such as gated fusion's empty-row flag, that differs at all).
    ``reduce_len``: one for every output, or one each."""
    lens = [reduce_len] * len(refs) if isinstance(reduce_len, int) else reduce_len
    worst = 0.0
    for out, r, n in zip(outs, refs, lens, strict=True):
        if out.shape != r.shape or (r.dtype == torch.bool and not torch.equal(out, r)):
            return math.inf
        if r.dtype != torch.bool:
            worst = max(worst, ref.error_over_tolerance(out, r, dtype, n))
    return worst


def _cases(
    device: str, batches: Sequence[int], dim: int, widths: Sequence[int], dtypes: Sequence[torch.dtype]
) -> Iterator[tuple[str, str, torch.dtype, int, Callable, Callable]]:
    """(op, label, dtype, reduction length, run, reference): ``run()`` gives the launcher's
    outputs on ``device``, ``reference()`` the reference's on the same inputs (already rounded
    to ``dtype``) in float64 on the CPU."""
    from edgefuse.kernels.triton_bilinear import bilinear_triton, mfb_triton
    from edgefuse.kernels.triton_gated import GatedFusionFunction, gated_fusion_triton
    from edgefuse.kernels.triton_projection import fused_projection_train, fused_projection_triton

    n, kmax = len(widths), max(widths)
    k1, k2, rows, bk = *_pair(widths), _mfb_rows(dim), min(dim, BILINEAR_MAX)
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    def mask_with_empty_row(b):
        mask = torch.rand(b, n, generator=g) > 0.3
        mask[0] = False  # an empty row: zeros and the flag, never NaN
        if b > 1:
            mask[-1] = True
        return mask

    def case(dtype, op, label, reduce_len, fn, ref_fn, tensors):
        """``fn`` on ``tensors`` cast to ``dtype`` on ``device``; ``ref_fn`` on the same in float64."""
        on = [t.to(device) if t.dtype == torch.bool else t.to(dtype).to(device) for t in tensors]
        return (
            op,
            label,
            dtype,
            reduce_len,
            lambda: fn(*on),
            lambda: ref_fn(*[t.cpu() if t.dtype == torch.bool else t.cpu().double() for t in on]),
        )

    for dtype in dtypes:
        ws, bias = [rand(dim, k, scale=k**-0.5) for k in widths], rand(n, dim, scale=0.1)
        for b in batches:
            xs = [rand(b, k) for k in widths]
            for act, norm, absent in (("relu", True, None), ("gelu", False, 1 if n > 1 else None)):

                def proj(fn, act=act, norm=norm, absent=absent):
                    return lambda *t: [
                        fn([None if i == absent else x for i, x in enumerate(t[:n])], list(t[n:-1]), t[-1], act, norm)
                    ]

                label = f"B={b} {act}{' + L2' if norm else ''}" + (
                    f", modality {absent} absent" if absent is not None else ""
                )
                yield case(
                    dtype,
                    "fused_projection",
                    label,
                    kmax,
                    proj(fused_projection_triton),
                    proj(ref.fused_projection_reference),
                    [*xs, *ws, bias],
                )

            present = torch.ones(b, 2, dtype=torch.bool)  # rows with one side absent, then the other
            present[::3, 0] = False
            present[1::3, 1] = False
            yield case(
                dtype,
                "mfb",
                f"B={b} O={rows // MFB_FACTORS} factors={MFB_FACTORS} + L2, sides absent",
                max(k1, k2),
                lambda *t: [mfb_triton(*t[:6], MFB_FACTORS, t[6], True)],
                lambda *t: [ref.mfb_reference(*t[:6], MFB_FACTORS, t[6], True)],
                [
                    rand(b, k1),
                    rand(b, k2),
                    rand(rows, k1, scale=k1**-0.5),
                    rand(rows, scale=0.1),
                    rand(rows, k2, scale=k2**-0.5),
                    rand(rows, scale=0.1),
                    present,
                ],
            )

            yield case(
                dtype,
                "bilinear",
                f"B={b} K={bk} O={BILINEAR_OUT}",
                bk * bk,
                lambda *t: [bilinear_triton(*t)],
                lambda *t: [ref.bilinear_reference(*t)],
                [rand(b, bk), rand(b, bk), rand(BILINEAR_OUT, bk, bk, scale=1 / bk), rand(BILINEAR_OUT, scale=0.1)],
            )

            feats, mask = rand(b, n, dim), mask_with_empty_row(b)
            for mode, logits in (("softmax", rand(b, n, scale=2.0)), ("sigmoid", rand(b, n, dim, scale=2.0))):
                yield case(
                    dtype,
                    "gated_fusion",
                    f"B={b} N={n} {mode}{' per feature' if logits.dim() == 3 else ''}, empty row",
                    n,
                    lambda *t, mode=mode: list(gated_fusion_triton(*t, mode)),
                    lambda *t, mode=mode: list(ref.gated_fusion_reference(*t, mode)),
                    [feats, logits, mask],
                )

        # the training paths' gradients, at the largest batch
        b = max(batches)
        yield case(
            dtype,
            "fused_projection",
            f"B={b} gelu + L2, gradients (x, W, bias)",
            max(kmax, b, dim),
            lambda *t: _grads(fused_projection_train, t, n),
            lambda *t: _grads(ref.fused_projection_reference, t, n),
            [*(rand(b, k) for k in widths), *ws, bias, rand(b, n, dim)],
        )
        yield case(
            dtype,
            "gated_fusion",
            f"B={b} N={n} softmax per feature, gradients (feats, logits)",
            n,
            lambda *t: _gated_grads(GatedFusionFunction.apply, *t),
            lambda *t: _gated_grads(ref.gated_fusion_reference, *t),
            [rand(b, n, dim), rand(b, n, dim, scale=2.0), mask_with_empty_row(b), rand(b, dim)],
        )


def _grads(fn, tensors, n: int) -> list[torch.Tensor]:
    """Gradients in every input of ``<fn(xs, weights, bias, 'gelu', True), dout>`` (``tensors``:
    the N inputs, the N weights, the bias, ``dout``)."""
    return projection_grads(fn, tensors[:n], tensors[n : 2 * n], tensors[2 * n], "gelu", True, tensors[-1])[1]


def projection_grads(
    fn, xs, weights, bias, act: str, normalize: bool, dout: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``fn(xs, weights, bias, act, normalize)`` (the kernel's training path or the reference)
    and its gradients for ``dout`` in every present input, every weight and the bias (if any),
    in that order. A weight whose modality is absent (None) takes no part: its gradient is zero."""
    leaves = [
        t.detach().requires_grad_()
        for t in (*(x for x in xs if x is not None), *weights, *([bias] if bias is not None else []))
    ]
    it = iter(leaves)
    out = fn(
        [None if x is None else next(it) for x in xs],
        [next(it) for _ in weights],
        None if bias is None else next(it),
        act,
        normalize,
    )
    grads = torch.autograd.grad(
        out, leaves, dout, allow_unused=True
    )  # (the reference leaves an absent one's weight unused)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def _gated_grads(fn, feats, logits, mask, dout) -> list[torch.Tensor]:
    leaves = [feats.detach().requires_grad_(), logits.detach().requires_grad_()]
    out, _ = fn(*leaves, mask, "softmax")
    return list(torch.autograd.grad(out, leaves, dout))


def check(
    device: str = "cuda",
    batches: Sequence[int] | None = None,
    dim: int | None = None,
    widths: Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    progress: Callable[[Case], None] | None = None,
) -> list[Case]:
    """Every launcher's outputs against the float64 reference (see the module docstring)."""
    from edgefuse.kernels.triton_projection import dot_precision

    shapes = _shapes(device, batches, dim, widths)
    # fp32 dots take TF32 where torch's own matmuls would (dot_precision): TF32's 10-bit
    # mantissa is float16's, so are its tolerances (the gated sum has no dot)
    tf32 = dot_precision(torch.float32) == "tf32"
    cases = []
    for op, label, dtype, reduce_len, run, reference in _cases(device, *shapes, dtypes or _dtypes(device)):
        as_tf32 = tf32 and dtype == torch.float32 and op != "gated_fusion"
        try:
            outs = run()
            if device != "cpu":
                torch.cuda.synchronize()
            ratio = _compare(
                [o.detach().cpu() for o in outs], reference(), torch.float16 if as_tf32 else dtype, reduce_len
            )
            err = None if math.isfinite(ratio) else "a NaN or infinite value, or a wrong shape"
        except Exception as e:  # a compile or launch failure fails this case; the others still run
            ratio, err = math.inf, error_line(e, 500)
        case = Case(
            op,
            label,
            _short(dtype) + (" (tf32)" if as_tf32 else ""),
            round(ratio, 4) if math.isfinite(ratio) else None,
            ratio <= 1.0,
            err,
        )
        cases.append(case)
        if progress:
            progress(case)
    return cases


def _pair(widths: Sequence[int]) -> tuple[int, int]:
    """MFB's and bilinear's two inputs: the first two modalities' widths (one: itself twice)."""
    return widths[0], widths[min(1, len(widths) - 1)]


def _mfb_rows(dim: int) -> int:
    """MFB's projection rows: O * MFB_FACTORS, as close to D as whole factor groups allow."""
    return MFB_FACTORS * max(1, dim // MFB_FACTORS)


def _shapes(device, batches, dim, widths) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    d = INTERPRET_SHAPES if device == "cpu" else GPU_SHAPES
    batches, dim, widths = tuple(batches or d["batches"]), dim or d["dim"], tuple(widths or d["widths"])
    if not batches or min(batches) < 1 or dim < 1 or not widths or min(widths) < 1:
        raise EdgefuseError(
            f"expected batches, dim and widths >= 1, got batches={list(batches)}, dim={dim}, widths={list(widths)}"
        )
    return batches, dim, widths


#: model-level tolerance floor per dtype the model runs in: the kernels' logits may differ from
#: the float32 CPU reference's by this fraction of the largest |logit| (for float32 one op's
#: error compounded through a few layers; for float16 and bfloat16 about four of their
#: roundings, 2^-11 and 2^-8), or by MODEL_SLACK times what torch's own ops on the same device
#: and dtype differ by, whichever is larger. The second term is the one that binds in practice.
MODEL_FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
MODEL_SLACK = 4.0
#: the fused ops the fusion modules call (counted per forward)
_PUBLIC_OPS = ("fused_projection", "bilinear", "mfb", "gated_fusion")


@contextlib.contextmanager
def _kernels_env(value: str | None) -> Iterator[None]:
    """``EDGEFUSE_KERNELS`` set to ``value`` (None: unset) within the block; dispatch reads it per call."""
    old = os.environ.get("EDGEFUSE_KERNELS")
    if value is None:
        os.environ.pop("EDGEFUSE_KERNELS", None)
    else:
        os.environ["EDGEFUSE_KERNELS"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("EDGEFUSE_KERNELS", None)
        else:
            os.environ["EDGEFUSE_KERNELS"] = old


@contextlib.contextmanager
def _count_fused_ops() -> Iterator[collections.Counter]:
    """Count the calls of ``edgefuse.kernels.ops``' public ops in this thread, by their code objects
    (a profile hook for the block's duration: nothing is patched, however the ops are imported)."""
    from edgefuse.kernels import ops

    codes = {getattr(ops, name).__code__: name for name in _PUBLIC_OPS}
    calls: collections.Counter = collections.Counter()

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            calls[codes[frame.f_code]] += 1

    old = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield calls
    finally:
        sys.setprofile(old)


def _model_inputs(model, subset: Sequence[str], batch: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    from edgefuse.export import sample_inputs

    specs = [s for s in model.specs if s.name in subset]
    return {k: torch.from_numpy(v).to(device) for k, v in sample_inputs(specs, batch, model.norm, seed).items()}


def _load_model(checkpoint: str | Path):
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.specs import default_subsets, subset_name

    model, _ = load_checkpoint(checkpoint)
    return model, [(subset_name(s, model.names), s) for s in default_subsets(model.names)]


def check_model(
    checkpoint: str | Path,
    device: str = "cuda",
    batches: Sequence[int] = (1, 8),
    dtype: torch.dtype = torch.float32,
    progress: Callable[[Case], None] | None = None,
) -> tuple[list[Case], dict[str, int]]:
    """A trained model's logits on every default sensor subset, the model cast to ``dtype`` (as
    the torch engine's ``precision`` casts it) and its fused ops on the kernels on ``device``
    (interpreted on a CPU), against the float32 model on the CPU reference ops. A case passes
    when the kernels' largest logit error is within MODEL_FLOOR[dtype] of the largest |logit|,
    or within MODEL_SLACK times the error of the reference ops on ``device`` in ``dtype``
    (torch's own kernels there: cuBLAS, not the CPU's BLAS). Returns the cases and the fused
    ops one all-sensor forward calls (none: the kernels do not touch this model)."""
    if dtype not in MODEL_FLOOR:
        raise EdgefuseError(f"expected a model dtype in {[_short(d) for d in MODEL_FLOOR]}, got {dtype}")
    model, subsets = _load_model(checkpoint)
    kernels = "interpret" if device == "cpu" else None  # on CUDA tensors dispatch picks Triton by itself
    here = _to_device(model, device, dtype)
    with torch.inference_mode(), _count_fused_ops() as calls, _kernels_env(kernels):
        here(_model_inputs(model, model.names, 1, device, 0))
    calls = dict(calls)
    cases = []
    for name, subset in subsets:
        for b in batches:
            label = f"{name} B={b}"
            try:
                inputs = _model_inputs(model, subset, b, device, seed=b)
                with torch.inference_mode():
                    with _kernels_env("reference"):
                        cpu = model({k: v.cpu() for k, v in inputs.items()}).double()
                        torch_here = cpu if here is model else here(inputs).double().cpu()
                    with _kernels_env(kernels):
                        fused = here(inputs).double().cpu()
                scale = max(1.0, float(cpu.abs().max()))
                allowed = max(MODEL_FLOOR[dtype] * scale, MODEL_SLACK * float((torch_here - cpu).abs().max()))
                err = float((fused - cpu).abs().max()) if bool(torch.isfinite(fused).all()) else math.inf
                ratio, error = err / allowed, None if math.isfinite(err) else "a NaN or infinite logit"
                agree = float((fused.argmax(1) == cpu.argmax(1)).double().mean())
                if agree < 1.0 and ratio <= 1.0:
                    label += f" (top-1 agrees on {agree:.0%}: near-ties)"
            except Exception as e:
                ratio, error = math.inf, error_line(e, 500)
            case = Case(
                "model", label, _short(dtype), round(ratio, 4) if math.isfinite(ratio) else None, ratio <= 1.0, error
            )
            cases.append(case)
            if progress:
                progress(case)
    return cases, calls


def _to_device(model, device: str, dtype: torch.dtype = torch.float32):
    """``model`` on ``device`` in ``dtype`` (its input statistics stay float32); a copy unless that is ``model``."""
    import copy

    return copy.deepcopy(model).to(device=device, dtype=dtype) if device != "cpu" or dtype != torch.float32 else model


def _quiet_interpreter() -> None:
    """The interpreter runs ``tl.exp`` in numpy, which warns on overflow where the GPU quietly
    gives inf: ``sigmoid(x) = 1 / (1 + exp(-x))`` of a large negative x (a
    sigmoid gate, a masked-out softmax term), whose result (0, or a discarded value) is exact.
    The comparison against the reference judges the outputs; the warnings only bury them."""
    import warnings

    warnings.filterwarnings("ignore", message="overflow encountered in exp", category=RuntimeWarning)


def _use_interpreter() -> None:
    """Make the kernels interpreted: set TRITON_INTERPRET before Triton is imported, or refuse if
    it already was without it. Triton decides compiled or interpreted as each ``@triton.jit``
    function is decorated, its own library's included (``tl.sum`` and the like, when
    ``triton.language`` is imported), so an interpreted kernel calling a compiled one fails."""
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise EdgefuseError(
            "--interpret must come before Triton is imported, but this process imported it without "
            "TRITON_INTERPRET=1; run it in a fresh process, or set TRITON_INTERPRET=1 first"
        )
    os.environ["TRITON_INTERPRET"] = "1"


def prepare(args: argparse.Namespace, runs_kernels: bool | None = None) -> tuple[str, dict, float]:
    """The device to check on, the output record (with the platform report, printed), and the
    start time; EdgefuseError when the Triton kernels cannot run here and the command runs them
    (``runs_kernels``, default: ``args.check``)."""
    runs_kernels = args.check if runs_kernels is None else runs_kernels
    if args.interpret:
        _use_interpreter()
        _quiet_interpreter()
        device = "cpu"
    else:
        device = args.device or "cuda"
        if device.startswith("cuda:") and torch.cuda.is_available():
            torch.cuda.set_device(torch.device(device))  # the checks below are of the current device
    t0 = time.time()
    rec = report()
    print(format_report(rec), flush=True)
    out: dict = {"format": "edgefuse-kernels-selfcheck/1", "report": rec}
    if runs_kernels and rec["versions"]["triton"] is None:
        raise EdgefuseError(
            f"this runs the Triton kernels, and Triton cannot be imported here "
            f"({rec['versions']['triton_import_error']}); to run them, pip install triton"
        )
    if runs_kernels and device != "cpu" and not rec["kernels_can_run"]:
        raise EdgefuseError(
            f"this runs the Triton kernels on a CUDA GPU, and they cannot run here: {rec['why']}"
            + (f"; to run them, {rec['remedy']}" if rec["remedy"] else "")
            + ("" if rec["devices"] else " (--check --interpret checks them on the CPU)")
        )
    return device, out, t0


def finish(args: argparse.Namespace, out: dict, t0: float, failed: int) -> int:
    out["seconds"] = round(time.time() - t0, 1)
    if args.json:
        write_json(out, args.json)
        print(f"wrote {args.json}")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    """``edgefuse kernels``: 0 all good, 1 a case failed; EdgefuseError (exit 2) when it cannot run here."""
    device, out, t0 = prepare(args)
    failed = (check_model_command if args.checkpoint is not None else check_ops_command)(args, device, out)
    return finish(args, out, t0, failed)


def check_ops_command(args: argparse.Namespace, device: str, out: dict) -> int:
    """--check of the ops at synthetic shapes; returns the failed cases."""
    if not args.check:
        return 0
    dtypes = [getattr(torch, args.dtype)] if args.dtype else None
    batches, dim, widths = _shapes(device, args.batch, args.dim, args.widths)
    print(
        f"\ncheck on {device}{' (interpreted)' if args.interpret else ''}: B {list(batches)}, D={dim}, "
        f"K={list(widths)}; "
        "error / tolerance against float64 (<= 1 passes)",
        flush=True,
    )
    cases = check(device, batches, dim, widths, dtypes, progress=_print_case)
    failed = sum(not c.ok for c in cases)
    print(f"{len(cases) - failed} of {len(cases)} cases pass", flush=True)
    out["check"] = {
        "device": device,
        "interpreted": bool(args.interpret),
        "batches": list(batches),
        "dim": dim,
        "widths": list(widths),
        "cases": [asdict(c) for c in cases],
    }
    return failed


def model_batches_dtype(args: argparse.Namespace, device: str) -> tuple[tuple[int, ...], torch.dtype]:
    """--checkpoint's batches and dtype, checked."""
    if args.dim or args.widths:
        raise EdgefuseError("--checkpoint takes the model's own widths; drop --dim and --widths")
    batches = tuple(args.batch or (1, 8))
    if min(batches) < 1:
        raise EdgefuseError(f"expected batch sizes >= 1, got {list(batches)}")
    dtype = getattr(torch, args.dtype or "float32")
    if dtype == torch.bfloat16 and device == "cpu":
        raise EdgefuseError(
            "--dtype bfloat16 cannot be checked in the interpreter (its bfloat16 tl.dot is wrong); "
            "check float32 or float16 here, bfloat16 on a GPU"
        )
    return batches, dtype


def check_model_command(args: argparse.Namespace, device: str, out: dict) -> int:
    """``--checkpoint``: --check of the trained model, every default sensor subset; returns the failed cases."""
    batches, dtype = model_batches_dtype(args, device)
    if not args.check:
        return 0
    print(
        f"\ncheck of {args.checkpoint} in {_short(dtype)} on {device}{' (interpreted)' if args.interpret else ''}: "
        f"B {list(batches)}; logit error / allowed against the float32 CPU reference ops (<= 1 passes)",
        flush=True,
    )
    cases, calls = check_model(args.checkpoint, device, batches, dtype, progress=_print_case)
    failed = sum(not c.ok for c in cases)
    ops = ", ".join(f"{k} x{v}" for k, v in calls.items()) or "none: the kernels do not change this model"
    print(f"{len(cases) - failed} of {len(cases)} cases pass; fused ops per forward: {ops}", flush=True)
    out["check"] = {
        "device": device,
        "interpreted": bool(args.interpret),
        "checkpoint": str(args.checkpoint),
        "dtype": _short(dtype),
        "batches": list(batches),
        "fused_ops_per_forward": calls,
        "cases": [asdict(c) for c in cases],
    }
    return failed


def _print_case(c: Case) -> None:
    how = f"{c.error_over_tolerance:.3g}" if c.error_over_tolerance is not None else "-"
    print(
        f"{'ok' if c.ok else 'FAIL':<5}{c.op:<18}{c.dtype:<16}{how:>8}  {c.case}"
        + (f"\n     {c.error}" if c.error else ""),
        flush=True,
    )
