"""Checkpoints: a folder with ``config.json`` (rebuilds the model) and ``model.pt`` (weights), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from edgefuse._fs import atomic_dir, read_record
from edgefuse.errors import EdgefuseError

CONFIG = "config.json"
WEIGHTS = "model.pt"
FORMAT = "edgefuse-checkpoint/1"


def save_checkpoint(model, out: str | Path, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (a FusionModel) and ``info`` (training facts) to the folder ``out``.

    The folder appears complete or not at all: it is written beside ``out`` and renamed.
    An existing checkpoint at ``out`` is replaced only once the new one is complete.
    """
    import torch

    out = Path(out)
    with atomic_dir(out) as tmp:
        doc = {"format": FORMAT, "model": model.config(), "info": dict(info or {})}
        (tmp / CONFIG).write_text(json.dumps(doc, indent=2, default=_jsonable))
        torch.save(model.state_dict(), tmp / WEIGHTS)
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder (no torch needed)."""
    return read_record(path, CONFIG, FORMAT, "a checkpoint folder")


def load_checkpoint(path: str | Path, encoders=None, map_location: str = "cpu"):
    """Rebuild the model of a checkpoint, load its weights, return ``(model in eval mode, doc)``."""
    import torch

    from edgefuse.fusion import model_from_config

    path = Path(path)
    doc = read_config(path)
    model = model_from_config(doc["model"], encoders=encoders)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise EdgefuseError(f"checkpoint {str(path)!r} has no {WEIGHTS}")
    state = torch.load(weights, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval(), doc


def data_source(doc: Mapping[str, Any]) -> tuple[str | None, int]:
    """(data source, seed) the checkpoint ``doc`` was trained on, as its config records them."""
    info = doc.get("info", {})
    return info.get("dataset", {}).get("source"), info.get("train_config", {}).get("seed", 0)


def load_training_data(
    checkpoint: str | Path, doc: Mapping[str, Any], source: str | None = None, seed: int | None = None
):
    """The dataset a checkpoint was trained on (its recorded source and seed, unless given)."""
    from edgefuse.data import load_dataset

    recorded, recorded_seed = data_source(doc)
    ds = doc.get("info", {}).get("dataset", {})
    # the training and validation samples the model saw, when the data is the recorded source
    sizes = {k: ds.get(k) for k in ("train_size", "val_size")} if source in (None, recorded) else {}
    source = source or recorded
    if not source:
        raise EdgefuseError(f"{checkpoint}: the checkpoint does not record its data source; pass the data explicitly")
    return load_dataset(source, seed=recorded_seed if seed is None else seed, **sizes)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
