"""Fusion models for N modalities: early, mid (8 ops), late (5 combiners), multimodal transformer,
and the missing-modality strategies (per-subset models, masked adaptive gating, cross-modal imputation).

Every model: ``forward(inputs: dict[str, Tensor], present: Tensor | None = None) -> logits [B, C]``,
accepting any non-empty subset of its modalities (see ``edgefuse.fusion._inputs.prepare_inputs``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgefuse.errors import EdgefuseError
from edgefuse.fusion._inputs import prepare_inputs
from edgefuse.fusion.encoders import KeepFloat32, Normalize, build_encoder, norm_shape, resolve_encoder
from edgefuse.fusion.ops import MID_OPS, OP_ACTIVATION, MultiProjection, TransformerBlock, masked_softmax
from edgefuse.kernels.exporting import is_exporting
from edgefuse.kernels.reference import widened
from edgefuse.specs import ModalitySpec, all_subsets, check_specs, subset_name


def _head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class FusionModel(nn.Module):
    """Base class: input checking, per-modality encoders, the config that rebuilds the model.

    Args:
        specs: the modalities, in order (the order of the presence mask's columns).
        num_classes: number of output logits.
        dim: shared embedding width D.
        dropout: dropout before the classifier.
        norm: ``{name: (mean, std)}`` input normalisation per modality (stored in the weights).
        encoders: optional ``{name: nn.Module}`` replacing the built-in encoder of a modality.
    """

    fusion_name: ClassVar[str] = ""

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        num_classes: int,
        dim: int = 64,
        dropout: float = 0.1,
        norm: Mapping[str, Sequence[float]] | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.specs = check_specs(specs)
        self.names = [s.name for s in self.specs]
        if num_classes < 2:
            raise EdgefuseError(f"expected num_classes >= 2, got {num_classes}")
        self.num_classes, self.dim, self.dropout = int(num_classes), int(dim), float(dropout)
        # per modality (mean, std): scalars, or per-channel lists (see encoders.norm_shape)
        self.norm = {k: (_stat(v[0]), _stat(v[1])) for k, v in (norm or {}).items()}
        self.custom_encoders = sorted(encoders or {})
        unknown = set(self.custom_encoders) - set(self.names)
        if unknown:
            raise EdgefuseError(f"encoders names unknown modality {sorted(unknown)}; expected names from {self.names}")
        self._extra: dict[str, Any] = {}
        self._aux: dict[str, torch.Tensor] = {}

    # -- building blocks -------------------------------------------------------------------
    def _make_encoders(
        self, encoders: Mapping[str, nn.Module] | None, width: int | None = None
    ) -> tuple[nn.ModuleDict, list[int]]:
        mods, widths = nn.ModuleDict(), []
        for spec in self.specs:
            if encoders and spec.name in encoders:
                enc, w = resolve_encoder(spec, encoders[spec.name])
            else:
                enc = build_encoder(spec, width or self.dim, self.norm.get(spec.name))
                w = enc.out_features
            mods[spec.name] = enc
            widths.append(w)
        return mods, widths

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the model computes in: float32, or what ``model.half()`` / ``.to(dtype)``
        made it. Input statistics stay float32 (see ``KeepFloat32``); logits come out in it."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)

    def _encode(self, encoders: nn.ModuleDict, inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor | None]:
        # built-in encoders normalise a float32 input and cast it to the model's dtype themselves;
        # a custom encoder gets its input in the model's dtype
        dtype = self.compute_dtype if self.custom_encoders else torch.float32
        return [
            encoders[n](_cast(inputs[n], torch.float32 if n not in self.custom_encoders else dtype))
            if n in inputs
            else None
            for n in self.names
        ]

    # -- public ----------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        _, mask = prepare_inputs(self.specs, inputs, present)
        self._aux = {}
        return self.fuse(inputs, mask, static=present is None)

    def fuse(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor, static: bool) -> torch.Tensor:
        """``static`` is True when every row has the same modalities (no per-row mask given)."""
        raise NotImplementedError

    def extra_loss(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Auxiliary training loss from the last forward (None if the model has none)."""
        return None

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        main = F.cross_entropy(logits, labels)
        extra = self.extra_loss(labels)
        return main if extra is None else main + extra

    def config(self) -> dict[str, Any]:
        """JSON config that, with the state dict, rebuilds this model (see ``build_model``)."""
        return {
            "fusion": self.fusion_name,
            "specs": [s.to_dict() for s in self.specs],
            "num_classes": self.num_classes,
            "kwargs": {"dim": self.dim, "dropout": self.dropout, "norm": self.norm, **self._extra},
            "custom_encoders": self.custom_encoders,
        }


def _stat(v) -> float | list[float]:
    """A statistic as JSON keeps it: a float, or a list of floats."""
    a = np.asarray(v, dtype=np.float64)
    return float(a) if a.ndim == 0 else [float(x) for x in a.reshape(-1)]


def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A floating-point input in ``dtype``; token ids (integers) as they are."""
    return x.to(dtype) if x.is_floating_point() else x


class EarlyFusion(KeepFloat32, FusionModel):
    """Early fusion: flatten and concatenate the (normalised) raw inputs, one joint MLP.

    A missing modality's raw input is replaced by a learned per-modality fill vector, and
    the presence bits are appended, so the MLP knows what is missing (no zero-filling).
    Token modalities are embedded (mean of token embeddings) before concatenation.
    """

    fusion_name = "early"

    def __init__(self, specs, num_classes, dim=64, dropout=0.1, norm=None, encoders=None, hidden: int = 256) -> None:
        super().__init__(specs, num_classes, dim, dropout, norm, encoders)
        self._extra = {"hidden": hidden}
        self.embed = nn.ModuleDict({s.name: nn.Embedding(s.vocab_size, dim) for s in self.specs if s.kind == "tokens"})
        widths = [dim if s.kind == "tokens" else s.numel for s in self.specs]
        self.fill = nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in widths])
        self.normalize = nn.ModuleDict(
            {
                s.name: Normalize(*self.norm.get(s.name, (0.0, 1.0)), norm_shape(s))
                for s in self.specs
                if s.kind != "tokens"
            }
        )
        self.mlp = nn.Sequential(
            nn.Linear(sum(widths) + len(widths), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden // 2, num_classes),
        )

    def fuse(self, inputs, mask, static):
        parts = []
        b, dtype = mask.shape[0], self.compute_dtype
        for i, s in enumerate(self.specs):
            fill = self.fill[i].unsqueeze(0).expand(b, -1)
            if s.name not in inputs:
                parts.append(fill)
                continue
            x = inputs[s.name]
            x = (
                self.embed[s.name](x.long()).mean(1)
                if s.kind == "tokens"
                else self.normalize[s.name](x).to(dtype).flatten(1)
            )
            parts.append(torch.where(mask[:, i : i + 1], x, fill))
        parts.append(mask.to(dtype))
        return self.mlp(torch.cat(parts, dim=1))


class MidFusion(FusionModel):
    """Mid fusion: per-modality encoders, projection of all N to a shared width in one fused op,
    a fusion operator over the present modalities, and a classifier.

    ``op``: concat | sum | hadamard | bilinear | mfb | attention | gated | adaptive_gate.
    """

    fusion_name = "mid"

    def __init__(
        self,
        specs,
        num_classes,
        dim=64,
        dropout=0.1,
        norm=None,
        encoders=None,
        op: str = "concat",
        op_kwargs: dict | None = None,
    ) -> None:
        super().__init__(specs, num_classes, dim, dropout, norm, encoders)
        if op not in MID_OPS:
            raise EdgefuseError(f"unknown mid-fusion op {op!r}; expected one of {sorted(MID_OPS)}")
        self.op_name = op
        op_kwargs = dict(op_kwargs or {})
        self._extra = {"op": op, "op_kwargs": op_kwargs}
        self.encoders, widths = self._make_encoders(encoders)
        self.project = MultiProjection(widths, dim, act=OP_ACTIVATION.get(op, "relu"))
        self.op = MID_OPS[op](len(self.specs), dim, **op_kwargs)
        self.head = _head(self.op.out_features, dim, num_classes, dropout)

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Projected embeddings ``[B, N, D]`` (zeros for modalities absent from ``inputs``)."""
        return self.project(self._encode(self.encoders, inputs))

    def fuse(self, inputs, mask, static):
        e = self.embed(inputs)
        if static and is_exporting() and hasattr(self.op, "forward_static"):
            # an exported per-subset graph: every row has the same modalities, so the op runs
            # over those alone and the graph carries no per-frame mask arithmetic. Same result
            # as the masked path (the export check compares them).
            return self.head(self.op.forward_static(e, [i for i, n in enumerate(self.names) if n in inputs]))
        return self.head(self.op(e, mask))


def _vote(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Majority vote over present heads; ties broken by the highest confidence among the tied
    classes' voters. Returns a distribution whose argmax is the decision."""
    c = probs.shape[-1]
    conf, choice = probs.max(-1)  # [B, N]
    onehot = F.one_hot(choice, c).to(probs.dtype) * mask.unsqueeze(-1)
    votes = onehot.sum(1)
    best_conf = (onehot * conf.unsqueeze(-1)).amax(1)  # < 1, so it never outweighs one vote
    score = votes + 0.5 * best_conf
    return score / score.sum(-1, keepdim=True)


class LateFusion(FusionModel):
    """Late fusion: one classifier per modality, combined over the present ones.

    ``combiner``: vote (majority, confidence tie-break) | mean | weighted (``weights`` fixed,
    or learned when None) | poe (product of experts, log-space, renormalised) | max
    (renormalised). Returns log-probabilities. Training adds every present head's own loss.
    """

    fusion_name = "late"
    COMBINERS = ("vote", "mean", "weighted", "poe", "max")

    def __init__(
        self,
        specs,
        num_classes,
        dim=64,
        dropout=0.1,
        norm=None,
        encoders=None,
        combiner: str = "mean",
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(specs, num_classes, dim, dropout, norm, encoders)
        if combiner not in self.COMBINERS:
            raise EdgefuseError(f"unknown late-fusion combiner {combiner!r}; expected one of {self.COMBINERS}")
        if weights is not None and (combiner != "weighted" or len(weights) != len(self.specs) or min(weights) < 0):
            raise EdgefuseError(
                f"weights: expected {len(self.specs)} non-negative numbers with combiner='weighted', got {weights} "
                f"with {combiner!r}"
            )
        self.combiner = combiner
        self._extra = {"combiner": combiner, "weights": list(weights) if weights is not None else None}
        self.encoders, widths = self._make_encoders(encoders)
        self.heads = nn.ModuleList([_head(w, dim, num_classes, dropout) for w in widths])
        if combiner == "weighted" and weights is None:
            self.weight_logits = nn.Parameter(torch.zeros(len(self.specs)))
        else:
            self.register_buffer(
                "fixed_weights", torch.tensor(weights if weights is not None else [1.0] * len(self.specs))
            )

    def fuse(self, inputs, mask, static):
        b, dtype = mask.shape[0], self.compute_dtype
        feats = self._encode(self.encoders, inputs)
        logits = torch.stack(
            [
                h(f) if f is not None else mask.new_zeros((b, self.num_classes), dtype=dtype)
                for h, f in zip(self.heads, feats)
            ],
            1,
        )
        if self.training:
            self._aux = {"head_logits": logits, "mask": mask}
        logp = torch.log_softmax(logits, -1)
        m = mask.unsqueeze(-1)
        if self.combiner == "poe":
            return torch.log_softmax((logp * m).sum(1), -1)
        probs = logp.exp()
        if self.combiner == "vote":
            out = _vote(probs, mask)
        elif self.combiner == "max":
            mx = probs.masked_fill(~m, 0.0).amax(1)
            out = mx / mx.sum(-1, keepdim=True)
        else:
            if self.combiner == "weighted" and hasattr(self, "weight_logits"):
                w = masked_softmax(self.weight_logits.unsqueeze(0).expand(b, -1), mask)
            else:
                w = self.fixed_weights.unsqueeze(0) * mask
                # a sum is 0 only when every present weight is 0 (then the rows are 0 either way); 1e-12
                # would underflow to 0 in float16, and 0/0 is NaN
                w = w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
            out = (probs * w.unsqueeze(-1)).sum(1)
        # widened: in float16 (a cast model, autocast) 1e-12 underflows to 0, and log(0) = -inf
        return torch.log(widened(out).clamp_min(1e-12)).to(out.dtype)

    def loss(self, logits, labels):
        aux = self._aux
        per_head = F.cross_entropy(
            aux["head_logits"].flatten(0, 1), labels.repeat_interleave(len(self.specs)), reduction="none"
        )
        m = aux["mask"].flatten().float()
        head_loss = (per_head * m).sum() / m.sum().clamp_min(1.0)
        if self.combiner == "vote":  # not differentiable: the heads learn alone
            return head_loss
        return head_loss + F.nll_loss(logits, labels)


class _Tokenizer(nn.Module):
    """Turns one modality into a sequence of D-wide tokens: image patches (4x4), signal
    segments (8 samples), one token for a vector, token embeddings for tokens."""

    def __init__(self, spec: ModalitySpec, dim: int, norm: tuple[float, float] | None) -> None:
        super().__init__()
        from edgefuse.fusion.encoders import Normalize, norm_shape

        self.kind = spec.kind
        self.norm = Normalize(*(norm or (0.0, 1.0)), norm_shape(spec))
        if spec.kind == "image":
            c, h, w = spec.shape
            p = max(d for d in (4, 2, 1) if h % d == 0 and w % d == 0)
            self.proj: nn.Module = nn.Conv2d(c, dim, p, stride=p)
            self.length = (h // p) * (w // p)
        elif spec.kind == "signal":
            c, length = spec.shape
            p = max(d for d in (8, 4, 2, 1) if length % d == 0)
            self.proj = nn.Conv1d(c, dim, p, stride=p)
            self.length = length // p
        elif spec.kind == "vector":
            self.proj = nn.Sequential(nn.Linear(spec.shape[0], dim), nn.GELU(), nn.Linear(dim, dim))
            self.length = 1
        else:
            self.proj = nn.Embedding(spec.vocab_size, dim)
            self.length = spec.shape[0]
        self.pos = nn.Parameter(torch.randn(1, self.length, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "tokens":
            t = self.proj(x.long())
        elif self.kind == "vector":
            t = self.proj(self.norm(x)).unsqueeze(1)
        else:
            t = self.proj(self.norm(x)).flatten(2).transpose(1, 2)
        return t + self.pos


class MultimodalTransformer(FusionModel):
    """Multimodal transformer: every modality becomes tokens (+ positions + a modality-type
    embedding); a CLS token and ``layers`` pre-norm blocks of self-attention whose key mask
    hides the tokens of absent modalities; the CLS output is classified."""

    fusion_name = "transformer"

    def __init__(
        self, specs, num_classes, dim=64, dropout=0.1, norm=None, encoders=None, layers: int = 2, heads: int = 4
    ) -> None:
        if encoders:
            raise EdgefuseError(
                "the multimodal transformer tokenises inputs itself; custom encoders are not supported (use a "
                "mid-fusion model)"
            )
        super().__init__(specs, num_classes, dim, dropout, norm, encoders)
        self._extra = {"layers": layers, "heads": heads}
        self.tokenizers = nn.ModuleDict({s.name: _Tokenizer(s, dim, self.norm.get(s.name)) for s in self.specs})
        self.type_emb = nn.Parameter(torch.randn(len(self.specs), dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, dropout=dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def fuse(self, inputs, mask, static):
        b = mask.shape[0]
        seq, keys = [self.cls.expand(b, -1, -1)], [mask.new_ones((b, 1))]
        for i, s in enumerate(self.specs):
            if s.name not in inputs:
                continue  # absent for every row: its tokens are not even built
            tok = self.tokenizers[s.name](inputs[s.name]) + self.type_emb[i]
            seq.append(tok)
            keys.append(mask[:, i : i + 1].expand(b, tok.shape[1]))
        x, key_mask = torch.cat(seq, 1), torch.cat(keys, 1)
        for blk in self.blocks:
            x = blk(x, key_mask)
        return self.head(self.ln(x[:, 0]))


class PerSubsetModels(FusionModel):
    """One dedicated model per modality subset (2^N - 1 of them by default, or ``subsets``),
    each with its own encoders, concatenation and classifier. A row runs the model of its
    exact present subset; an unlisted subset falls back to the largest listed subset of it."""

    fusion_name = "per_subset"

    def __init__(
        self,
        specs,
        num_classes,
        dim=64,
        dropout=0.1,
        norm=None,
        encoders=None,
        subsets: Sequence[Sequence[str]] | None = None,
    ) -> None:
        if encoders:
            raise EdgefuseError("per-subset models own one encoder per subset; custom encoders are not supported here")
        super().__init__(specs, num_classes, dim, dropout, norm, encoders)
        subs = [tuple(s) for s in subsets] if subsets is not None else all_subsets(self.names)
        self.subset_keys = [subset_name(s, self.names) for s in subs]
        if len(set(self.subset_keys)) != len(self.subset_keys):
            raise EdgefuseError(f"subsets must be distinct, got {self.subset_keys}")
        self._extra = {"subsets": [list(s) for s in subs]}
        self.models = nn.ModuleDict()
        for key, sub in zip(self.subset_keys, subs):
            sub_specs = [s for s in self.specs if s.name in sub]
            self.models[key.replace("+", "__")] = MidFusion(
                sub_specs, num_classes, dim, dropout, self.norm, op="concat"
            )
        bits = [[n in sub for n in self.names] for sub in subs]
        self.register_buffer("subset_bits", torch.tensor(bits))

    def _route(self, mask: torch.Tensor) -> torch.Tensor:
        """Index of the model serving each row: its own subset, else its largest listed sub-subset."""
        inside = ~(self.subset_bits.unsqueeze(0) & ~mask.unsqueeze(1)).any(-1)  # [B, S] subset within row
        size = self.subset_bits.sum(-1).unsqueeze(0).float()
        score = torch.where(inside, size, torch.full_like(size, -1.0))
        if bool((score.amax(1) < 0).any()):
            raise EdgefuseError(f"no per-subset model covers a row's modalities; models exist for {self.subset_keys}")
        return score.argmax(1)

    def _static_key(self, names: Sequence[str]) -> str:
        """The model for rows that all have exactly ``names`` (decided in Python: export-safe)."""
        have = set(names)
        best = max(
            (k for k, sub in zip(self.models.keys(), self._extra["subsets"]) if set(sub) <= have),
            key=lambda k: len(self.models[k].names),
            default=None,
        )
        if best is None:
            raise EdgefuseError(
                f"no per-subset model covers modalities {sorted(have)}; models exist for {self.subset_keys}"
            )
        return best

    def fuse(self, inputs, mask, static):
        if static:
            model = self.models[self._static_key(list(inputs))]
            return model({n: inputs[n] for n in model.names})
        route = self._route(mask)
        keys = list(self.models.keys())
        out = mask.new_zeros((mask.shape[0], self.num_classes), dtype=self.compute_dtype)
        for idx in torch.unique(route).tolist():
            rows = route == idx
            model = self.models[keys[idx]]
            out[rows] = model({n: inputs[n][rows] for n in model.names})
        return out


class ImputationFusion(FusionModel):
    """Cross-modal imputation: a missing modality's embedding is predicted from the present ones
    (``e_m = mean_{j present} T_{j->m} e_j``), then all N embeddings are concatenated and
    classified. Training adds an imputation loss: for each present modality, how well the
    other present modalities predict its (detached) embedding."""

    fusion_name = "imputation"

    def __init__(
        self, specs, num_classes, dim=64, dropout=0.1, norm=None, encoders=None, imputation_weight: float = 1.0
    ) -> None:
        super().__init__(specs, num_classes, dim, dropout, norm, encoders)
        n = len(self.specs)
        self._extra = {"imputation_weight": imputation_weight}
        self.imputation_weight = imputation_weight
        self.encoders, widths = self._make_encoders(encoders)
        self.project = MultiProjection(widths, dim, act="relu")
        self.translate_w = nn.Parameter(torch.randn(n, n, dim, dim) / math.sqrt(dim))
        self.translate_b = nn.Parameter(torch.zeros(n, n, dim))
        self.head = _head(n * dim, dim, num_classes, dropout)

    def impute(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every modality's embedding predicted from the *other* present modalities ``[B, N, D]``."""
        n = e.shape[1]
        t = torch.einsum("bjd,jmde->bjme", e, self.translate_w) + self.translate_b  # source j -> target m
        src = mask.unsqueeze(2) & ~torch.eye(n, dtype=torch.bool, device=e.device).unsqueeze(0)  # [B, j, m]
        w = src.to(e.dtype)
        return (t * w.unsqueeze(-1)).sum(1) / w.sum(1).clamp_min(1.0).unsqueeze(-1)

    def fuse(self, inputs, mask, static):
        e = self.project(self._encode(self.encoders, inputs))
        imputed = self.impute(e, mask)
        if self.training:
            self._aux = {"e": e, "imputed": imputed, "mask": mask}
        full = torch.where(mask.unsqueeze(-1), e, imputed)
        return self.head(full.flatten(1))

    def extra_loss(self, labels):
        if not self._aux:
            return None
        e, imp, mask = self._aux["e"], self._aux["imputed"], self._aux["mask"]
        # a target counts where it is present and at least one other modality is present
        has_src = (mask.sum(1, keepdim=True) - mask.long()) > 0
        tgt = (mask & has_src).float()
        err = ((imp - e.detach()) ** 2).mean(-1)
        return self.imputation_weight * (err * tgt).sum() / tgt.sum().clamp_min(1.0)


# name -> (class, fixed kwargs)
FUSIONS: dict[str, tuple[type[FusionModel], dict[str, Any]]] = {
    "early": (EarlyFusion, {}),
    **{op: (MidFusion, {"op": op}) for op in MID_OPS},
    **{f"late_{c}": (LateFusion, {"combiner": c}) for c in LateFusion.COMBINERS},
    "transformer": (MultimodalTransformer, {}),
    "per_subset": (PerSubsetModels, {}),
    "imputation": (ImputationFusion, {}),
}

#: what each name is, for ``edgefuse fusions`` and the README
FAMILIES = {
    "early": "early",
    **{op: "mid" for op in MID_OPS if op != "adaptive_gate"},
    "adaptive_gate": "missing-modality (masked adaptive gating)",
    **{f"late_{c}": "late" for c in LateFusion.COMBINERS},
    "transformer": "multimodal transformer",
    "per_subset": "missing-modality (per-subset models)",
    "imputation": "missing-modality (cross-modal imputation)",
}


def build_model(
    fusion: str,
    specs: Sequence[ModalitySpec],
    num_classes: int,
    encoders: Mapping[str, nn.Module] | None = None,
    **kwargs: Any,
) -> FusionModel:
    """Build a fusion model by name (see ``FUSIONS``)."""
    if fusion not in FUSIONS:
        raise EdgefuseError(f"unknown fusion {fusion!r}; expected one of {sorted(FUSIONS)}")
    cls, fixed = FUSIONS[fusion]
    clash = set(fixed) & set(kwargs)
    if clash and any(kwargs[k] != fixed[k] for k in clash):
        raise EdgefuseError(
            f"fusion {fusion!r} fixes {sorted(clash)}; got conflicting { ({k: kwargs[k] for k in clash}) }"
        )
    model = cls(list(specs), num_classes, encoders=encoders, **{**kwargs, **fixed})
    model.fusion_name = fusion
    return model


def model_from_config(config: Mapping[str, Any], encoders: Mapping[str, nn.Module] | None = None) -> FusionModel:
    """Rebuild a model (untrained) from ``FusionModel.config()``."""
    missing = [n for n in config.get("custom_encoders", []) if not encoders or n not in encoders]
    if missing:
        raise EdgefuseError(
            f"this model was trained with custom encoders for {missing}; pass encoders={{name: module}} to rebuild it"
        )
    specs = [ModalitySpec.from_dict(d) for d in config["specs"]]
    kwargs = dict(config.get("kwargs", {}))
    cls, fixed = FUSIONS[config["fusion"]]
    for k in fixed:
        kwargs.pop(k, None)
    return build_model(config["fusion"], specs, config["num_classes"], encoders=encoders, **kwargs)
