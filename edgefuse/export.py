"""Export: a trained fusion model -> one ONNX graph per modality subset (or split encoders + fusion head).

Each graph is checked as it is written: ``onnx.checker``, opset <= 20, only operators that
TensorRT's ONNX parser supports, no integer-GEMM (QOperator) nodes, and outputs equal to
PyTorch within ``tolerance`` on a random batch through ONNX Runtime. ``export.json`` beside
the graphs records what the next stage (calibration) needs.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from edgefuse import __version__
from edgefuse._fs import atomic_dir, read_record
from edgefuse._releases import major_minor
from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec, default_subsets, subset_name

OPSET = 18
MAX_OPSET = 20
EXPORT_FORMAT = "edgefuse-export/1"
OUTPUT = "logits"

#: operators TensorRT's ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT 8.5
#: table), plus LayerNormalization, which TensorRT parses since 8.6 (INormalizationLayer).
TRT_SUPPORTED_OPS = frozenset(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()
)
FORBIDDEN_OPS = frozenset({"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"})

#: torch releases (major, minor) whose ONNX exporter passes tests/export on every fusion
#: strategy, each checked in a fresh venv (``pip install torch==X`` and the package; see the
#: README). setup.py admits older torch for the device side (kernels, the torch engine), which
#: does not export.
EXPORT_TESTED_TORCH = ((2, 6), (2, 7), (2, 8), (2, 10), (2, 11), (2, 12), (2, 13), (2, 14), (2, 15))
#: torch releases known to fail, with why: said when an export fails under one of them
EXPORT_KNOWN_BAD_TORCH = {
    (2, 9): "torch 2.9 traces these models with a 'batch != 1' guard and its ONNX exporter then fails on "
    "that guard (NameError: name 'L' is not defined; pytorch/pytorch#172903); torch 2.8 and 2.10 do not",
}


class ExportFailed(EdgefuseError):
    """torch's ONNX exporter failed on a graph: says which graph, under which torch, and what to do."""


def torch_export_status(version: str) -> tuple[str, str | None]:
    """What edgefuse knows of exporting under torch ``version``: ('tested', None), ('bad', why)
    or ('unknown', why or None). tools/torch_export_versions.sh checks each release it runs
    against this."""
    release = major_minor(version)
    if release is None:
        return "unknown", f"this torch's version ({version!r}) does not say which it is"
    if release in EXPORT_TESTED_TORCH:
        return "tested", None
    if release in EXPORT_KNOWN_BAD_TORCH:
        return "bad", EXPORT_KNOWN_BAD_TORCH[release]
    if release < min(EXPORT_TESTED_TORCH):
        return (
            "bad",
            "torch < 2.6 is older than any torch edgefuse's export passes with (2.5.1's exporter fails on every "
            "fusion strategy)",
        )
    return "unknown", None


def export_failure_advice(version: str) -> str:
    """What to tell a user whose export failed under torch ``version``."""
    status, why = torch_export_status(version)
    tested = "edgefuse's export is tested with torch " + ", ".join(f"{a}.{b}" for a, b in EXPORT_TESTED_TORCH)
    if status == "tested":
        return (
            f"{tested}, this one included: the cause is in this model "
            "(torch.onnx.export(..., report=True) writes a report)"
        )
    if status == "bad":
        return f"{why}. {tested}: export on a host with one of those (the bundle then runs on a device without torch)"
    if why:
        return f"{tested}; {why}"
    return f"{tested}, not {version}: if the cause is not in this model, try one of those"


class _SubsetGraph(nn.Module):
    """``forward(*tensors)`` in subset order -> logits: what one exported subset graph computes."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, xs)))


class _Shift(nn.Module):
    """``x - mean`` in float32: what remains of an encoder's input normalisation once its scale is folded
    into the first convolution (a zero-padded convolution cannot absorb the shift exactly)."""

    def __init__(self, mean: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() - self.mean


def fold_normalization(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose built-in encoders' input normalisation ``(x - mean) / std`` is folded into
    their first layer: a vector encoder's first Linear absorbs both (``W / std``, ``b - W / std @ mean``); an
    image or signal encoder's first Conv absorbs the scale, a Sub keeps the shift. The same function, in
    fewer ONNX nodes; ``model`` is left as it is."""
    import copy

    from edgefuse.fusion.encoders import ImageEncoder, Normalize, SignalEncoder, VectorEncoder

    out = copy.deepcopy(model)
    encoders = getattr(out, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict):
        return out
    with torch.no_grad():
        for enc in encoders.values():
            norm = getattr(enc, "norm", None)
            if not isinstance(norm, Normalize):
                continue
            if isinstance(enc, VectorEncoder):
                lin = enc.mlp[0]
                inv = (1.0 / norm.std).expand(lin.in_features).to(lin.weight.dtype)
                mean = norm.mean.expand(lin.in_features).to(lin.weight.dtype)
                lin.weight.mul_(inv.unsqueeze(0))
                lin.bias.sub_(lin.weight @ mean)
                enc.norm = nn.Identity()
            elif isinstance(enc, (ImageEncoder, SignalEncoder)):
                conv = enc.conv[0]
                c = conv.in_channels
                shape = (1, c) + (1,) * (conv.weight.dim() - 2)
                inv = (1.0 / norm.std).reshape(-1).expand(c) if norm.std.numel() in (1, c) else None
                if inv is None:
                    continue
                conv.weight.mul_(inv.reshape(shape).to(conv.weight.dtype))
                enc.norm = _Shift(norm.mean)
    return out


#: the widest k*D (sensors x fusion width) exported as ``_LeanGatedSubset``. Its one dense [kD, kD] gate
#: Gemm costs k^2 D^2 MACs where the model's own form costs 2 k D^2 and it stays FP32 in INT8 engines:
#: a win in nodes at the demo's 4 x 64, a loss from 4 x 256 (bench/bench_int8_scaling.py: at dim 512 the
#: all-sensor INT8 engine ran 0.7x FP32 instead of 0.45x), so wider subsets keep the model's form
LEAN_GATE_MAX_WIDTH = 256


class _LeanGatedSubset(_SubsetGraph):
    """One subset's graph of a gated-fusion (softmax) mid-fusion model, in about half the ONNX nodes of
    the model's own formulation: each present sensor's projection in one Gemm, no stacking into
    ``[B, N, D]``, and the N gate MatMuls, the context mean and the gate bias as one Gemm of the
    concatenated embeddings. The same function (the export check compares it with the model)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__(model, names)
        self.present = [i for i, n in enumerate(model.names) if n in self.names]
        op, d = model.op, model.dim
        w = op.gate_w.detach()
        self.k, self.d = len(self.present), d
        # the gate logits [e_1 .. e_k] @ blockdiag(G_i^e) + mean(e) @ [G_1^ctx .. G_k^ctx] + b, with the mean
        # folded in: mean(e) @ W = [e_1 .. e_k] @ (vstack(W, k times) / k), so one Gemm with its bias
        w_e = torch.block_diag(*[w[i, :d] for i in self.present])  # [kD, kD]
        w_ctx = torch.cat([w[i, d:] for i in self.present], dim=1)  # [D, kD]
        self.register_buffer("w_gate", w_e + w_ctx.repeat(self.k, 1) / self.k)
        self.register_buffer("b_gate", op.gate_b.detach()[self.present].reshape(1, self.k * d))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        from edgefuse.kernels.reference import act_normalize

        m = self.model
        inputs = dict(zip(self.names, xs))
        proj = m.project
        es = []
        for i in self.present:
            n = m.names[i]
            feats = m.encoders[n](inputs[n].float() if inputs[n].is_floating_point() else inputs[n])
            es.append(act_normalize(F.linear(feats, proj.weight[i], proj.bias[i]), proj.act, proj.normalize))
        if self.k == 1:  # a softmax over one gate is 1: the fused embedding is the sensor's own
            return m.head(es[0])
        flat = torch.cat(es, dim=1)  # [B, k*D]
        logits = (flat @ self.w_gate + self.b_gate).reshape(-1, self.k, self.d)
        return m.head((torch.softmax(logits, dim=1) * flat.reshape(-1, self.k, self.d)).sum(1))


def _subset_graph(model: nn.Module, members: Sequence[str], lean: bool, fold_norm: bool = False) -> nn.Module:
    """The module one subset's ONNX graph is exported from (see ``export_model``'s ``lean``)."""
    if not lean:
        return _SubsetGraph(model, members)
    from edgefuse.fusion import MidFusion
    from edgefuse.fusion.ops import GatedFusion

    folded = (fold_normalization(model) if fold_norm else model).eval()
    if (
        isinstance(folded, MidFusion)
        and isinstance(folded.op, GatedFusion)
        and folded.op.gate == "softmax"
        and not folded.custom_encoders
        and len(members) * folded.dim <= LEAN_GATE_MAX_WIDTH
    ):
        return _LeanGatedSubset(folded, members)
    return _SubsetGraph(folded, members)


class _EncoderGraph(nn.Module):
    """Split export: one sensor's encoder + its projection -> embedding ``[B, D]``."""

    def __init__(self, model: nn.Module, index: int) -> None:
        super().__init__()
        self.model, self.index, self.name = model, index, model.names[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.encoders[self.name](x.float() if x.is_floating_point() else x)
        return self.model.project.project_one(self.index, feats)


class _LeanGatedFusion(nn.Module):
    """Gated fusion (softmax gates) as the split head's graph computes it, in about half the
    ONNX nodes of the module's own formulation, which the head's latency follows at batch 1 (ONNX
    Runtime spends a few microseconds per node): the N per-modality gate MatMuls become one
    block-diagonal MatMul of the flattened embeddings plus one of the context, and the masked
    softmax one Where and one Softmax. The same function of the present modalities: the export
    check compares it with the model's own op."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        n, two_d, d = op.gate_w.shape
        w = op.gate_w.detach()
        self.n, self.d = n, d
        self.register_buffer("w_e", torch.block_diag(*[w[i, :d] for i in range(n)]))  # [N*D, N*D]
        self.register_buffer("w_ctx", torch.cat([w[i, d:] for i in range(n)], dim=1))  # [D, N*D]
        self.register_buffer("bias", op.gate_b.detach().reshape(1, n, d))

    def forward(self, e: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        m = present.unsqueeze(-1)
        em = torch.where(m, e, 0.0)  # an absent slot is never read (a NaN there stays out)
        ctx = em.sum(1) / m.to(e.dtype).sum(1).clamp_min(1.0)
        logits = (em.reshape(-1, self.n * self.d) @ self.w_e + ctx @ self.w_ctx).reshape(-1, self.n, self.d) + self.bias
        gates = torch.softmax(torch.where(m, logits, -1e9), dim=1)
        return (gates * em).sum(1)


class _HeadGraph(nn.Module):
    """Split export: embeddings ``[B, N, D]`` + presence ``[B, N]`` bool -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from edgefuse.fusion.ops import GatedFusion

        self.model = model
        op = model.op
        self.lean = _LeanGatedFusion(op) if isinstance(op, GatedFusion) and op.gate == "softmax" else None

    def forward(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        fused = self.lean(embeddings, present) if self.lean is not None else self.model.op(embeddings, present)
        return self.model.head(fused)


def sample_inputs(
    specs: Sequence[ModalitySpec], batch: int, norm: dict | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random inputs in each modality's training range (mean + std * N(0, 1)), for checks."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        if s.kind == "tokens":
            out[s.name] = rng.integers(0, s.vocab_size, size=(batch, *s.shape)).astype(np.int64)
        else:
            from edgefuse.fusion.encoders import norm_shape

            mean, std = (
                (np.asarray(v, np.float32).reshape(norm_shape(s)) if np.ndim(v) else v)
                for v in (norm or {}).get(s.name, (0.0, 1.0))
            )
            out[s.name] = (mean + std * rng.standard_normal((batch, *s.shape))).astype(np.float32)
    return out


def _to_onnx(
    module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic: list[dict]
) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = [{k: batch for k in d} for d in dynamic]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=input_names,
                output_names=output_names,
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=(tuple(shapes),) if isinstance(module, _SubsetGraph) else tuple(shapes),
                optimize=True,
                verbose=False,
            )
        except Exception as e:  # the exporter's own errors run to pages: keep the first line, chain the rest
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # (torch colours some of its messages)
            first = next((line.strip() for line in text.splitlines() if line.strip()), "").split(". ")[0][:300]
            raise ExportFailed(
                f"{path.name}: torch.onnx.export failed under torch {torch.__version__} ({type(e).__name__}: {first}). "
                f"{export_failure_advice(torch.__version__)}"
            ) from e
    # keep weights inside the .onnx file (one file per engine: simpler checksums and copies)
    model = onnx.load(str(path), load_external_data=True)
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()
    onnx.save_model(model, str(path), save_as_external_data=False)


def check_graph(path: str | Path, allow_qdq: bool = False) -> list[str]:
    """Raise ValueError if the graph fails ``onnx.checker``, uses opset > 20 or operators TensorRT
    cannot parse; return its operator types."""
    path = Path(path)
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise EdgefuseError(f"{path.name}: onnx.checker failed: {e}") from e
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > MAX_OPSET:
        raise EdgefuseError(f"{path.name}: expected opset <= {MAX_OPSET}, got {opset}")
    ops = sorted({n.op_type for n in model.graph.node})
    bad = sorted(set(ops) & FORBIDDEN_OPS)
    if bad:
        raise EdgefuseError(f"{path.name}: integer-GEMM (QOperator) nodes {bad} are not allowed; expected a Q/DQ graph")
    unsupported = sorted(set(ops) - TRT_SUPPORTED_OPS)
    if unsupported:
        raise EdgefuseError(f"{path.name}: operators {unsupported} are not supported by TensorRT's ONNX parser")
    if not allow_qdq and {"QuantizeLinear", "DequantizeLinear"} & set(ops):
        raise EdgefuseError(f"{path.name}: unexpected Q/DQ nodes in a float graph")
    return ops


def _max_diff(path: Path, feeds: dict[str, np.ndarray], expected: np.ndarray) -> float:
    """Largest |ONNX Runtime - PyTorch| over the whole batch and over its first row alone: an
    edge device runs batch 1, and a graph traced at batch 2 could hold a step that is wrong
    only there (a broadcast or a squeeze that assumed batch > 1)."""
    from edgefuse.engines.ort import OrtEngine

    with OrtEngine(path) as engine:
        got = next(iter(engine.run(feeds).values()))
        one = next(iter(engine.run({k: v[:1] for k, v in feeds.items()}).values()))
    return float(max(np.abs(got - expected).max(), np.abs(one - expected[:1]).max()))


def export_model(
    model,
    out: str | Path,
    subsets: Sequence[Sequence[str]] | None = None,
    split: bool = False,
    tolerance: float = 1e-4,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    lean: bool = True,
    fold_norm: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (a FusionModel in eval mode) to ``out``; return the ``export.json`` record.

    Args:
        subsets: modality subsets to export (default: all 2^N - 1 for N <= 4; singles,
            all-but-one and all for larger N). Ignored with ``split``.
        split: one encoder graph per sensor plus one fusion-head graph (mid-fusion models only).
        tolerance: maximum |ONNX Runtime - PyTorch| allowed on a random batch.
        source: facts about the checkpoint and data (recorded for the next stages).
        lean: per-subset graphs with less work: gated fusion's projections, context mean, gate
            MatMuls and bias in one Gemm with no stacking (``_LeanGatedSubset``). ``False``
            exports the model's own formulation.
        fold_norm: also fold the input normalisation into the encoders' first layers
            (``fold_normalization``): 2-4 fewer nodes, but INT8 weights quantized after the fold
            lost 0.3 more points on the demo model, so it is off by default.
    """
    from tqdm.auto import tqdm

    from edgefuse.fusion import MidFusion

    model = model.eval()
    names = model.names
    out = Path(out)
    record: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "edgefuse_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "specs": [s.to_dict() for s in model.specs],
        "model": model.config(),
        "source": dict(source or {}),
        "output": OUTPUT,
        "split": split,
        "lean": lean,
        "fold_norm": fold_norm,
        "graphs": {},
    }
    feeds_all = sample_inputs(model.specs, batch=5, norm=model.norm, seed=0)
    with atomic_dir(out) as tmp:
        if split:
            if not isinstance(model, MidFusion):
                raise EdgefuseError(
                    f"split export needs a mid-fusion model (encoders + projection + fusion op + head); "
                    f"got fusion {model.fusion_name!r}. Export per subset instead (without --split)."
                )
            jobs = [("encoder", i) for i in range(len(names))] + [("head", None)]
        else:
            subs = [tuple(s) for s in subsets] if subsets is not None else default_subsets(names)
            jobs = [("subset", subset_name(s, names)) for s in subs]
        for kind, key in tqdm(jobs, desc="export", unit="graph", disable=not progress):
            if kind == "subset":
                members = [n for n in key.split("+")]
                module = _subset_graph(model, members, lean, fold_norm)
                feeds = {n: feeds_all[n] for n in members}
                args = tuple(torch.from_numpy(feeds[n][:2]) for n in members)
                file, in_names, dyn = f"{key}.onnx", members, [{0: "batch"} for _ in members]
                with torch.no_grad():
                    expected = model({n: torch.from_numpy(v) for n, v in feeds.items()}).numpy()
                entry = {"kind": "subset", "modalities": members}
                name = key
            elif kind == "encoder":
                spec = model.specs[key]
                module = _EncoderGraph(model, key)
                feeds = {spec.name: feeds_all[spec.name]}
                args = (torch.from_numpy(feeds[spec.name][:2]),)
                file, in_names, dyn = f"encoder_{spec.name}.onnx", [spec.name], [{0: "batch"}]
                with torch.no_grad():
                    expected = module(torch.from_numpy(feeds[spec.name])).numpy()
                entry = {"kind": "encoder", "modalities": [spec.name]}
                name = f"encoder_{spec.name}"
            else:
                module = _HeadGraph(model)
                rng = np.random.default_rng(1)
                emb = rng.standard_normal((5, len(names), model.dim)).astype(np.float32)
                present = rng.random((5, len(names))) > 0.4
                present[:, 0] |= ~present.any(1)
                feeds = {"embeddings": emb, "present": present}
                args = (torch.from_numpy(emb[:2]), torch.from_numpy(present[:2]))
                file, in_names, dyn = "head.onnx", ["embeddings", "present"], [{0: "batch"}, {0: "batch"}]
                with torch.no_grad():
                    # the model's own op, whatever formulation the graph takes
                    expected = model.head(model.op(torch.from_numpy(emb), torch.from_numpy(present))).numpy()
                entry = {"kind": "head", "modalities": list(names)}
                name = "head"
            out_name = OUTPUT if kind != "encoder" else "embedding"
            _to_onnx(module, args, tmp / file, in_names, [out_name], dyn)
            ops = check_graph(tmp / file)
            diff = _max_diff(tmp / file, feeds, expected)
            if not diff <= tolerance:
                raise EdgefuseError(f"{file}: ONNX Runtime differs from PyTorch by {diff:.3g} > tolerance {tolerance}")
            record["graphs"][name] = {
                **entry,
                "file": file,
                "inputs": in_names,
                "output": out_name,
                "operators": ops,
                "max_abs_diff": diff,
            }
        (tmp / "export.json").write_text(json.dumps(record, indent=2))
    return record


def read_export(path: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an export folder."""
    return read_record(path, "export.json", EXPORT_FORMAT, "an export folder")
