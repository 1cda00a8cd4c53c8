"""ModalitySpec: the one vocabulary (name, shape, dtype, kind, rate, range) every layer shares.

This module imports numpy only, so the runtime can use it on a device without torch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError

Kind = Literal["image", "signal", "vector", "tokens"]
KINDS: tuple[str, ...] = ("image", "signal", "vector", "tokens")

#: per-sample rank each kind expects: image (C, H, W), signal (C, L), vector (D,), tokens (L,)
_KIND_RANK = {"image": 3, "signal": 2, "vector": 1, "tokens": 1}
_FLOAT_DTYPES = ("float32", "float16", "float64")
_INT_DTYPES = ("int64", "int32")

SUBSET_SEP = "+"


@dataclass(frozen=True)
class ModalitySpec:
    """One sensor stream.

    Attributes:
        name: identifier used as the input name everywhere (models, ONNX, bundles, runtime).
        shape: per-sample shape, without the batch axis. image (C, H, W), signal (C, L),
            vector (D,), tokens (L,).
        dtype: numpy dtype name of one sample (float32 for image/signal/vector, int64 for tokens).
        kind: "image" | "signal" | "vector" | "tokens".
        rate_hz: nominal frame rate of the sensor; the runtime derives timeouts from it.
        value_range: optional (low, high) of valid values. For tokens, (0, vocab_size - 1).
    """

    name: str
    shape: tuple[int, ...]
    kind: Kind
    dtype: str = "float32"
    rate_hz: float = 10.0
    value_range: tuple[float, float] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise EdgefuseError(f"modality name must be a Python identifier (it names ONNX inputs), got {self.name!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind not in _KIND_RANK:
            raise EdgefuseError(f"modality {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        rank = _KIND_RANK[self.kind]
        if len(self.shape) != rank or any(s <= 0 for s in self.shape):
            raise EdgefuseError(
                f"modality {self.name!r}: kind {self.kind!r} expects a positive per-sample shape of "
                f"rank {rank}, got {self.shape}"
            )
        allowed = _INT_DTYPES if self.kind == "tokens" else _FLOAT_DTYPES
        if self.dtype not in allowed:
            raise EdgefuseError(
                f"modality {self.name!r}: kind {self.kind!r} expects dtype in {allowed}, got {self.dtype!r}"
            )
        if not (isinstance(self.rate_hz, (int, float)) and self.rate_hz > 0 and math.isfinite(self.rate_hz)):
            raise EdgefuseError(f"modality {self.name!r}: rate_hz must be a positive number, got {self.rate_hz!r}")
        if self.value_range is not None:
            lo, hi = (float(v) for v in self.value_range)
            if not lo < hi:
                raise EdgefuseError(
                    f"modality {self.name!r}: value_range must be (low, high) with low < high, got {self.value_range}"
                )
            object.__setattr__(self, "value_range", (lo, hi))
        if self.kind == "tokens" and self.value_range is None:
            raise EdgefuseError(f"modality {self.name!r}: tokens need value_range=(0, vocab_size - 1)")

    @property
    def vocab_size(self) -> int:
        """Number of token ids (tokens only)."""
        if self.kind != "tokens":
            raise EdgefuseError(f"modality {self.name!r} is {self.kind!r}, not tokens: it has no vocabulary")
        assert self.value_range is not None
        return int(self.value_range[1]) + 1

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "kind": self.kind,
            "dtype": self.dtype,
            "rate_hz": self.rate_hz,
            "value_range": list(self.value_range) if self.value_range is not None else None,
        }
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModalitySpec":
        known = {"name", "shape", "kind", "dtype", "rate_hz", "value_range", "meta"}
        unknown = set(d) - known
        if unknown:
            raise EdgefuseError(
                f"modality spec has unknown fields {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        vr = d.get("value_range")
        return cls(
            name=d["name"],
            shape=tuple(d["shape"]),
            kind=d["kind"],
            dtype=d.get("dtype", "float32"),
            rate_hz=float(d.get("rate_hz", 10.0)),
            value_range=tuple(vr) if vr is not None else None,  # type: ignore[arg-type]
            meta=dict(d.get("meta", {})),
        )

    def check_array(self, x: Any, *, batched: bool = True, check_finite: bool = True) -> np.ndarray:
        """Validate a numpy batch ``[B, *shape]`` (or one sample when ``batched=False``).

        Returns the array; raises ValueError naming this modality, what was expected and what was got.
        """
        if not isinstance(x, np.ndarray):
            raise EdgefuseError(f"modality {self.name!r}: expected a numpy array, got {type(x).__name__}")
        want = ("B", *self.shape) if batched else self.shape
        got = x.shape[1:] if batched else x.shape
        if (batched and x.ndim != len(self.shape) + 1) or tuple(got) != self.shape:
            raise EdgefuseError(f"modality {self.name!r}: expected shape {_fmt_shape(want)}, got {tuple(x.shape)}")
        if x.dtype != np.dtype(self.dtype):
            raise EdgefuseError(f"modality {self.name!r}: expected dtype {self.dtype}, got {x.dtype}")
        if check_finite and self.kind != "tokens" and not np.isfinite(x).all():
            raise EdgefuseError(f"modality {self.name!r}: expected finite values, got NaN or Inf")
        return x


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_specs(specs: Iterable[ModalitySpec]) -> list[ModalitySpec]:
    """Return specs as a list; raise ValueError if empty, duplicated or not ModalitySpec."""
    out = list(specs)
    if not out:
        raise EdgefuseError("expected at least one ModalitySpec, got none")
    for s in out:
        if not isinstance(s, ModalitySpec):
            raise EdgefuseError(f"expected ModalitySpec, got {type(s).__name__}")
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EdgefuseError(f"modality names must be unique, got duplicates {dup}")
    return out


def subset_name(names: Iterable[str], order: Sequence[str]) -> str:
    """Canonical subset name: members joined by '+' in spec order (e.g. 'camera+radar')."""
    members = set(names)
    unknown = members - set(order)
    if unknown:
        raise EdgefuseError(f"unknown modality {sorted(unknown)}; expected names from {list(order)}")
    if not members:
        raise EdgefuseError("a modality subset must be non-empty, got an empty subset")
    return SUBSET_SEP.join(n for n in order if n in members)


def parse_subset(name: str, order: Sequence[str]) -> tuple[str, ...]:
    """Inverse of subset_name: 'camera+radar' -> ('camera', 'radar') in spec order."""
    parts = [p for p in name.split(SUBSET_SEP) if p]
    return tuple(subset_name(parts, order).split(SUBSET_SEP))  # validates: known names, non-empty


def all_subsets(order: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, smallest first, members in spec order (2^N - 1 of them)."""
    out: list[tuple[str, ...]] = []
    for k in range(1, len(order) + 1):
        out.extend(itertools.combinations(order, k))
    return out


def default_subsets(order: Sequence[str]) -> list[tuple[str, ...]]:
    """All 2^N - 1 subsets for N <= 4; singles + all-but-one + all for larger N."""
    n = len(order)
    if n <= 4:
        return all_subsets(order)
    singles = [(m,) for m in order]
    but_one = [tuple(m for m in order if m != drop) for drop in order]
    return singles + but_one + [tuple(order)]
