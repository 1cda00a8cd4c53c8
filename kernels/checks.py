"""What each fused op accepts: shapes, options, masks, devices and dtypes, checked alike on both paths.

The Triton launchers call these with ``kernel=True``, which adds what only the kernel needs
(contiguous tensors, float32/float16/bfloat16); ``edgefuse.kernels.ops`` calls them on its
reference path, so a call the kernel would refuse fails the same way on a CPU. They read
shapes, dtypes and devices only, so exported graphs gain no operator. Each raises ValueError
naming what it expected and what it got. No Triton here: the reference path must work where
Triton is not installed.
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import torch

#: the projection's activations (its kernel's ACT codes)
ACTS = {"none": 0, "relu": 1, "gelu": 2, "tanh": 3}
GATE_MODES = ("softmax", "sigmoid")
GATE_MODES_SAID = " or ".join(map(repr, GATE_MODES))  # 'softmax' or 'sigmoid' (for errors)
#: the dtypes the kernels compute in
KERNEL_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def tensors(
    op: str,
    ref: torch.Tensor,
    named: Iterable[tuple[str, torch.Tensor | None]],
    any_dtype: tuple[str, ...] = (),
    kernel: bool = False,
) -> None:
    """Every ``(name, tensor)`` of ``named`` (None = absent, skipped) is on ``ref``'s device and,
    unless its name is in ``any_dtype``, of ``ref``'s dtype; for the kernel also contiguous, and
    ``ref`` float32/float16/bfloat16. Raises ValueError naming it.

    It runs on every launch: ``ref``'s dtype and device are read once, and a caller with
    computed names passes them cached (see ``_projection_names``), not built per call."""
    dtype, device = ref.dtype, ref.device
    if kernel and dtype not in KERNEL_FLOATS:
        raise ValueError(f"{op}: expected float32/float16/bfloat16 inputs, got {dtype}")
    for what, t in named:
        if t is None:
            continue
        if t.device != device:
            raise ValueError(f"{op}: {what} is on {t.device}, expected {device}")
        if t.dtype != dtype and what not in any_dtype:
            raise ValueError(f"{op}: {what} has dtype {t.dtype}, expected {dtype}")
        if kernel and not t.is_contiguous():
            raise ValueError(f"{op}: {what} must be contiguous (call .contiguous()), got strides {t.stride()}")


@functools.lru_cache(maxsize=None)
def _projection_names(n: int) -> tuple[str, ...]:
    """The names ``tensors`` gives the projection's weights, inputs and bias, built once per N."""
    return (*(f"weight {i}" for i in range(n)), *(f"input {i}" for i in range(n)), "bias")


def projection(
    xs: Sequence[torch.Tensor | None],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    act: str,
    kernel: bool = False,
) -> torch.Tensor:
    """``xs[i] [B, K_i]`` (None = absent, at least one present), ``weights[i] [D, K_i]``,
    ``bias [N, D]`` (any float dtype: the kernel reads it as float32) or None, ``act`` in
    ``ACTS``; returns the first present input.

    The launcher runs it on every call, so the common case reads each shape once and builds no string."""
    if act not in ACTS:
        raise ValueError(f"fused_projection: act must be one of {sorted(ACTS)}, got {act!r}")
    if len(xs) != len(weights) or not xs:
        raise ValueError(
            f"fused_projection: expected one weight per input (N >= 1), got {len(xs)} inputs and {len(weights)} weights"
        )
    first = next((i for i, x in enumerate(xs) if x is not None), None)
    if first is None:
        raise ValueError("fused_projection: expected at least one present input, got all None")
    ref, w0 = xs[first], weights[0].shape
    if len(w0) != 2 or w0[0] < 1:
        raise ValueError(f"fused_projection: weight 0 must be [D, K_0] with D >= 1, got {list(w0)}")
    if ref.dim() != 2:
        raise ValueError(f"fused_projection: input {first} must be [B, K_{first}], got {list(ref.shape)}")
    if not ref.dtype.is_floating_point:
        raise ValueError(f"fused_projection: expected floating-point inputs, got {ref.dtype}")
    b, d = ref.shape[0], w0[0]
    for i, (x, w) in enumerate(zip(xs, weights)):
        ws = w.shape
        if len(ws) != 2 or ws[0] != d:
            raise ValueError(f"fused_projection: weight {i} must be [D={d}, K_{i}], got {list(ws)}")
        if x is not None:
            s = x.shape
            if len(s) != 2 or s[0] != b or s[1] != ws[1]:
                raise ValueError(f"fused_projection: input {i} must be [B={b}, K_{i}={ws[1]}], got {list(s)}")
    if bias is not None and bias.shape != (len(xs), d):
        raise ValueError(f"fused_projection: bias must be [N={len(xs)}, D={d}], got {list(bias.shape)}")
    tensors("fused_projection", ref, zip(_projection_names(len(xs)), (*weights, *xs, bias)), ("bias",), kernel)
    return ref


def _pair(op: str, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    """Float ``x [B, K1]`` and ``y [B, K2]``: (B, K1, K2)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{op}: expected x [B, K1] and y [B, K2] with the same B, got {list(x.shape)} and {list(y.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise ValueError(f"{op}: expected floating-point inputs, got {x.dtype}")
    return x.shape[0], x.shape[1], y.shape[1]


def bilinear(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: bool = False
) -> tuple[int, int, int, int]:
    """``x [B, K1]``, ``y [B, K2]``, ``weight [O, K1, K2]``, ``bias [O]`` or None; returns (B, K1, K2, O)."""
    b, k1, k2 = _pair("bilinear", x, y)
    if weight.dim() != 3 or tuple(weight.shape[1:]) != (k1, k2):
        raise ValueError(f"bilinear: expected weight [O, {k1}, {k2}], got {list(weight.shape)}")
    o = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bilinear: expected bias [{o}], got {list(bias.shape)}")
    tensors("bilinear", x, [("x", x), ("y", y), ("weight", weight), ("bias", bias)], (), kernel)
    return b, k1, k2, o


def mfb(
    x: torch.Tensor,
    y: torch.Tensor,
    u_w: torch.Tensor,
    u_b: torch.Tensor | None,
    v_w: torch.Tensor,
    v_b: torch.Tensor | None,
    factors: int,
    present: torch.Tensor | None,
    kernel: bool = False,
) -> tuple[int, int, int, int]:
    """``x [B, K1]``, ``y [B, K2]``, ``u_w [O*factors, K1]``, ``v_w [O*factors, K2]``, both
    biases ``[O*factors]`` or neither, ``present [B, 2]`` bool or None; returns (B, K1, K2, O*factors)."""
    if factors < 1:
        raise ValueError(f"mfb: factors must be >= 1, got {factors}")
    b, k1, k2 = _pair("mfb", x, y)
    rows = u_w.shape[0] if u_w.dim() else 0
    if u_w.shape != (rows, k1) or v_w.shape != (rows, k2) or rows % factors:
        raise ValueError(
            f"mfb: expected u_w [O*{factors}, {k1}] and v_w [O*{factors}, {k2}], got {list(u_w.shape)} and "
            f"{list(v_w.shape)}"
        )
    if (u_b is None) != (v_b is None) or (u_b is not None and (u_b.shape != (rows,) or v_b.shape != (rows,))):
        got = " and ".join("None" if t is None else str(list(t.shape)) for t in (u_b, v_b))
        raise ValueError(f"mfb: expected both biases [{rows}] or neither, got {got}")
    if present is not None and (present.shape != (b, 2) or present.dtype != torch.bool):
        raise ValueError(f"mfb: expected present [B={b}, 2] bool, got {list(present.shape)} {present.dtype}")
    tensors(
        "mfb",
        x,
        [("x", x), ("y", y), ("u_w", u_w), ("v_w", v_w), ("u_b", u_b), ("v_b", v_b), ("present", present)],
        ("present",),
        kernel,
    )
    return b, k1, k2, rows


def gated(
    feats: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, mode: str, kernel: bool = False
) -> tuple[int, int, int]:
    """``feats [B, N, D]``, float ``logits [B, N]`` or ``[B, N, D]``, ``mask [B, N]`` bool, ``mode``
    in ``GATE_MODES``; returns (B, N, D)."""
    if mode not in GATE_MODES:
        raise ValueError(f"gated_fusion: mode must be {GATE_MODES_SAID}, got {mode!r}")
    if feats.dim() != 3:
        raise ValueError(f"gated_fusion: expected feats [B, N, D], got {list(feats.shape)}")
    if not feats.dtype.is_floating_point:
        raise ValueError(f"gated_fusion: expected floating-point feats, got {feats.dtype}")
    b, n, d = feats.shape
    if tuple(logits.shape) not in ((b, n), (b, n, d)):
        raise ValueError(f"gated_fusion: expected logits [{b}, {n}] or [{b}, {n}, {d}], got {list(logits.shape)}")
    if tuple(mask.shape) != (b, n) or mask.dtype != torch.bool:
        raise ValueError(f"gated_fusion: expected mask [{b}, {n}] bool, got {list(mask.shape)} {mask.dtype}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"gated_fusion: expected floating-point logits, got {logits.dtype}")
    tensors("gated_fusion", feats, [("feats", feats), ("logits", logits), ("mask", mask)], ("logits", "mask"), kernel)
    return b, n, d
