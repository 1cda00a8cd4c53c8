"""Inference of a torch fusion model on numpy data: logits per sample, accuracy per sensor subset."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from edgefuse.data import Split
from edgefuse.fusion import FusionModel
from edgefuse.specs import default_subsets, subset_name


def to_tensors(inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


@torch.no_grad()
def predict(
    model: FusionModel, inputs: Mapping[str, np.ndarray], present: np.ndarray | None = None, batch_size: int = 1024
) -> np.ndarray:
    """Logits ``[N, C]`` for numpy inputs (any subset of the model's modalities)."""
    model.eval()
    n = len(next(iter(inputs.values())))
    out = []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        x = to_tensors({k: v[sl] for k, v in inputs.items()})
        p = torch.from_numpy(present[sl]) if present is not None else None
        out.append(model(x, p).float().numpy())
    return np.concatenate(out)


def subset_accuracy(model: FusionModel, split: Split, subsets=None) -> dict[str, float]:
    """Accuracy of every subset (default: all 2^N - 1 for N <= 4), keyed 'a+b' in spec order."""
    names = model.names
    subsets = subsets if subsets is not None else default_subsets(names)
    out = {}
    for sub in subsets:
        logits = predict(model, {k: split.inputs[k] for k in sub})
        out[subset_name(sub, names)] = float((logits.argmax(1) == split.labels).mean())
    return out
