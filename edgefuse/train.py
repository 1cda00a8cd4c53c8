"""Training with modality dropout: one model learns to serve every non-empty subset of its sensors."""

from __future__ import annotations

import copy
import math
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
from edgefuse.inference import to_tensors
from edgefuse.specs import default_subsets, subset_name


@dataclass
class TrainConfig:
    """Hyper-parameters of ``train``.

    The budget is counted in optimizer steps: ``epochs`` passes over the training set, but never
    fewer than ``min_steps`` steps (a small dataset gets many passes), or exactly ``max_steps``
    when given. The batch is ``batch_size`` capped at a quarter of the training set (at least 8).
    The learning rate warms up linearly over the first ``warmup`` share of the budget, then
    decays to 0 on a cosine; AdamW with ``weight_decay``. Early stopping watches the validation
    loss (mean over sensor subsets) every ``eval_every`` steps (default: once per epoch, at least
    every budget/40 steps); it may stop after ``stop_after`` steps (default: half of
    ``min_steps``) once ``patience`` validations in a row have not improved it, and a tie goes to
    the later model. With fewer than ``min_val`` validation samples there is no early stopping:
    the full budget runs and the last model is kept. ``modality_dropout`` is each modality's
    chance of being hidden from a training sample (rows left empty get one modality back); 0
    disables it. ``device``: ``cpu``, ``cuda`` or ``auto``; ``amp``: mixed precision on CUDA.
    """

    fusion: str = "gated"
    epochs: int = 40
    min_steps: int = 1000
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 1e-4
    dim: int = 64
    dropout: float = 0.1
    modality_dropout: float = 0.5
    patience: int = 6
    eval_every: int | None = None
    stop_after: int | None = None
    min_val: int = 30
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.modality_dropout < 1.0:
            raise EdgefuseError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        for name in ("epochs", "batch_size", "dim", "patience"):
            if getattr(self, name) < 1:
                raise EdgefuseError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise EdgefuseError(f"{name} must be >= 1 (or None), got {getattr(self, name)}")
        if self.min_steps < 0:
            raise EdgefuseError(f"min_steps must be >= 0, got {self.min_steps}")
        if not 0.0 <= self.warmup < 1.0:
            raise EdgefuseError(f"warmup must be a share of the budget in [0, 1), got {self.warmup}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise EdgefuseError(f"device must be cpu, cuda or auto, got {self.device!r}")


@dataclass
class TrainResult:
    model: FusionModel
    history: list[dict[str, float]]
    best_step: int
    val_subsets: dict[str, float]
    seconds: float
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def best_epoch(self) -> int:  # the validation round of the kept model (1-based), as before the step budget
        return next((i + 1 for i, h in enumerate(self.history) if h["step"] == self.best_step), len(self.history))


def input_stats(data: Dataset) -> dict[str, tuple[list[float], list[float]]]:
    """Per-channel (mean, std) of the training split for each float modality: over samples and pixels for
    an image's channels, samples and time for a signal's, samples for each feature of a vector (a lidar's
    range and intensity channels differ by orders of magnitude). A constant channel gets std 1."""
    stats = {}
    for s in data.specs:
        if s.kind == "tokens":
            continue
        x = data["train"].inputs[s.name].astype(np.float64)
        axes = (0, 2, 3) if s.kind == "image" else (0, 2) if s.kind == "signal" else (0,)
        mean, std = x.mean(axis=axes), x.std(axis=axes)
        std = np.where(std < 1e-6, 1.0, std)
        stats[s.name] = (mean.astype(np.float32).tolist(), std.astype(np.float32).tolist())
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


def environment() -> dict[str, Any]:
    """Versions and hardware a training ran with (recorded in the checkpoint, printed at the start)."""
    import platform

    from edgefuse import __version__
    from edgefuse._platform import cpu

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "edgefuse": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": cpu()[0],
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
    }


class _Dist:
    """This process's place in a torchrun job (world 1 without one)."""

    def __init__(self, device: str) -> None:
        import os

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if cuda and not torch.cuda.is_available():
            raise EdgefuseError("device cuda: no CUDA GPU is visible to torch")
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        self.started = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if cuda else "gloo")
                self.started = True
            if cuda:
                torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.started:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


@torch.no_grad()
def _validate(model, split, subsets, device, dist: _Dist, batch: int = 512) -> tuple[float, dict[str, float]]:
    """Mean cross-entropy over ``subsets`` and each subset's accuracy on ``split`` (each rank its share,
    summed over the ranks)."""
    model.eval()
    idx = np.arange(len(split))[dist.rank :: dist.world]
    sums = []
    for sub in subsets:
        loss = correct = 0.0
        for s in range(0, len(idx), batch):
            part = split.take(idx[s : s + batch])
            x = {k: v.to(device) for k, v in to_tensors({k: part.inputs[k] for k in sub}).items()}
            y = torch.from_numpy(part.labels).to(device)
            logits = model(x).float()
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
        sums += [loss, correct]
    totals = dist.sum(sums + [float(len(idx))])
    n = max(totals[-1], 1.0)
    names = model.names
    acc = {subset_name(sub, names): totals[2 * i + 1] / n for i, sub in enumerate(subsets)}
    return float(np.mean([totals[2 * i] / n for i in range(len(subsets))])), acc


def plan_training(cfg: TrainConfig, n_train: int, n_val: int, world: int = 1) -> dict[str, Any]:
    """The schedule ``train`` follows for a training set of ``n_train`` samples (see TrainConfig)."""
    batch = max(1, min(cfg.batch_size, max(8, n_train // 4)))
    per_rank = max(1, batch // world)
    shard = -(-n_train // world)
    per_epoch = max(1, -(-shard // per_rank))
    steps = cfg.max_steps or max(cfg.min_steps, cfg.epochs * per_epoch)
    early = n_val >= cfg.min_val
    return {
        "train_samples": n_train,
        "val_samples": n_val,
        "batch": per_rank * world,
        "batch_capped": batch < cfg.batch_size,
        "batch_per_rank": per_rank,
        "ranks": world,
        "steps_per_epoch": per_epoch,
        "steps": steps,
        "budget": "max_steps" if cfg.max_steps else ("min_steps" if steps == cfg.min_steps else "epochs"),
        "epochs": steps / per_epoch,
        "warmup_steps": int(cfg.warmup * steps),
        "lr": cfg.lr,
        "schedule": "linear warm-up, then cosine to 0",
        "weight_decay": cfg.weight_decay,
        "eval_every": cfg.eval_every or max(per_epoch, steps // 40),
        "early_stopping": early,
        "early_stopping_note": (
            "on validation loss (mean over sensor subsets); ties go to the later model"
            if early
            else f"off: the validation split has {n_val} samples (< min_val {cfg.min_val}); the full budget runs "
            "and the last model is kept"
        ),
        "stop_after": cfg.stop_after if cfg.stop_after is not None else min(steps, cfg.min_steps // 2),
        "patience": cfg.patience,
    }


def describe_plan(fusion: str, plan: dict[str, Any]) -> str:
    p = plan
    capped = " (capped by the training set)" if p["batch_capped"] else ""
    ranks = f" over {p['ranks']} ranks ({p['batch_per_rank']} each)" if p["ranks"] > 1 else ""
    return (
        f"train {fusion}: {p['train_samples']} training samples, batch {p['batch']}{capped}{ranks}; "
        f"{p['steps']} steps ({p['epochs']:.1f} epochs, budget from {p['budget']}); lr {p['lr']:g} with "
        f"{p['warmup_steps']} warm-up steps then cosine to 0, weight decay {p['weight_decay']:g}; validation "
        f"every {p['eval_every']} steps on {p['val_samples']} samples; early stopping "
        + (
            f"on validation loss after step {p['stop_after']}, patience {p['patience']}"
            if p["early_stopping"]
            else p["early_stopping_note"]
        )
    )


def train(
    data: Dataset,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    encoders=None,
    progress: bool = True,
    source: str | None = None,
    data_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``config.fusion`` on ``data`` with modality dropout on a step budget, with early
    stopping on the validation loss (see ``TrainConfig``). Writes a checkpoint to ``out`` when
    given (rank 0 of a torchrun job only); ``source`` ('sensorscenes' or the .npz path) and
    ``data_options`` (``train_size``, ``val_size``) are recorded so ``edgefuse eval`` finds the
    same data. Under ``torchrun`` each rank trains on its share of every epoch with
    DistributedDataParallel; metrics are summed over the ranks."""
    cfg = config or TrainConfig()
    dist = _Dist(cfg.device)
    try:
        return _train(data, cfg, out, encoders, progress, source, data_options or {}, dist)
    finally:
        dist.close()


def _train(data, cfg: TrainConfig, out, encoders, progress, source, data_options, dist: _Dist) -> TrainResult:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # the same epoch order on every rank
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * dist.rank)  # modality dropout: each rank its own
    device = dist.device
    model = build_model(
        cfg.fusion,
        data.specs,
        data.num_classes,
        encoders=encoders,
        dim=cfg.dim,
        dropout=cfg.dropout,
        norm=input_stats(data),
        **cfg.model_kwargs,
    ).to(device)
    train_split = data["train"]
    val = data.splits.get("val")
    val_split = val if val is not None and len(val) else train_split  # no validation split: watch train
    plan = plan_training(cfg, len(train_split), len(val) if val is not None else 0, dist.world)
    env = environment()
    show = progress and dist.main
    if show:
        print(describe_plan(cfg.fusion, plan), flush=True)
        print(
            f"  torch {env['torch']}, numpy {env['numpy']}, edgefuse {env['edgefuse']}; {env['cpu']}"
            + (f", {env['gpu']}" if env["gpu"] else "")
            + f"; device {device}",
            flush=True,
        )
    net = model
    if dist.world > 1:  # modality dropout leaves some encoders unused in a step
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps, warm = plan["steps"], plan["warmup_steps"]

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    amp = cfg.amp and device.type == "cuda"
    if cfg.amp and not amp and show:
        print("  --amp applies on CUDA only; training in float32", flush=True)
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    subsets = default_subsets(model.names)
    n = len(data.specs)
    history: list[dict[str, float]] = []
    best_loss, best_step, best_state, best_subsets, stale = math.inf, 0, None, {}, 0
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=f"train {cfg.fusion}", unit="step", disable=not show, mininterval=0.5)
    step, losses, stopped = 0, [], False
    per_rank, world = plan["batch_per_rank"], dist.world
    while step < steps and not stopped:
        order = rng.permutation(len(train_split))
        order = np.resize(order, -(-len(order) // world) * world)[dist.rank :: world]  # padded: equal shares
        for s0 in range(0, len(order), per_rank):
            idx = order[s0 : s0 + per_rank]
            if len(idx) < 2 and len(order) >= 2:  # a batch of one breaks normalisation statistics
                continue
            batch = train_split.take(idx)
            net.train()
            x = {k: v.to(device) for k, v in to_tensors(batch.inputs).items()}
            present = sample_presence(len(batch), n, cfg.modality_dropout, gen) if cfg.modality_dropout > 0 else None
            if present is not None:
                present = present.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                logits = net(x, present)
                loss = model.loss(logits.float(), torch.from_numpy(batch.labels).to(device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % plan["eval_every"] == 0 or step == steps:
                val_loss, accs = _validate(model, val_split, subsets, device, dist)
                train_loss = dist.sum([float(np.mean(losses)), 1.0])
                losses = []
                full = accs[subset_name(model.names, model.names)]
                history.append(
                    {
                        "step": step,
                        "epoch": step / plan["steps_per_epoch"],
                        "lr": float(sched.get_last_lr()[0]),
                        "loss": train_loss[0] / train_loss[1],
                        "val_loss": val_loss,
                        "val_mean_subset_acc": float(np.mean(list(accs.values()))),
                        "val_all_acc": full,
                    }
                )
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_loss=f"{val_loss:.3f}", val_all=f"{full:.3f}")
                keep = (val_loss <= best_loss) if plan["early_stopping"] else True  # ties: the later model
                if keep:
                    best_loss, best_step, best_subsets, stale = val_loss, step, accs, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                    if stale >= cfg.patience and step >= plan["stop_after"]:
                        stopped = True
                        break
            if step >= steps:
                break
    bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    model = model.to("cpu").eval()
    seconds = time.perf_counter() - start
    plan["stopped_at"], plan["stopped_early"] = step, stopped
    result = TrainResult(model, history, best_step, best_subsets, seconds, plan)
    if out is not None and dist.main:
        save_checkpoint(
            model,
            out,
            info={
                "train_config": asdict(cfg),
                "plan": plan,
                "environment": env,
                "dataset": {
                    "source": source,
                    "name": data.name,
                    "description": data.description,
                    "class_names": data.class_names,
                    "sizes": {k: len(v) for k, v in data.splits.items()},
                    **{k: v for k, v in data_options.items() if v is not None},
                },
                "best_step": best_step,
                "val_loss": best_loss,
                "val_subsets": best_subsets,
                "history": history,
                "train_seconds": seconds,
                "torch_threads": torch.get_num_threads(),
            },
        )
    return result
