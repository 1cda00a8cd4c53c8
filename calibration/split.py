"""INT8 for split exports: each encoder calibrated on its own sensor, the head on FP32 embeddings, gated per subset.

A split export is N encoder graphs (one sensor's input -> its embedding ``[B, D]``) and one
fusion head (embeddings ``[B, N, D]`` + presence ``[B, N]`` -> logits). Each encoder's ranges
come from its own sensor's calibration samples. The head's come from the FP32 encoders'
embeddings of the same samples, each sample under one presence mask, the masks going round
every non-empty subset, so that each subset the runtime may serve shapes the ranges (absent
slots hold zeros, as the runtime leaves them). The gate runs the composed pipeline (encoders,
then the head with the mask) on the held-out split for every subset, FP32 against INT8. With
``gate_fail='fp32'``, while a subset fails, the engine whose quantization costs the most (the
one whose return to FP32 helps the worst subset most) goes back to FP32, one at a time.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgefuse._fs import atomic_dir
from edgefuse.calibration.calibrate import StratifiedReader
from edgefuse.calibration.run import base_record, prepare, quantize_graph
from edgefuse.gate import GateResult, check_gate_fail, enforce, predict, run_batched
from edgefuse.specs import all_subsets, default_subsets, subset_name

SPLIT_CALIB_FORMAT = "edgefuse-split-calibration/1"
#: beyond this many sensors the gate takes singles, all-but-one, all and a seeded sample of the rest
ALL_SUBSETS_UP_TO = 6
SAMPLED_SUBSETS = 24


def gate_subsets(names: Sequence[str], seed: int = 0) -> list[tuple[str, ...]]:
    """Every subset for N <= 6; otherwise singles, all-but-one, all, and a seeded sample of the others."""
    if len(names) <= ALL_SUBSETS_UP_TO:
        return all_subsets(names)
    base = default_subsets(names)
    rest = [s for s in all_subsets(names) if s not in set(base)]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rest), size=min(SAMPLED_SUBSETS, len(rest)), replace=False)
    return base + [rest[i] for i in sorted(pick)]


def encode(path: Path, sensor: str, x: np.ndarray) -> np.ndarray:
    """An encoder graph's embeddings ``[S, D]`` of one sensor's inputs ``[S, ...]``."""
    return run_batched(path, {sensor: x}, "embedding")


def stack(
    names: Sequence[str], embs: Mapping[str, np.ndarray], members: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``[S, N, D]`` embeddings with zeros in absent slots, and the ``[S, N]`` mask of ``members``."""
    first = next(iter(embs.values()))
    out = np.zeros((len(first), len(names), first.shape[1]), dtype=np.float32)
    present = np.zeros((len(first), len(names)), dtype=bool)
    for i, n in enumerate(names):
        if n in members:
            out[:, i] = embs[n]
            present[:, i] = True
    return out, present


def pipeline_predictions(
    names: Sequence[str], embs: Mapping[str, np.ndarray], head: Path, subsets: Sequence[Sequence[str]]
) -> dict[str, np.ndarray]:
    """Class predictions of the composed pipeline for each subset (from precomputed embeddings)."""
    out = {}
    for sub in subsets:
        e, p = stack(names, embs, sub)
        out[subset_name(sub, names)] = predict(head, {"embeddings": e, "present": p})
    return out


def calibrate_split(
    export_dir: str | Path,
    data,
    out: str | Path,
    method: str = "minmax",
    size: int = 512,
    max_drop: float = 1.0,
    split: str = "test",
    seed: int = 0,
    trt_version: str = "10.3.0",
    progress: bool = True,
    gate_fail: str = "error",
    min_weights: int = 0,
) -> dict[str, Any]:
    """Calibrate a split export (see the module docstring); write the Q/DQ graphs, reports and
    TensorRT caches to ``out``; return ``calibration.json``: per engine its files and final
    precision, per subset the composed pipeline's FP32 and INT8 accuracy."""
    check_gate_fail(gate_fail)
    from tqdm.auto import tqdm

    export_dir, out = Path(export_dir), Path(out)
    exp, names, sample, held_out = prepare(export_dir, data, size, seed, split, want_split=True)
    subsets = gate_subsets(names, seed)
    graphs = exp["graphs"]
    record: dict[str, Any] = base_record(
        SPLIT_CALIB_FORMAT, method, len(sample), split, len(held_out), max_drop, gate_fail, trt_version
    )
    record["head_masks"] = "each calibration sample under one subset's mask, going round every non-empty subset"
    record["engines"], record["subsets"], record["min_weights"] = {}, {}, min_weights
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        for g in graphs.values():
            shutil.copy2(export_dir / g["file"], tmp / g["file"])

        def quantize(key: str, reader: StratifiedReader, meta: dict) -> None:
            g = graphs[key]
            meta = {**meta, "size": len(sample)}
            files = quantize_graph(tmp / g["file"], tmp, reader, method, meta, trt_version, min_weights)
            record["engines"][key] = {"kind": g["kind"], "modalities": g["modalities"], **files}

        encoders = {n: f"encoder_{n}" for n in names}
        bar = tqdm(total=len(names) + 1, desc="calibrate split", unit="graph", disable=not progress)
        for n, key in encoders.items():
            reader = StratifiedReader({n: sample.inputs[n]}, desc=f"calibrate {key}", progress=progress)
            quantize(key, reader, {"engine": key})
            bar.update(1)
        # the head: FP32 embeddings of the calibration samples, each under one subset's mask in turn
        calib_embs = {n: encode(tmp / graphs[encoders[n]]["file"], n, sample.inputs[n]) for n in names}
        all_subs = all_subsets(names)
        emb, present = stack(names, calib_embs, names)
        for i in range(len(emb)):
            members = set(all_subs[i % len(all_subs)])
            for j, n in enumerate(names):
                if n not in members:
                    emb[i, j] = 0.0
                    present[i, j] = False
        reader = StratifiedReader({"embeddings": emb, "present": present}, desc="calibrate head", progress=progress)
        quantize("head", reader, {"engine": "head", "masks": record["head_masks"]})
        bar.update(1)
        bar.close()

        # the gate: the composed pipeline on the held-out split, every subset, FP32 against INT8
        embs = {
            p: {n: encode(tmp / record["engines"][encoders[n]][f"{p}_file"], n, held_out.inputs[n]) for n in names}
            for p in ("fp32", "int8")
        }
        fp32_preds = pipeline_predictions(names, embs["fp32"], tmp / graphs["head"]["file"], subsets)

        def evaluate(precision: Mapping[str, str]) -> list[GateResult]:
            mixed = {n: embs[precision[encoders[n]]][n] for n in names}
            head = tmp / record["engines"]["head"][f"{precision['head']}_file"]
            preds = pipeline_predictions(names, mixed, head, subsets)
            labels = held_out.labels
            return [
                GateResult(
                    k,
                    float((fp32_preds[k] == labels).mean()),
                    float((preds[k] == labels).mean()),
                    float((fp32_preds[k] == preds[k]).mean()),
                    int(len(labels)),
                )
                for k in preds
            ]

        precision = {k: "int8" for k in record["engines"]}
        results = evaluate(precision)
        fallback: list[str] = []
        while gate_fail == "fp32" and any(r.fails(max_drop) for r in results) and "int8" in precision.values():
            trials = {}
            for k in [k for k, p in precision.items() if p == "int8"]:
                trials[k] = evaluate({**precision, k: "fp32"})
            # the engine whose quantization costs the most: back in FP32, the worst subset drops least
            worst = {k: max(r.drop_points for r in rs) for k, rs in trials.items()}
            k = min(worst, key=worst.get)
            precision[k], results = "fp32", trials[k]
            fallback.append(k)
        if gate_fail == "error":
            enforce(results, max_drop)
        for k, p in precision.items():
            record["engines"][k]["precision"] = p
            record["engines"][k]["int8_rejected"] = p == "fp32"
        record["fallback_order"] = fallback
        record["subsets"] = {
            r.subset: {
                "modalities": list(r.subset.split("+")),
                "accuracy": r.to_dict(),
                "passes": not r.fails(max_drop),
            }
            for r in results
        }
        record["seconds"] = time.perf_counter() - start
        (tmp / "calibration.json").write_text(json.dumps(record, indent=2))
    return record
