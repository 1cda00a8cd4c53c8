"""Plans built on the device from a portable TensorRT bundle: ``edgefuse compile BUNDLE``.

A serialized TensorRT plan is tied to the GPU and the TensorRT version that built it, so a
TensorRT bundle built on a host carries its engines as ONNX graphs (Q/DQ INT8, FP16 or FP32),
and the device compiles them. ``compile_bundle`` needs only the device install plus ``tensorrt``
and ``cuda-python``: no torch, no onnxruntime calibration. Its plans go to
``plans/<target>/`` beside the bundle's files, where ``<target>`` names the GPU's compute
capability and name and the TensorRT version (``sm87-orin-trt10.3.0``), with ``plans.json``: the
device, TensorRT version, build options, and per ONNX file its plan and both checksums. A
persistent timing cache per target (``plans/<target>.timing-cache``) makes rebuilds fast.

``plan_for`` is what loading uses: the plan of one ONNX file for the GPU and TensorRT found
here, checksums verified, or a ``BundleError`` that says to run ``edgefuse compile``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgefuse._fs import atomic_dir
from edgefuse.manifest import BundleError, sha256

PLANS = "plans"
PLANS_JSON = "plans.json"
#: hardware-compatible plans run on every Ampere-or-newer discrete GPU, so their target has no GPU in it
HW_COMPAT_PREFIX = "ampere_plus"


def target_key(device: dict, trt_version: str, hardware_compatible: bool = False) -> str:
    """The folder name of one device's plans: compute capability, GPU name, TensorRT version."""
    if hardware_compatible:
        return f"{HW_COMPAT_PREFIX}-trt{trt_version}"
    slug = re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-") or "gpu"
    return f"sm{device['compute_capability'].replace('.', '')}-{slug}-trt{trt_version}"


def engine_graphs(bundle) -> dict[str, str]:
    """``{engine name: bundle-relative ONNX file}`` of a TensorRT bundle (subsets, or a split's parts)."""
    if bundle.manifest.get("backend") != "trt":
        raise BundleError(
            f"bundle {bundle.root} has backend {bundle.manifest.get('backend')!r}; only TensorRT bundles are compiled "
            "(edgefuse build --backend trt)"
        )
    if bundle.kind == "split":
        graphs = {f"encoder_{n}": e["engine"] for n, e in bundle.manifest["encoders"].items()}
        graphs["head"] = bundle.manifest["head"]["engine"]
    else:
        graphs = {k: e["engine"] for k, e in bundle.subsets.items()}
    for name, rel in graphs.items():
        if not rel.endswith(".onnx"):
            raise BundleError(
                f"bundle {bundle.root}: engine {name!r} is {rel!r}, not an ONNX graph; this bundle predates portable "
                "TensorRT bundles: rebuild it with edgefuse build --backend trt"
            )
    return graphs


def _here(trt=None, cuda=None) -> tuple[Any, Any, dict]:
    from edgefuse.engines.trt.loader import import_tensorrt

    trt = trt or import_tensorrt()
    if cuda is None:
        from edgefuse.engines.trt.cuda import Cuda

        cuda = Cuda()
    return trt, cuda, cuda.device()


def compile_bundle(
    root: str | Path,
    max_batch: int | None = None,
    workspace_mb: int = 1024,
    tf32: bool = True,
    hardware_compatible: bool = False,
    progress: bool = True,
    cuda=None,
) -> Path:
    """Build every engine's plan of the TensorRT bundle at ``root`` for this GPU and TensorRT; return the
    plans' folder. The bundle is verified first; the folder is written whole or not at all (an earlier
    one for the same target is replaced only once the new one is complete)."""
    from edgefuse.bundle import load_bundle
    from edgefuse.engines.trt.loader import build_plan

    bundle = load_bundle(root)
    graphs = engine_graphs(bundle)
    trt, cuda, device = _here(cuda=cuda)
    key = target_key(device, trt.__version__, hardware_compatible)
    max_batch = int(max_batch or bundle.manifest.get("trt", {}).get("max_batch", 32))
    base = bundle.root / PLANS
    timing = base / f"{key}.timing-cache"
    doc: dict[str, Any] = {
        "gpu": device,
        "tensorrt": trt.__version__,
        "hardware_compatible": hardware_compatible,
        "tf32": tf32,
        "max_batch": max_batch,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "plans": {},
    }
    start = time.perf_counter()
    base.mkdir(exist_ok=True)
    with atomic_dir(base / key) as tmp:
        for i, (name, rel) in enumerate(graphs.items()):
            if progress:  # a plan takes seconds to minutes; tqdm is not part of the device install
                print(f"compile {key}: {i + 1}/{len(graphs)} {name} ...", flush=True)
            t = time.perf_counter()
            plan = build_plan(
                bundle.root / rel,
                tmp / f"{name}.plan",
                max_batch=max_batch,
                timing_cache=timing,
                tf32=tf32,
                hardware_compatible=hardware_compatible,
            )
            doc["plans"][rel] = {
                "engine": name,
                "plan": plan.name,
                "sha256": sha256(plan),
                "onnx_sha256": bundle.manifest["files"][rel],
                "seconds": round(time.perf_counter() - t, 2),
            }
        doc["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / PLANS_JSON).write_text(json.dumps(doc, indent=2))
    return base / key


def compiled_targets(root: str | Path) -> list[str]:
    base = Path(root) / PLANS
    return sorted(p.name for p in base.iterdir() if (p / PLANS_JSON).is_file()) if base.is_dir() else []


def plan_for(bundle, rel: str, trt=None, cuda=None) -> Path:
    """The verified plan of the bundle's ONNX file ``rel`` for the GPU and TensorRT found here: this
    device's own plans first, else hardware-compatible ones (Ampere or newer, not on Jetson)."""
    trt, cuda, device = _here(trt, cuda)
    keys = [target_key(device, trt.__version__)]
    if float(device["compute_capability"]) >= 8.0:
        keys.append(target_key(device, trt.__version__, hardware_compatible=True))
    for key in keys:
        folder = bundle.root / PLANS / key
        if not (folder / PLANS_JSON).is_file():
            continue
        doc = json.loads((folder / PLANS_JSON).read_text())
        entry = doc["plans"].get(rel)
        if entry is None:
            raise BundleError(f"{folder}: no plan for {rel}; run `edgefuse compile {bundle.root}` again")
        if entry["onnx_sha256"] != bundle.manifest["files"][rel]:
            raise BundleError(
                f"{folder}: the plan of {rel} was compiled from another graph than the bundle's; run "
                f"`edgefuse compile {bundle.root}` again"
            )
        plan = folder / entry["plan"]
        if not plan.is_file() or sha256(plan) != entry["sha256"]:
            raise BundleError(
                f"{folder}: plan {entry['plan']} is missing or corrupted (sha256 differs from {PLANS_JSON})"
            )
        return plan
    have = compiled_targets(bundle.root)
    raise BundleError(
        f"bundle {bundle.root} has no TensorRT plans for this device ({device['name']}, compute capability "
        f"{device['compute_capability']}, TensorRT {trt.__version__}); it has "
        f"{', '.join(have) if have else 'none'}. Run `edgefuse compile {bundle.root}` on this device."
    )
