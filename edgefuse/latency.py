"""Timing candidate engines where they will run: the build's latency-aware precision choice.

INT8 is not always faster. At the demo model's width, ONNX Runtime's INT8 kernels and the
Q/DQ nodes around them cost more than the FP32 GEMMs they replace. So the build times each
subset's candidates (FP32 and INT8 graphs) and keeps the fastest one that passes the accuracy
gate. By default it times them on the build machine. The target device can time them itself,
which is what counts: ``edgefuse profile FOLDER`` needs only the device install (numpy +
onnxruntime) and writes a profile that ``edgefuse build --latency-profile FILE`` reads.

Timings are interleaved: every iteration runs each candidate once, in an order rotated from
one iteration to the next, so a slow spell of a shared machine hits them all alike. Batch 1
decides the choice (what the runtime runs); other batches are recorded.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError

PROFILE_FORMAT = "edgefuse-latency-profile/1"
#: INT8 must beat FP32's p50 by this share to be kept for speed (timing noise on a shared CPU)
NOISE = 0.05


def machine() -> dict[str, Any]:
    """CPU model, cores and the SIMD flags INT8 speed depends on; Python and ONNX Runtime versions."""
    import os

    import onnxruntime

    from edgefuse._platform import cpu

    name, flags = cpu()
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "simd": sorted(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd") if f in flags),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def _feeds(engine, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for t in engine.inputs:
        shape = (batch, *[d if d > 0 else 1 for d in t.shape[1:]])
        out[t.name] = (
            np.zeros(shape, dtype=t.dtype) if "int" in str(t.dtype) else rng.standard_normal(shape).astype(t.dtype)
        )
    return out


def time_graphs(
    graphs: Mapping[str, str | Path],
    batches: Sequence[int] = (1,),
    iters: int = 300,
    warmup: int = 30,
    threads: int = 1,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{name: {str(batch): {p50_us, p90_us, n}}}`` for each ONNX graph of ``graphs``, run interleaved
    with ONNX Runtime (``threads`` intra-op threads) on random inputs of each batch size."""
    from edgefuse.engines.ort import OrtEngine

    engines = {k: OrtEngine(p, threads=threads) for k, p in graphs.items()}
    try:
        out: dict[str, dict[str, dict[str, float]]] = {k: {} for k in graphs}
        names = list(engines)
        for b in batches:
            feeds = {k: _feeds(e, b) for k, e in engines.items()}
            for k in names:
                for _ in range(warmup):
                    engines[k].run(feeds[k], check=False)
            t = {k: [] for k in names}
            for i in range(iters):
                order = names[i % len(names) :] + names[: i % len(names)]
                for k in order:
                    t0 = time.perf_counter()
                    engines[k].run(feeds[k], check=False)
                    t[k].append((time.perf_counter() - t0) * 1e6)
            for k in names:
                us = np.asarray(t[k])
                out[k][str(b)] = {
                    "p50_us": float(np.median(us)),
                    "p90_us": float(np.percentile(us, 90)),
                    "n": int(len(us)),
                }
        return out
    finally:
        for e in engines.values():
            e.close()


def candidates_of(folder: str | Path) -> dict[str, dict[str, Path]]:
    """``{subset: {precision: graph}}`` of a calibration folder (FP32 and INT8 graphs), an export folder
    (FP32) or a bundle (its engines)."""
    folder = Path(folder)
    if (folder / "calibration.json").is_file():
        doc = json.loads((folder / "calibration.json").read_text())
        return {
            k: {"fp32": folder / c["fp32_file"], "int8": folder / c["int8_file"]}
            for k, c in doc.get("subsets", {}).items()
        }
    if (folder / "export.json").is_file():
        doc = json.loads((folder / "export.json").read_text())
        if doc.get("split"):
            raise EdgefuseError(f"{folder}: a split export; profile a per-subset export or calibration folder")
        return {k: {"fp32": folder / g["file"]} for k, g in doc["graphs"].items()}
    if (folder / "manifest.json").is_file():
        from edgefuse.bundle import load_bundle

        b = load_bundle(folder)
        if b.manifest.get("backend") != "ort" or b.kind != "subsets":
            raise EdgefuseError(f"{folder}: only per-subset ONNX Runtime bundles can be profiled here")
        return {k: {v["precision"]: b.engine_path(k)} for k, v in b.subsets.items()}
    raise EdgefuseError(
        f"{folder}: expected a calibration folder (calibration.json), an export folder (export.json) or a bundle "
        "(manifest.json)"
    )


def profile(
    folder: str | Path, batches: Sequence[int] = (1,), iters: int = 300, threads: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Time every candidate graph of ``folder`` on this machine (see ``candidates_of``): the profile
    ``edgefuse build --latency-profile`` reads."""
    cands = candidates_of(folder)
    graphs: dict[str, Any] = {}
    for i, (subset, precs) in enumerate(cands.items(), 1):
        timed = time_graphs(precs, batches, iters, threads=threads)
        graphs[subset] = timed
        if progress:
            row = ", ".join(f"{p} {t['1']['p50_us']:.0f} us" for p, t in timed.items() if "1" in t)
            print(f"  [{i}/{len(cands)}] {subset}: {row}", flush=True)
    return {
        "format": PROFILE_FORMAT,
        "device": machine(),
        "threads": threads,
        "batches": list(batches),
        "iters": iters,
        "source": str(folder),
        "graphs": graphs,
    }


def read_profile(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgefuseError(f"latency profile {path}: cannot read it ({e})") from None
    if doc.get("format") != PROFILE_FORMAT:
        raise EdgefuseError(
            f"latency profile {path}: expected format {PROFILE_FORMAT!r} (written by edgefuse profile), "
            f"got {doc.get('format')!r}"
        )
    return doc


def choose(
    timings: Mapping[str, Mapping[str, Mapping[str, float]]], passing: Sequence[str], strict: str | None = None
) -> tuple[str, str]:
    """``(precision, why)``: of the candidates that pass the accuracy gate (``passing``, in order of
    preference when times tie: the reduced precision first), the one fastest at batch 1. A reduced
    precision must beat FP32's p50 by ``NOISE`` to be kept for speed. ``strict``: that precision
    whenever it passes, whatever its speed."""
    if strict is not None and strict in passing:
        return strict, f"{strict} demanded (--strict)"
    p50 = {p: timings[p]["1"]["p50_us"] for p in passing if p in timings and "1" in timings[p]}
    if "fp32" not in p50:
        best = min(p50, key=p50.get)
        return best, f"fastest measured ({best} p50 {p50[best]:.0f} us)"
    fp = p50["fp32"]
    faster = {p: t for p, t in p50.items() if p != "fp32" and t < fp * (1 - NOISE)}
    if faster:
        best = min(faster, key=faster.get)
        return best, f"{best} p50 {faster[best]:.0f} us is {faster[best] / fp:.2f}x FP32's {fp:.0f} us"
    slower = ", ".join(f"{p} p50 {t:.0f} us ({t / fp:.2f}x)" for p, t in p50.items() if p != "fp32")
    return "fp32", f"FP32 p50 {fp:.0f} us is the fastest; {slower or 'no other candidate passed the gate'}"
