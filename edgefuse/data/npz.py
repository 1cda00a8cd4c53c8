"""User data: one .npz with one array per modality, ``label`` and an optional ``split``.

Layout of the file:

* one array per modality ``[N, ...]``; its kind is inferred from the per-sample rank and
  dtype (rank 3 float -> image, rank 2 float -> signal, rank 1 float -> vector, rank 1
  integer -> tokens) unless ``kinds={name: kind}`` overrides it;
* ``label`` ``[N]`` integers in [0, C);
* optional ``split`` ``[N]``: the strings ``train``/``val``/``test`` or the integers 0/1/2.
  Without it, a seeded 70/15/15 stratified split is made.
* optional ``class_names`` ``[C]`` strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edgefuse.data.dataset import SPLITS, Dataset, Split
from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec

_RESERVED = {"label", "split", "class_names"}
_RANK_KIND = {3: "image", 2: "signal", 1: "vector"}


def infer_spec(name: str, arr: np.ndarray, kind: str | None = None) -> ModalitySpec:
    """A ModalitySpec for an ``[N, ...]`` array (kind from rank and dtype unless given)."""
    if arr.ndim < 2:
        raise EdgefuseError(
            f"modality {name!r}: expected an array [N, ...] with per-sample data, got shape {arr.shape}"
        )
    is_int = np.issubdtype(arr.dtype, np.integer)
    if kind is None:
        per_rank = arr.ndim - 1
        if is_int and per_rank == 1:
            kind = "tokens"
        elif per_rank in _RANK_KIND:
            kind = _RANK_KIND[per_rank]
        else:
            raise EdgefuseError(
                f"modality {name!r}: cannot infer a kind from per-sample shape {arr.shape[1:]} "
                f"(expected rank 1, 2 or 3); pass kinds={{{name!r}: ...}}"
            )
    if kind == "tokens":
        if not is_int:
            raise EdgefuseError(f"modality {name!r}: kind 'tokens' expects integer ids, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise EdgefuseError(f"modality {name!r}: token ids must be >= 0, got {arr.min()}")
        return ModalitySpec(name, arr.shape[1:], kind="tokens", dtype="int64", value_range=(0, max(int(arr.max()), 1)))
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise EdgefuseError(f"modality {name!r}: expected a real numeric array, got dtype {arr.dtype}")
    return ModalitySpec(name, arr.shape[1:], kind=kind, dtype="float32")  # type: ignore[arg-type]


def load_npz(path: str | Path, kinds: Mapping[str, str] | None = None, seed: int = 0) -> Dataset:
    """Load a user dataset; raise ValueError naming the key on any inconsistency."""
    path = Path(path)
    if not path.is_file():
        raise EdgefuseError(f"expected a .npz file, got {str(path)!r} which does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / pickle errors -> one clear message
        raise EdgefuseError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    if "label" not in arrays:
        raise EdgefuseError(f"{path}: expected a 'label' array [N], got keys {sorted(arrays)}")
    labels = arrays["label"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise EdgefuseError(
            f"{path}: 'label' must be an integer array [N], got shape {labels.shape} dtype {labels.dtype}"
        )
    n = labels.shape[0]
    modalities = [k for k in arrays if k not in _RESERVED]
    if not modalities:
        raise EdgefuseError(f"{path}: expected at least one modality array besides {sorted(_RESERVED)}, got none")
    kinds = dict(kinds or {})
    unknown = set(kinds) - set(modalities)
    if unknown:
        raise EdgefuseError(f"kinds names unknown modality {sorted(unknown)}; the file has {modalities}")
    specs, inputs = [], {}
    for name in modalities:
        arr = arrays[name]
        if arr.shape[0] != n:
            raise EdgefuseError(f"{path}: modality {name!r} has {arr.shape[0]} samples, expected {n} (one per label)")
        spec = infer_spec(name, arr, kinds.get(name))
        arr = arr.astype(spec.dtype, copy=False)
        if spec.kind != "tokens" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).reshape(n, -1).any(axis=1).sum())
            raise EdgefuseError(
                f"{path}: modality {name!r} has NaN or Inf values in {bad} samples; expected finite values"
            )
        specs.append(spec)
        inputs[name] = arr
    if n and labels.min() < 0:
        raise EdgefuseError(f"{path}: labels must be >= 0, got {labels.min()}")
    num_classes = int(labels.max()) + 1 if n else 0
    class_names = (
        [str(c) for c in arrays["class_names"]] if "class_names" in arrays else [str(i) for i in range(num_classes)]
    )
    if len(class_names) < num_classes:
        raise EdgefuseError(f"{path}: 'class_names' has {len(class_names)} entries, labels go up to {num_classes - 1}")
    split = _split_ids(arrays.get("split"), labels, seed, path)
    full = Split(inputs, labels.astype(np.int64))
    splits = {s: full.take(np.flatnonzero(split == i)) for i, s in enumerate(SPLITS)}
    if len(splits["train"]) == 0:
        raise EdgefuseError(f"{path}: the train split is empty; expected some samples with split 'train' (or 0)")
    return Dataset(specs=specs, splits=splits, class_names=class_names, name=path.stem, description=str(path))


def save_npz(data: Dataset, path: str | Path) -> Path:
    """Write ``data`` in the format ``load_npz`` reads: each modality's samples of every split one after
    the other, ``label``, ``split`` (train/val/test) and ``class_names``."""
    path = Path(path)
    names = [s for s in SPLITS if s in data.splits and len(data.splits[s])]
    arrays = {m: np.concatenate([data.splits[s].inputs[m] for s in names]) for m in data.modality_names}
    arrays["label"] = np.concatenate([data.splits[s].labels for s in names]).astype(np.int64)
    arrays["split"] = np.concatenate([np.full(len(data.splits[s]), s) for s in names])
    arrays["class_names"] = np.array(data.class_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def _split_ids(split: np.ndarray | None, labels: np.ndarray, seed: int, path: Path) -> np.ndarray:
    n = labels.shape[0]
    if split is None:
        rng = np.random.default_rng(seed)
        ids = np.zeros(n, dtype=np.int64)
        for c in np.unique(labels):  # stratified 70 / 15 / 15
            idx = rng.permutation(np.flatnonzero(labels == c))
            a, b = int(round(0.7 * len(idx))), int(round(0.85 * len(idx)))
            ids[idx[a:b]], ids[idx[b:]] = 1, 2
        return ids
    if split.shape != (n,):
        raise EdgefuseError(f"{path}: 'split' must have shape [{n}], got {split.shape}")
    if split.dtype.kind in "US":
        lookup = {s: i for i, s in enumerate(SPLITS)}
        bad = sorted(set(split.tolist()) - set(lookup))
        if bad:
            raise EdgefuseError(f"{path}: 'split' values must be {list(SPLITS)}, got {bad}")
        return np.array([lookup[s] for s in split.tolist()], dtype=np.int64)
    if np.issubdtype(split.dtype, np.integer):
        bad = sorted(set(np.unique(split).tolist()) - {0, 1, 2})
        if bad:
            raise EdgefuseError(f"{path}: integer 'split' values must be 0/1/2, got {bad}")
        return split.astype(np.int64)
    raise EdgefuseError(f"{path}: 'split' must hold strings or integers, got dtype {split.dtype}")
