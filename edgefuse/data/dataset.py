"""Dataset: modality arrays, labels and train/val/test splits, held as numpy (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec, check_specs

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: ``inputs[name]`` is ``[N, *spec.shape]``, ``labels`` is ``[N]`` int64."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> "Split":
        return Split(
            {k: v[idx] for k, v in self.inputs.items()},
            self.labels[idx],
            {k: v[idx] for k, v in self.extras.items()},
        )

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator["Split"]:
        """Yield consecutive batches (shuffled when rng is given)."""
        n = len(self)
        order = rng.permutation(n) if rng is not None else np.arange(n)
        for start in range(0, n, batch_size):
            yield self.take(order[start : start + batch_size])


@dataclass
class Dataset:
    """A multi-sensor classification dataset with named splits."""

    specs: list[ModalitySpec]
    splits: dict[str, Split]
    class_names: list[str]
    name: str = "dataset"
    description: str = ""

    def __post_init__(self) -> None:
        self.specs = check_specs(self.specs)
        for split_name, split in self.splits.items():
            validate_split(self.specs, split, len(self.class_names), where=f"split {split_name!r}")

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise EdgefuseError(f"unknown split {split!r}; this dataset has {sorted(self.splits)}")
        return self.splits[split]

    def reduced(self, train_size: int | None = None, val_size: int | None = None, seed: int = 0) -> "Dataset":
        """This dataset with only a stratified sample of ``train_size`` training and ``val_size``
        validation samples (None: the split whole)."""
        if train_size is None and val_size is None:
            return self
        splits = dict(self.splits)
        for name, n in (("train", train_size), ("val", val_size)):
            if n is None:
                continue
            have = len(self.splits.get(name, ())) if name in self.splits else 0
            if n < 1 or n > have:
                raise EdgefuseError(
                    f"{name}_size must be between 1 and the {have} samples of the {name} split, got {n}"
                )
            splits[name] = self.stratified_sample(name, n, seed)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        return replace(self, splits=splits, description=f"{self.description} reduced to {sizes}")

    def stratified_sample(self, split: str, n: int, seed: int = 0) -> Split:
        """Up to ``n`` samples of ``split`` with every class represented in proportion."""
        data = self[split]
        n = min(n, len(data))
        rng = np.random.default_rng(seed)
        classes, counts = np.unique(data.labels, return_counts=True)
        quota = np.floor(counts / counts.sum() * n).astype(int)
        # hand the remainder to the largest classes so the total is exactly n
        for i in np.argsort(-counts)[: n - quota.sum()]:
            quota[i] += 1
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(data.labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
        )
        return data.take(np.sort(idx))


def validate_split(specs: Sequence[ModalitySpec], split: Split, num_classes: int, where: str = "data") -> None:
    """Raise ValueError if any modality is missing, mis-shaped, mis-typed, non-finite or mis-sized."""
    n = split.labels.shape[0] if split.labels.ndim == 1 else None
    if n is None:
        raise EdgefuseError(f"{where}: expected labels of shape [N], got {split.labels.shape}")
    if not np.issubdtype(split.labels.dtype, np.integer):
        raise EdgefuseError(f"{where}: expected integer labels, got dtype {split.labels.dtype}")
    if n and (split.labels.min() < 0 or split.labels.max() >= num_classes):
        raise EdgefuseError(
            f"{where}: expected labels in [0, {num_classes - 1}], got range [{split.labels.min()}, "
            f"{split.labels.max()}]"
        )
    names = [s.name for s in specs]
    extra = sorted(set(split.inputs) - set(names))
    if extra:
        raise EdgefuseError(f"{where}: unknown modality {extra}; expected {names}")
    for spec in specs:
        if spec.name not in split.inputs:
            raise EdgefuseError(f"{where}: modality {spec.name!r} is missing; expected arrays for {names}")
        arr = split.inputs[spec.name]
        if arr.shape[:1] != (n,):
            raise EdgefuseError(
                f"{where}: modality {spec.name!r} has {arr.shape[0] if arr.ndim else 0} samples, expected {n} (one "
                "per label)"
            )
        spec.check_array(arr)
