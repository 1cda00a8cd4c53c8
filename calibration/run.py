"""The calibration stage: an export folder + a dataset -> INT8 Q/DQ graphs, reports, TensorRT caches, gate."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from edgefuse._fs import atomic_dir
from edgefuse.calibration.calibrate import StratifiedReader, compute_ranges, tensor_ranges
from edgefuse.calibration.quantize import (
    OP_TYPES,
    activation_scales,
    check_qdq,
    quantize_qdq,
    weighted_nodes,
    write_report,
    write_trt_cache,
)
from edgefuse.errors import EdgefuseError
from edgefuse.gate import check_gate_fail, compare, enforce

CALIB_FORMAT = "edgefuse-calibration/1"


def prepare(export_dir: Path, data, size: int, seed: int, split: str, want_split: bool):
    """Read the export at ``export_dir`` and check ``data`` and ``size`` against it; return ``(export, sensor
    names, the stratified calibration sample of data['train'], the held-out split)``."""
    from edgefuse.export import read_export

    exp = read_export(export_dir)
    if exp["split"] != want_split:
        raise EdgefuseError(
            f"{export_dir}: expected a split export (edgefuse export --split), got a per-subset export"
            if want_split
            else f"{export_dir}: calibration of split exports (encoders + head) is not supported; export per subset"
        )
    names = [s["name"] for s in exp["specs"]]
    if data.modality_names != names:
        raise EdgefuseError(f"data has modalities {data.modality_names}, the exported model expects {names}")
    if size < 1:
        raise EdgefuseError(f"calibration size must be >= 1, got {size}")
    return exp, names, data.stratified_sample("train", size, seed=seed), data[split]


def base_record(fmt: str, method: str, size: int, split: str, n: int, max_drop: float, gate_fail: str, trt: str):
    """The fields every ``calibration.json`` starts with."""
    return {
        "format": fmt,
        "method": method,
        "size": size,
        "gate_split": split,
        "gate_n": n,
        "max_drop": max_drop,
        "gate_fail": gate_fail,
        "trt_version": trt,
    }


def quantize_graph(
    fp32: Path,
    out_dir: Path,
    reader: StratifiedReader,
    method: str,
    meta: dict,
    trt_version: str | None,
    min_weights: int = 0,
) -> dict[str, Any]:
    """Ranges of the FP32 graph ``fp32`` from ``reader``, its Q/DQ graph and range report written to
    ``out_dir`` beside a copy of it, and TensorRT's calibration cache when ``trt_version`` is given (only
    implicit-INT8 builds and DLA on TensorRT <= 10 read one); return the record fields they share."""
    ranges, hists = compute_ranges(fp32, reader, method=method, op_types=OP_TYPES)
    stem = fp32.name[: -len(".onnx")]
    int8 = out_dir / f"{stem}.int8.onnx"
    quantize_qdq(fp32, int8, ranges, min_weights=min_weights)
    quantized, total = weighted_nodes(fp32, min_weights)
    if fp32.parent.resolve() != out_dir.resolve():
        shutil.copy2(fp32, out_dir / fp32.name)
    per_tensor = tensor_ranges(ranges, hists)
    write_report(per_tensor, out_dir / f"{stem}.calib.json", {**meta, "method": method})
    if trt_version:
        write_trt_cache(activation_scales(int8), out_dir / f"{stem}.trtcache", trt_version=trt_version)
    return {
        "fp32_file": fp32.name,
        "int8_file": int8.name,
        "report": f"{stem}.calib.json",
        "trt_cache": f"{stem}.trtcache" if trt_version else None,
        "qdq_nodes": check_qdq(int8),
        "quantized_nodes": {"quantized": len(quantized), "of": total, "min_weights": min_weights},
        "max_saturated_pct": max((t.saturated_pct for t in per_tensor.values()), default=0.0),
    }


def calibrate_export(
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
    """Calibrate every subset graph of ``export_dir`` on a stratified sample of ``data['train']``,
    write the Q/DQ graphs to ``out`` and gate them on ``data[split]``; return ``calibration.json``.

    A subset that drops more than ``max_drop`` points fails the gate. ``gate_fail='error'``:
    AccuracyGateError (an EdgefuseError) and nothing is written. ``gate_fail='fp32'``: the subset's
    record gets ``"int8_rejected": True`` (its INT8 graph and reports are still written, for a
    look), and the caller keeps FP32 for it.
    """
    check_gate_fail(gate_fail)
    from tqdm.auto import tqdm

    export_dir, out = Path(export_dir), Path(out)
    exp, names, sample, held_out = prepare(export_dir, data, size, seed, split, want_split=False)
    record: dict[str, Any] = base_record(
        CALIB_FORMAT, method, len(sample), split, len(held_out), max_drop, gate_fail, trt_version
    )
    record["subsets"] = {}
    record["min_weights"] = min_weights
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        results = []
        for key, g in tqdm(exp["graphs"].items(), desc="calibrate", unit="subset", disable=not progress):
            inputs = {k: sample.inputs[k] for k in g["inputs"]}
            reader = StratifiedReader(inputs, desc=f"calibrate {key}", progress=progress)
            meta = {"subset": key, "size": len(sample)}
            files = quantize_graph(export_dir / g["file"], tmp, reader, method, meta, trt_version, min_weights)
            held = {k: held_out.inputs[k] for k in g["inputs"]}
            gate = compare(key, tmp / g["file"], tmp / files["int8_file"], held, held_out.labels)
            results.append(gate)
            record["subsets"][key] = {
                "modalities": g["modalities"],
                **files,
                "accuracy": gate.to_dict(),
                "int8_rejected": gate.fails(max_drop),
            }
        if gate_fail == "error":
            enforce(results, max_drop)
        record["seconds"] = time.perf_counter() - start
        (tmp / "calibration.json").write_text(json.dumps(record, indent=2))
    return record
