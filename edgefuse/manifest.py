"""The bundle manifest, in one place: its schema, each subset's entry, the accuracy it records, and its checks.

``manifest.json`` holds the schema version, the edgefuse version, the modality specs and
class names, and for each subset: its engine file, backend, precision, input/output names
and shapes, FP32 and reduced-precision accuracy, and the calibration method and set size;
plus the sha256 of every file. The builder writes entries with ``subset_entry``, the bundle
loader checks a manifest with ``verify``, and the runtime reads accuracies with
``engine_accuracy``. Needs numpy only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgefuse.errors import EdgefuseError
from edgefuse.specs import SUBSET_SEP, ModalitySpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
#: ``subsets``: one engine per sensor subset; ``split``: one encoder per sensor and one fusion head
KINDS = ("subsets", "split")


class BundleError(EdgefuseError):
    """A bundle failed verification; nothing from it was loaded."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def subset_entry(
    members: Sequence[str],
    specs: Sequence[ModalitySpec],
    backend: str,
    precision: str,
    num_classes: int,
    accuracy: Mapping[str, Any],
    engine: str,
) -> dict[str, Any]:
    """One subset's manifest entry: its sensors, engine file, backend, precision, I/O and accuracy."""
    return {
        "modalities": list(members),
        "backend": backend,
        "precision": precision,
        "inputs": [{"name": s.name, "shape": [-1, *s.shape], "dtype": s.dtype} for s in specs if s.name in members],
        "outputs": [{"name": "logits", "shape": [-1, num_classes], "dtype": "float32"}],
        "accuracy": dict(accuracy),
        "engine": engine,
    }


def engine_accuracy(entry: Mapping[str, Any]) -> float | None:
    """The accuracy a manifest records for a subset's engine, in the engine's own precision."""
    acc = entry.get("accuracy", {})
    value = acc.get(entry.get("precision", "fp32"), acc.get("fp32"))
    return None if value is None else float(value)


def verify(root: Path, doc: Mapping[str, Any]) -> list[ModalitySpec]:
    """Check the manifest ``doc`` of the bundle folder ``root``: schema, modalities, subsets, files, checksums.
    Returns the modality specs; raises BundleError naming the first problem."""
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{root}: unknown bundle schema version {version!r}; this edgefuse reads version {SCHEMA_VERSION}"
        )
    for key in ("modalities", "subsets", "files"):
        if key not in doc:
            raise BundleError(f"{root}: {MANIFEST} has no {key!r}")
    try:
        specs = [ModalitySpec.from_dict(d) for d in doc["modalities"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{root}: bad modality spec in {MANIFEST}: {e}") from e
    names = [s.name for s in specs]
    files = doc["files"]
    kind = doc.get("kind", "subsets")
    if kind not in KINDS:
        raise BundleError(f"{root}: unknown bundle kind {kind!r}; expected one of {KINDS}")

    def listed(engine: Any, what: str) -> None:
        if engine not in files and not any(f.startswith(f"{engine}/") for f in files):
            raise BundleError(f"{root}: {what} engine {engine!r} is not listed among the bundle's files")

    if kind == "split":
        for key in ("encoders", "head"):
            if key not in doc:
                raise BundleError(f"{root}: a split bundle's {MANIFEST} has no {key!r}")
        if sorted(doc["encoders"]) != sorted(names):
            raise BundleError(
                f"{root}: a split bundle needs one encoder per modality {names}, got {sorted(doc['encoders'])}"
            )
        for n, e in doc["encoders"].items():
            listed(e.get("engine"), f"encoder {n!r}")
        listed(doc["head"].get("engine"), "the head")
    for subset, entry in doc["subsets"].items():
        members = entry.get("modalities", [])
        unknown = [m for m in members if m not in names]
        if unknown or not members:
            raise BundleError(
                f"{root}: subset {subset!r} names unknown modality {unknown}; the bundle's modalities are {names}"
            )
        if subset != SUBSET_SEP.join(n for n in names if n in members):
            raise BundleError(f"{root}: subset key {subset!r} does not match its modalities {members}")
        if kind == "subsets":
            listed(entry.get("engine"), f"subset {subset!r}")
    for rel, digest in files.items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"{root}: file {rel!r} listed in {MANIFEST} is missing")
        if sha256(p) != digest:
            raise BundleError(f"{root}: file {rel!r} is corrupted (sha256 differs from {MANIFEST})")
    return specs
