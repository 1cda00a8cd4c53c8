"""Per-modality encoders, one per kind: 2-D CNN (image), 1-D CNN (signal), MLP (vector), embedding bag (tokens).

Every encoder maps ``[B, *spec.shape]`` to ``[B, out_features]`` and normalises its input
with a (mean, std) stored as buffers, so exported graphs carry the normalisation too.
Any ``nn.Module`` with the same contract can replace one (see ``resolve_encoder``).
"""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec


class KeepFloat32(nn.Module):
    """Mixin: the module's ``_float32_buffers`` (input statistics) stay float32 when the model is
    cast to another dtype (``model.half()``, ``.to(torch.bfloat16)``); device moves apply to
    them as usual. A sensor's raw values and offset may not survive float16 (a depth image in
    mm reaches 65535, past float16's 65504; a mean of 1234.5 rounds to 1234), so inputs are
    normalised in float32 and only then cast to the dtype the model computes in."""

    _float32_buffers: tuple[str, ...] = ()

    def _apply(self, fn, *args, **kwargs):
        kept = {n: getattr(self, n) for n in self._float32_buffers}
        super()._apply(fn, *args, **kwargs)
        for n, t in kept.items():
            moved = getattr(self, n)
            setattr(self, n, t.to(device=moved.device, dtype=torch.promote_types(moved.dtype, torch.float32)))
        return self


def norm_shape(spec: ModalitySpec) -> tuple[int, ...]:
    """The shape per-channel statistics broadcast in over one sample: ``[C, 1, 1]`` for an image,
    ``[C, 1]`` for a signal, ``[F]`` (each feature its own channel) for a vector."""
    if spec.kind == "image":
        return (spec.shape[0], 1, 1)
    if spec.kind == "signal":
        return (spec.shape[0], 1)
    return tuple(spec.shape)


class Normalize(KeepFloat32):
    """``(x - mean) / std`` in float32 (float64 in a float64 model), returned in the dtype the
    model computes in (the dtype of the module's last cast). ``mean`` and ``std`` are scalars or
    per-channel sequences, laid out in ``shape`` (see ``norm_shape``)."""

    _float32_buffers = ("mean", "std")

    def __init__(self, mean=0.0, std=1.0, shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        m, sd = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        if m.ndim or sd.ndim:
            if shape is None:
                raise EdgefuseError("per-channel statistics need the shape they broadcast in")
            m, sd = (t.expand(shape).clone() if t.ndim == 0 else t.reshape(shape) for t in (m, sd))
        self.register_buffer("mean", m)
        self.register_buffer("std", sd)
        # not saved; every cast of the model casts it: its dtype is the one the model computes in
        self.register_buffer("_dtype_probe", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x.to(self.mean.dtype) - self.mean) / self.std
        return y.to(self._dtype_probe.dtype)


class ImageEncoder(nn.Module):
    """conv3x3(16) -> pool -> conv3x3(32) -> pool -> avg-pool to <= 4x4 -> linear."""

    def __init__(self, spec: ModalitySpec, width: int = 64, mean=0.0, std=1.0) -> None:
        super().__init__()
        c, h, w = spec.shape
        self.norm = Normalize(mean, std, norm_shape(spec))
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        hh, ww = -(-h // 4), -(-w // 4)
        # a divisible output size keeps the pooling an AveragePool in ONNX
        self.pool_hw = (_largest_divisor_le(hh, 4), _largest_divisor_le(ww, 4))
        self.pool = nn.AvgPool2d((hh // self.pool_hw[0], ww // self.pool_hw[1]))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * self.pool_hw[0] * self.pool_hw[1], width), nn.ReLU())
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(self.norm(x))))


class SignalEncoder(nn.Module):
    """conv1d k5 (16) -> pool -> conv1d k5 (32) -> pool -> avg-pool to <= 8 -> linear."""

    def __init__(self, spec: ModalitySpec, width: int = 64, mean=0.0, std=1.0) -> None:
        super().__init__()
        c, length = spec.shape
        self.norm = Normalize(mean, std, norm_shape(spec))
        self.conv = nn.Sequential(
            nn.Conv1d(c, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2, ceil_mode=True),
            nn.Conv1d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2, ceil_mode=True),
        )
        ll = -(-(-(-length // 2)) // 2)
        self.pool_len = _largest_divisor_le(ll, 8)
        self.pool = nn.AvgPool1d(ll // self.pool_len)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * self.pool_len, width), nn.ReLU())
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(self.norm(x))))


class VectorEncoder(nn.Module):
    """Two-layer MLP."""

    def __init__(self, spec: ModalitySpec, width: int = 64, mean=0.0, std=1.0) -> None:
        super().__init__()
        (d,) = spec.shape
        self.norm = Normalize(mean, std, norm_shape(spec))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * width), nn.ReLU(), nn.Linear(2 * width, width), nn.ReLU())
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))


class TokenEncoder(nn.Module):
    """Embedding bag (mean of token embeddings) -> linear; exported as Gather + ReduceMean."""

    def __init__(self, spec: ModalitySpec, width: int = 64, mean=0.0, std=1.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(spec.vocab_size, width)
        self.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x.long()).mean(dim=1))


ENCODERS: dict[str, type[nn.Module]] = {
    "image": ImageEncoder,
    "signal": SignalEncoder,
    "vector": VectorEncoder,
    "tokens": TokenEncoder,
}


def build_encoder(spec: ModalitySpec, width: int = 64, norm: tuple | None = None) -> nn.Module:
    mean, std = norm if norm is not None else (0.0, 1.0)
    return ENCODERS[spec.kind](spec, width=width, mean=mean, std=std)


def resolve_encoder(spec: ModalitySpec, module: nn.Module) -> tuple[nn.Module, int]:
    """Check a user encoder on a dummy batch; return it and its output width."""
    if not isinstance(module, nn.Module):
        raise EdgefuseError(f"encoder for {spec.name!r}: expected an nn.Module, got {type(module).__name__}")
    if spec.kind == "tokens":
        dummy = torch.zeros((2, *spec.shape), dtype=torch.int64)
    else:
        dummy = torch.zeros((2, *spec.shape))
    was = module.training
    module.eval()
    with torch.no_grad():
        try:
            out = module(dummy)
        except Exception as e:
            raise EdgefuseError(
                f"encoder for {spec.name!r} failed on a [2, {', '.join(map(str, spec.shape))}] batch: {e}"
            ) from e
    module.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgefuseError(f"encoder for {spec.name!r}: expected output [B, features], got {got}")
    return module, int(out.shape[1])


def _largest_divisor_le(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)
