"""Bundles: a folder of engines (one per sensor subset) + ``manifest.json``, verified before anything runs.

``load_bundle`` checks the manifest (``edgefuse.manifest``: schema, every checksum, every
subset's modality names) and raises ``BundleError`` naming the problem; only then can engines
be loaded. ``write_bundle`` writes one atomically. Needs numpy only (no torch): this is what
a device runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgefuse._fs import atomic_dir
from edgefuse.manifest import MANIFEST, SCHEMA_VERSION, BundleError, sha256, verify
from edgefuse.specs import ModalitySpec

__all__ = ["MANIFEST", "SCHEMA_VERSION", "Bundle", "BundleError", "load_bundle", "sha256", "write_bundle"]


@dataclass
class Bundle:
    """A verified bundle: its folder and manifest."""

    root: Path
    manifest: dict[str, Any]
    specs: list[ModalitySpec] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``subsets`` (one engine per sensor subset) or ``split`` (an encoder per sensor and a fusion head)."""
        return self.manifest.get("kind", "subsets")

    @property
    def subsets(self) -> dict[str, dict[str, Any]]:
        return self.manifest["subsets"]

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names", []))

    def engine_path(self, subset: str) -> Path:
        if subset not in self.subsets:
            raise BundleError(f"bundle {self.root}: no engine for subset {subset!r}; it has {sorted(self.subsets)}")
        return self.root / self.subsets[subset]["engine"]

    def load_engine(self, subset: str, **kwargs: Any):
        """Construct (not warm) the engine of one subset."""
        from edgefuse.engines import load_engine

        entry = self.subsets[subset]
        if entry["backend"] == "torch":
            kwargs.setdefault("modalities", entry["modalities"])
            kwargs.setdefault("precision", entry["precision"])
        return load_engine(
            entry["backend"], self._engine_file(entry["backend"], entry["engine"]), name=subset, **kwargs
        )

    def _engine_file(self, backend: str, rel: str) -> Path:
        """What an engine loads from: the bundle's file, or for TensorRT the plan ``edgefuse compile`` built
        from it for this GPU and TensorRT (``BundleError`` saying to run it when there is none)."""
        if backend == "trt":
            from edgefuse.engines.trt.compile import plan_for

            return plan_for(self, rel)
        return self.root / rel

    def load_split_engines(self, warmup: bool = True, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        """A split bundle's engines, constructed and (by default) warmed: ``({sensor: encoder}, head)``."""
        from edgefuse.engines import load_engine

        if self.kind != "split":
            raise BundleError(f"bundle {self.root}: expected a split bundle, got one of kind {self.kind!r}")
        backend = self.manifest["backend"]
        if backend == "trt" and "shared_memory" not in kwargs:
            from edgefuse.engines.trt import SharedDeviceMemory

            kwargs["shared_memory"] = SharedDeviceMemory()
        encoders: dict[str, Any] = {}
        head = None
        try:

            def part(entry: dict, modalities: list[str]) -> dict[str, Any]:
                if backend != "torch":
                    return kwargs
                return {"modalities": modalities, "part": entry["part"], "precision": entry["precision"], **kwargs}

            for name, e in self.manifest["encoders"].items():
                encoders[name] = load_engine(
                    backend, self._engine_file(backend, e["engine"]), name=f"encoder_{name}", **part(e, [name])
                )
            h = self.manifest["head"]
            head = load_engine(
                backend, self._engine_file(backend, h["engine"]), name="head", **part(h, self.modality_names)
            )
            if warmup:
                for engine in [*encoders.values(), head]:
                    engine.warmup()
        except BaseException:
            for e in [*encoders.values(), *([head] if head is not None else [])]:
                e.close()
            raise
        return encoders, head

    def load_engines(self, warmup: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Every subset's engine, constructed and (by default) warmed: what the runtime holds.

        TensorRT engines share one device-memory block: the runtime runs one at a time.
        A split bundle's engines come from ``load_split_engines``.
        """
        if self.kind != "subsets":
            raise BundleError(f"bundle {self.root} is a {self.kind} bundle: load it with load_split_engines()")
        if self.manifest.get("backend") == "trt" and "shared_memory" not in kwargs:
            from edgefuse.engines.trt import SharedDeviceMemory

            kwargs["shared_memory"] = SharedDeviceMemory()
        engines = {}
        try:
            for subset in self.subsets:
                engines[subset] = self.load_engine(subset, **kwargs)
            if warmup:  # after every engine exists: a shared TensorRT block has reached its final size
                for engine in engines.values():
                    engine.warmup()
        except BaseException:
            for e in engines.values():
                e.close()
            raise
        return engines


def write_bundle(
    out: str | Path,
    manifest: Mapping[str, Any],
    fill: Callable[[Path], None],
) -> Bundle:
    """Create a bundle atomically: ``fill(tmp)`` writes the files into a temporary folder, the
    manifest gets every file's sha256, then the folder is renamed to ``out``. A failure at any
    point leaves no bundle (and an existing one at ``out`` untouched until the new one is whole)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        fill(tmp)
        doc = dict(manifest)
        doc["schema_version"] = SCHEMA_VERSION
        doc["files"] = {
            p.relative_to(tmp).as_posix(): sha256(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=2))
        verify(tmp, doc)
    return load_bundle(out)


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle (schema, modality names, files, checksums). Raises BundleError."""
    root = Path(path)
    mf = root / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    try:
        doc = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mf}: not valid JSON ({e})") from e
    specs = verify(root, doc)
    return Bundle(root, doc, specs)
