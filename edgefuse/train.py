"""Training with modality dropout: one model learns to serve every non-empty subset of its sensors."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edgefuse.checkpoint import save_checkpoint
from edgefuse.data import Dataset
from edgefuse.errors import EdgefuseError
from edgefuse.fusion import FusionModel, build_model
from edgefuse.inference import subset_accuracy, to_tensors
from edgefuse.specs import subset_name


@dataclass
class TrainConfig:
    """Hyper-parameters of ``train``. ``modality_dropout`` is each modality's chance of being
    hidden from a training sample (rows left empty get one modality back); 0 disables it."""

    fusion: str = "gated"
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dim: int = 64
    dropout: float = 0.1
    modality_dropout: float = 0.5
    patience: int = 6
    seed: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.modality_dropout < 1.0:
            raise EdgefuseError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        for name in ("epochs", "batch_size", "dim", "patience"):
            if getattr(self, name) < 1:
                raise EdgefuseError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class TrainResult:
    model: FusionModel
    history: list[dict[str, float]]
    best_epoch: int
    val_subsets: dict[str, float]
    seconds: float


def input_stats(data: Dataset) -> dict[str, tuple[float, float]]:
    """Per-modality (mean, std) of the training split, for float modalities."""
    stats = {}
    for s in data.specs:
        if s.kind == "tokens":
            continue
        x = data["train"].inputs[s.name]
        stats[s.name] = (float(x.mean()), float(max(x.std(), 1e-6)))
    return stats


def sample_presence(batch: int, n: int, p_drop: float, gen: torch.Generator) -> torch.Tensor:
    """``[batch, n]`` bool: each modality kept with probability ``1 - p_drop``; an empty row
    gets one modality back, chosen uniformly, so every row is a non-empty subset."""
    keep = torch.rand(batch, n, generator=gen) >= p_drop
    empty = ~keep.any(1)
    if bool(empty.any()):
        pick = torch.randint(0, n, (int(empty.sum()),), generator=gen)
        keep[empty.nonzero().flatten(), pick] = True
    return keep


def train(
    data: Dataset,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    encoders=None,
    progress: bool = True,
    source: str | None = None,
) -> TrainResult:
    """Train ``config.fusion`` on ``data`` with modality dropout and early stopping on the mean
    validation accuracy over modality subsets. Writes a checkpoint to ``out`` when given;
    ``source`` ('sensorscenes' or the .npz path) is recorded so ``edgefuse eval`` finds the data."""
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(
        cfg.fusion,
        data.specs,
        data.num_classes,
        encoders=encoders,
        dim=cfg.dim,
        dropout=cfg.dropout,
        norm=input_stats(data),
        **cfg.model_kwargs,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    train_split = data["train"]
    val = data.splits.get("val")
    val_split = val if val is not None and len(val) else train_split  # no validation split: early-stop on train
    n = len(data.specs)
    history: list[dict[str, float]] = []
    best, best_epoch, best_state, best_subsets, stale = -1.0, 0, None, {}, 0
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.fusion}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        losses = []
        for batch in train_split.batches(cfg.batch_size, rng):
            if len(batch) < 2:
                continue
            x = to_tensors(batch.inputs)
            present = sample_presence(len(batch), n, cfg.modality_dropout, gen) if cfg.modality_dropout > 0 else None
            logits = model(x, present)
            loss = model.loss(logits, torch.from_numpy(batch.labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        subsets = subset_accuracy(model, val_split)
        score = float(np.mean(list(subsets.values())))
        full = subsets[subset_name(model.names, model.names)]
        history.append(
            {"epoch": epoch, "loss": float(np.mean(losses)), "val_mean_subset_acc": score, "val_all_acc": full}
        )
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_all=f"{full:.3f}", val_mean=f"{score:.3f}")
        if score > best:
            best, best_epoch, best_subsets, stale = score, epoch, subsets, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    result = TrainResult(model, history, best_epoch, best_subsets, seconds)
    if out is not None:
        save_checkpoint(
            model,
            out,
            info={
                "train_config": asdict(cfg),
                "dataset": {
                    "source": source,
                    "name": data.name,
                    "description": data.description,
                    "class_names": data.class_names,
                    "sizes": {k: len(v) for k, v in data.splits.items()},
                },
                "best_epoch": best_epoch,
                "val_subsets": best_subsets,
                "history": history,
                "train_seconds": seconds,
                "torch_threads": torch.get_num_threads(),
            },
        )
    return result
