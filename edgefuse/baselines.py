"""Baselines beside a fusion model: does fusion help on this data?

For each sensor subset, on the same training split, a logistic regression and a plain MLP
(one hidden layer of 128, dropout 0.2) over the concatenation of the subset's sensors'
flattened inputs (normalised per channel with the training split's statistics; token
modalities as a bag of token counts). Each is trained full-batch (mini-batches of 512 past
that) with AdamW for a fixed budget and keeps the weights with the lowest validation loss.
These are what a user would try first; a fusion model below them on a subset is a red flag.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from edgefuse.data import Dataset, Split
from edgefuse.specs import default_subsets, subset_name

KINDS = ("logistic", "mlp")


def _features(data: Dataset) -> dict[str, Any]:
    """Per modality: a function from a split's raw input to ``[N, F]`` float32 features."""
    from edgefuse.train import input_stats

    stats = input_stats(data)
    out = {}
    for s in data.specs:
        if s.kind == "tokens":
            vocab = s.vocab_size

            def bag(x, vocab=vocab):
                counts = np.zeros((len(x), vocab), np.float32)
                np.add.at(counts, (np.repeat(np.arange(len(x)), x.shape[1]), x.reshape(-1).astype(np.int64)), 1.0)
                return counts / max(1, x.shape[1])

            out[s.name] = bag
        else:
            from edgefuse.fusion.encoders import norm_shape

            mean = np.asarray(stats[s.name][0], np.float32).reshape(norm_shape(s))
            std = np.asarray(stats[s.name][1], np.float32).reshape(norm_shape(s))
            out[s.name] = lambda x, m=mean, sd=std: ((x.astype(np.float32) - m) / sd).reshape(len(x), -1)
    return out


def _fit(kind: str, xtr, ytr, xval, yval, classes: int, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    d = xtr.shape[1]
    model = (
        nn.Linear(d, classes)
        if kind == "logistic"
        else nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, classes))
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2 if kind == "logistic" else 3e-3, weight_decay=1e-2)
    xtr, ytr, xval, yval = (torch.from_numpy(a) for a in (xtr, ytr, xval, yval))
    gen = torch.Generator().manual_seed(seed)
    best, best_state = float("inf"), None
    batch = min(len(xtr), 512)
    for step in range(steps):
        model.train()
        idx = torch.randperm(len(xtr), generator=gen)[:batch]
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                v = float(nn.functional.cross_entropy(model(xval), yval))
            if v <= best:
                best, best_state = v, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval()


def baselines(
    data: Dataset,
    split: str = "test",
    subsets: Sequence[Sequence[str]] | None = None,
    kinds: Sequence[str] = KINDS,
    steps: int = 300,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{kind: {subset: accuracy on split}}`` for each baseline of ``kinds`` and each subset (default:
    every subset for N <= 4, else the singles, all-but-one and all)."""
    names = data.modality_names
    subsets = subsets if subsets is not None else default_subsets(names)
    feats = _features(data)
    train: Split = data["train"]
    val = data.splits.get("val")
    val = val if val is not None and len(val) else train
    test = data[split]

    def stack(sp: Split, sub) -> np.ndarray:
        return np.concatenate([feats[m](sp.inputs[m]) for m in sub], axis=1)

    out: dict[str, dict[str, float]] = {k: {} for k in kinds}
    for sub in subsets:
        key = subset_name(sub, names)
        xtr, xval, xte = stack(train, sub), stack(val, sub), stack(test, sub)
        for kind in kinds:
            model = _fit(kind, xtr, train.labels, xval, val.labels, data.num_classes, steps, seed)
            with torch.no_grad():
                pred = model(torch.from_numpy(xte)).argmax(1).numpy()
            out[kind][key] = float((pred == test.labels).mean())
    return out


def format_baselines(fusion: Mapping[str, float], base: Mapping[str, Mapping[str, float]], fusion_name: str) -> str:
    """A table: each subset's accuracy for the fusion model and each baseline, and fusion's margin over the best."""
    kinds = list(base)
    head = f"{'subset':<28}{fusion_name[:10]:>10}" + "".join(f"{k:>10}" for k in kinds) + f"{'margin':>9}"
    lines = [head, "-" * len(head)]
    for key, acc in fusion.items():
        if not any(key in base[k] for k in kinds):
            continue
        best = max(base[k][key] for k in kinds if key in base[k])
        lines.append(
            f"{key:<28}{acc:>10.4f}"
            + "".join(f"{base[k].get(key, float('nan')):>10.4f}" for k in kinds)
            + f"{(acc - best) * 100:>+8.1f}p"
        )
    return "\n".join(lines)
