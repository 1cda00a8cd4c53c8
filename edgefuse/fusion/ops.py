"""Mid-fusion operators over stacked modality embeddings ``E [B, N, D]`` and a presence mask ``[B, N]``.

Every operator reduces over the *present* modalities only (decision 3 of DESIGN.md): a
missing modality is excluded from a mean, a product, a softmax or an attention, or is
replaced by a learned "missing" token; its features are never zero-filled.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn

from edgefuse import kernels
from edgefuse.errors import EdgefuseError
from edgefuse.kernels.checks import ACTS, GATE_MODES, GATE_MODES_SAID
from edgefuse.kernels.reference import masked_softmax

ACTIVATIONS = tuple(ACTS)  # what the fused projection computes


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``x [B, N, ...]`` over the present entries of ``dim``."""
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def _take(e: torch.Tensor, present: Sequence[int]) -> torch.Tensor:
    """``e[:, present]`` with a constant index (no gather when every modality is present)."""
    return e if list(present) == list(range(e.shape[1])) else e[:, list(present)]


class MultiProjection(nn.Module):
    """``y_i = act(x_i W_i^T + b_i)`` for each modality (widths ``K_i`` may differ), stacked ``[B, N, D]``.

    ``normalize`` L2-normalises each output row. A modality whose features are ``None``
    (absent from the batch) gets an all-zero row that the mask excludes downstream.
    """

    def __init__(self, in_features: Sequence[int], dim: int, act: str = "relu", normalize: bool = False) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise EdgefuseError(f"activation must be one of {ACTIVATIONS}, got {act!r}")
        self.in_features, self.dim, self.act, self.normalize = list(in_features), dim, act, normalize
        self.weight = nn.ParameterList(
            [nn.Parameter(torch.empty(dim, k).uniform_(-1 / math.sqrt(k), 1 / math.sqrt(k))) for k in in_features]
        )
        self.bias = nn.Parameter(torch.zeros(len(in_features), dim))

    def forward(self, feats: Sequence[torch.Tensor | None]) -> torch.Tensor:
        return kernels.fused_projection(
            list(feats), list(self.weight), self.bias, act=self.act, normalize=self.normalize
        )

    def project_one(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The projection of modality ``i`` alone, ``[B, D]`` (the split export's encoder graphs)."""
        return kernels.fused_projection_reference(
            [x], [self.weight[i]], self.bias[i : i + 1], self.act, self.normalize
        )[:, 0]


class ConcatFusion(nn.Module):
    """Concatenate the N embeddings; a missing modality contributes a learned missing token."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.missing = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.out_features = n * dim

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        filled = torch.where(mask.unsqueeze(-1), e, self.missing.unsqueeze(0).to(e.dtype))
        return filled.flatten(1)


class SumFusion(nn.Module):
    """Sum of the present embeddings, divided by their count so every subset has the same scale."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.out_features = dim

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(e, mask)

    def forward_static(self, e: torch.Tensor, present: Sequence[int]) -> torch.Tensor:
        """``forward`` when every row has exactly the modalities ``present`` (see MidFusion.fuse)."""
        return _take(e, present).mean(1)


class HadamardFusion(nn.Module):
    """Element-wise product of the present embeddings (a missing one is the identity, 1)."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.out_features = dim

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(e)
        # 1 + e keeps a product of many small factors from collapsing to zero
        return self.norm(torch.where(mask.unsqueeze(-1), 1.0 + e, ones).prod(dim=1))


class BilinearFusion(nn.Module):
    """Full bilinear ``x_i^T W_ij x_j + b`` over every pair of present modalities, plus a linear
    term per present modality (so a single sensor still has features); averaged over the
    present terms."""

    def __init__(self, n: int, dim: int, out: int | None = None) -> None:
        super().__init__()
        out = out or dim
        self.pairs = list(itertools.combinations(range(n), 2))
        self.bilinear = nn.ModuleList([nn.Bilinear(dim, dim, out) for _ in self.pairs])
        self.linear = nn.ModuleList([nn.Linear(dim, out) for _ in range(n)])
        self.out_features = out

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        terms, present = [], []
        for (i, j), layer in zip(self.pairs, self.bilinear):
            terms.append(kernels.bilinear(e[:, i], e[:, j], layer.weight, layer.bias))
            present.append(mask[:, i] & mask[:, j])
        for i, layer in enumerate(self.linear):
            terms.append(layer(e[:, i]))
            present.append(mask[:, i])
        return masked_mean(torch.stack(terms, 1), torch.stack(present, 1))


class MFBFusion(nn.Module):
    """Low-rank factorised bilinear pooling (MFB) generalised to N: ``prod_i (U_i x_i)`` over the
    present modalities, sum-pooled over ``factors``, signed square root and L2 normalisation."""

    def __init__(self, n: int, dim: int, out: int | None = None, factors: int = 4) -> None:
        super().__init__()
        out = out or dim
        self.factors = factors
        self.proj = nn.ModuleList([nn.Linear(dim, out * factors) for _ in range(n)])
        self.out_features = out

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = e.shape[1]
        if n == 2:  # the fused kernel: both projections, the product and the pooling in one pass
            return kernels.mfb(
                e[:, 0],
                e[:, 1],
                self.proj[0].weight,
                self.proj[0].bias,
                self.proj[1].weight,
                self.proj[1].bias,
                factors=self.factors,
                present=mask,
            )
        z = torch.stack([p(e[:, i]) for i, p in enumerate(self.proj)], 1)
        prod = torch.where(mask.unsqueeze(-1), z, torch.ones_like(z)).prod(dim=1)
        return kernels.mfb_reference_pool(prod, self.factors)


class _MaskedAttention(nn.Module):
    """Multi-head attention with a key mask, written out (MatMul/Softmax) so every exporter and
    TensorRT's ONNX parser take it without a fused-attention op."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise EdgefuseError(f"attention width {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q_in: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, lq, d = q_in.shape
        lk, h = kv.shape[1], self.heads
        q = self.q(q_in).view(b, lq, h, d // h).transpose(1, 2)
        k = self.k(kv).view(b, lk, h, d // h).transpose(1, 2)
        v = self.v(kv).view(b, lk, h, d // h).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        bias = torch.zeros_like(key_mask, dtype=scores.dtype).masked_fill(~key_mask, -1e4)
        attn = torch.softmax(scores + bias[:, None, None, :], dim=-1)
        return self.o((attn @ v).transpose(1, 2).reshape(b, lq, d))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block with masked self-attention."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _MaskedAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, key_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


class AttentionFusion(nn.Module):
    """Modality tokens (embedding + modality-type embedding); ``layers`` of masked self-attention
    between the present modalities, then a learned query cross-attends to them (``mode='both'``).
    ``mode='self'`` pools by masked mean instead; ``mode='cross'`` skips the self-attention."""

    def __init__(self, n: int, dim: int, heads: int = 4, layers: int = 1, mode: str = "both") -> None:
        super().__init__()
        if mode not in ("self", "cross", "both"):
            raise EdgefuseError(f"attention mode must be 'self', 'cross' or 'both', got {mode!r}")
        self.mode = mode
        self.type_emb = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads) for _ in range(layers if mode != "cross" else 0)])
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.cross = _MaskedAttention(dim, heads) if mode != "self" else None
        self.norm = nn.LayerNorm(dim)
        self.out_features = dim

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = e + self.type_emb.unsqueeze(0)
        for blk in self.blocks:
            x = blk(x, mask)
        if self.cross is None:
            return self.norm(masked_mean(x, mask))
        q = self.query.expand(x.shape[0], 1, x.shape[2])
        return self.norm(self.cross(q, x, mask).squeeze(1))


class GatedFusion(nn.Module):
    """Gated multimodal unit generalised to N modalities (GMU, Arevalo et al. 2017).

    ``h_i = tanh(e_i)`` (the projection uses tanh), per-feature gate logits
    ``z_i = G_i [e_i ; mean_present(e)]``, gates = softmax over the present modalities,
    output ``sum_i g_i * h_i``. ``gate='sigmoid'`` uses independent sigmoid gates,
    renormalised over the present modalities.
    """

    def __init__(self, n: int, dim: int, gate: str = "softmax") -> None:
        super().__init__()
        if gate not in GATE_MODES:
            raise EdgefuseError(f"gate must be {GATE_MODES_SAID}, got {gate!r}")
        self.gate = gate
        self.gate_w = nn.Parameter(torch.randn(n, 2 * dim, dim) * (1.0 / math.sqrt(2 * dim)))
        self.gate_b = nn.Parameter(torch.zeros(n, dim))
        self.out_features = dim
        self.last_gates: torch.Tensor | None = None

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx = masked_mean(e, mask).unsqueeze(1).expand_as(e)
        logits = self._logits(torch.cat([e, ctx], dim=-1), range(e.shape[1]))
        out, _ = kernels.gated_fusion(e, logits, mask, mode=self.gate)
        return out

    def _logits(self, x: torch.Tensor, modalities: Sequence[int]) -> torch.Tensor:
        """Gate logits ``G_i [e_i ; ctx] + b_i`` for ``x[:, j] = [e_i ; ctx]``, i = modalities[j].

        N two-dimensional MatMuls (not einsum "bnk,nkd->bnd", not one batched 3-D MatMul):
        exported, each is a MatMul with a constant 2-D weight, which ONNX Runtime runs on its
        GEMM kernels and INT8 calibration quantizes into an integer GEMM; an Einsum stayed
        FP32 and a batched 3-D MatMul was dequantized every frame."""
        return torch.stack([x[:, j] @ self.gate_w[i] for j, i in enumerate(modalities)], dim=1) + _take(
            self.gate_b.unsqueeze(0), modalities
        )

    def forward_static(self, e: torch.Tensor, present: Sequence[int]) -> torch.Tensor:
        """``forward`` when every row has exactly the modalities ``present``: the mean and the
        gate normalisation run over those alone, with no per-row mask arithmetic (what an
        exported per-subset graph computes; see MidFusion.fuse)."""
        ep = _take(e, present)
        logits = self._logits(torch.cat([ep, ep.mean(1, keepdim=True).expand_as(ep)], dim=-1), present)
        if self.gate == "softmax":
            gates = torch.softmax(logits, dim=1)
        else:
            g = torch.sigmoid(logits)
            gates = g / g.sum(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
        return (gates * ep).sum(1)


class AdaptiveGate(nn.Module):
    """Masked adaptive gating: each modality scores its own reliability from its embedding
    (a scalar per sample, e.g. low for a camera at night); the scores are normalised with a
    softmax over the present modalities only and weight the embeddings."""

    def __init__(self, n: int, dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.score = nn.ModuleList(
            [nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)) for _ in range(n)]
        )
        self.out_features = dim

    def _logits(self, e: torch.Tensor, modalities: Sequence[int] | None = None) -> torch.Tensor:
        """Reliability scores ``[B, len(modalities)]`` (default: all N) of ``e [B, N, D]``."""
        idx = range(len(self.score)) if modalities is None else modalities
        return torch.cat([self.score[i](e[:, i]) for i in idx], dim=1)

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out, _ = kernels.gated_fusion(e, self._logits(e), mask, mode="softmax")
        return out

    def forward_static(self, e: torch.Tensor, present: Sequence[int]) -> torch.Tensor:
        """``forward`` when every row has exactly the modalities ``present`` (see MidFusion.fuse)."""
        return (torch.softmax(self._logits(e, present), dim=1).unsqueeze(-1) * _take(e, present)).sum(1)

    def gates(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The normalised per-modality weights ``[B, N]`` (for inspection)."""
        return masked_softmax(self._logits(e), mask)


MID_OPS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "sum": SumFusion,
    "hadamard": HadamardFusion,
    "bilinear": BilinearFusion,
    "mfb": MFBFusion,
    "attention": AttentionFusion,
    "gated": GatedFusion,
    "adaptive_gate": AdaptiveGate,
}

#: projection activation each op expects (GMU's h_i = tanh(W x_i))
OP_ACTIVATION = {"gated": "tanh", "hadamard": "tanh", "mfb": "none"}
