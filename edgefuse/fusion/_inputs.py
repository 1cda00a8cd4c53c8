"""Input checking for fusion models: names, shapes, dtypes, finiteness and the presence mask."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from edgefuse.errors import EdgefuseError
from edgefuse.kernels.exporting import is_exporting
from edgefuse.specs import ModalitySpec


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _tracing() -> bool:
    """True while exporting, compiling or capturing a CUDA graph: data-dependent checks cannot run then."""
    return is_exporting() or _capturing()


_GIVEN: dict[tuple[tuple[bool, ...], str], torch.Tensor] = {}


def _given(bits: tuple[bool, ...], device: torch.device) -> torch.Tensor:
    """The ``[N]`` bool row of which modalities a batch carries, cached per device: built once,
    not copied from the host on every call (that copy is also illegal inside a CUDA graph)."""
    key = (bits, str(device))
    if key not in _GIVEN:
        # a normal tensor even when first built under torch.inference_mode (an engine, an
        # evaluation): an inference tensor would make every later training step on this subset
        # fail ("Inference tensors cannot be saved for backward")
        with torch.inference_mode(False):
            _GIVEN[key] = torch.tensor(bits, device=device)
    return _GIVEN[key]


def prepare_inputs(
    specs: Sequence[ModalitySpec],
    inputs: Mapping[str, torch.Tensor],
    present: torch.Tensor | None,
) -> tuple[int, torch.Tensor]:
    """Validate a batch and build its presence mask.

    Args:
        specs: the model's modalities, in order.
        inputs: ``{name: [B, *spec.shape]}`` for any non-empty subset of the modalities.
        present: optional ``[B, N]`` bool (or 0/1) per-row presence in spec order. A modality
            absent from ``inputs`` must be marked absent. Default: the keys of ``inputs``.

    Returns:
        (batch size, mask ``[B, N]`` bool).
    """
    names = [s.name for s in specs]
    if not isinstance(inputs, Mapping):
        raise EdgefuseError(f"expected inputs as a dict {{modality name: tensor}}, got {type(inputs).__name__}")
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise EdgefuseError(f"unknown modality {unknown}; this model expects names from {names}")
    if not inputs:
        raise EdgefuseError(f"empty modality subset: expected at least one of {names}, got none")
    checking = not _tracing()
    batch = None
    value_checks: list[tuple[ModalitySpec, torch.Tensor, torch.Tensor]] = []  # (spec, x, ok flag)
    for spec in specs:
        if spec.name not in inputs:
            continue
        x = inputs[spec.name]
        if not isinstance(x, torch.Tensor):
            raise EdgefuseError(f"modality {spec.name!r}: expected a torch.Tensor, got {type(x).__name__}")
        want = ("B", *spec.shape)
        if x.dim() != len(want) or tuple(x.shape[1:]) != spec.shape:
            raise EdgefuseError(
                f"modality {spec.name!r}: expected shape [{', '.join(map(str, want))}], got {list(x.shape)}"
            )
        if spec.kind == "tokens":
            if x.dtype not in (torch.int64, torch.int32):
                raise EdgefuseError(f"modality {spec.name!r}: expected integer token ids (int64), got {x.dtype}")
        elif not x.dtype.is_floating_point:
            raise EdgefuseError(
                f"modality {spec.name!r}: expected a floating-point tensor ({spec.dtype}), got {x.dtype}"
            )
        if batch is None:
            batch = x.shape[0]
        elif checking and x.shape[0] != batch:
            raise EdgefuseError(
                f"modality {spec.name!r}: expected batch size {batch} like the other inputs, got {x.shape[0]}"
            )
        if checking and x.numel():
            ok = ((x >= 0) & (x < spec.vocab_size)).all() if spec.kind == "tokens" else torch.isfinite(x).all()
            value_checks.append((spec, x, ok))
    # one device sync for every modality's value check (not one per modality); name it on failure
    if value_checks and not bool(torch.stack([ok for _, _, ok in value_checks]).all()):
        for spec, x, ok in value_checks:
            if bool(ok):
                continue
            if spec.kind == "tokens":
                lo, hi = int(x.min()), int(x.max())
                raise EdgefuseError(
                    f"modality {spec.name!r}: expected token ids in [0, {spec.vocab_size - 1}], got [{lo}, {hi}]"
                )
            raise EdgefuseError(f"modality {spec.name!r}: expected finite values, got NaN or Inf")
    assert batch is not None
    device = next(iter(inputs.values())).device
    given = _given(tuple(s.name in inputs for s in specs), device)
    if present is None:
        return batch, given.unsqueeze(0).expand(batch, len(specs))
    if not isinstance(present, torch.Tensor):
        raise EdgefuseError(f"present: expected a [B, N] bool tensor, got {type(present).__name__}")
    if checking and tuple(present.shape) != (batch, len(specs)):
        raise EdgefuseError(
            f"present: expected shape [{batch}, {len(specs)}] (batch, modalities {names}), got {list(present.shape)}"
        )
    if present.dtype != torch.bool:
        if checking and not bool(((present == 0) | (present == 1)).all()):
            raise EdgefuseError(f"present: expected bool or 0/1 values, got other values (dtype {present.dtype})")
        present = present != 0
    mask = present.to(device) & given
    if checking:
        claimed = present.to(device) & ~given
        if bool(claimed.any()):
            bad = [names[i] for i in torch.nonzero(claimed.any(0)).flatten().tolist()]
            raise EdgefuseError(f"present marks modality {bad} present, but inputs has no tensor for it")
        empty = ~mask.any(1)
        if bool(empty.any()):
            rows = torch.nonzero(empty).flatten().tolist()
            raise EdgefuseError(
                f"empty modality subset in row(s) {rows[:8]}: expected at least one present modality per row, got none"
            )
    return batch, mask
