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
    write_report,
    write_trt_cache,
)
from edgefuse.errors import EdgefuseError
from edgefuse.gate import check_gate_fail, compare, enforce

CALIB_FORMAT = "edgefuse-calibration/1"


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

    from edgefuse.export import read_export

    export_dir, out = Path(export_dir), Path(out)
    exp = read_export(export_dir)
    if exp["split"]:
        raise EdgefuseError(
            f"{export_dir}: calibration of split exports (encoders + head) is not supported; export per subset"
        )
    names = [s["name"] for s in exp["specs"]]
    if data.modality_names != names:
        raise EdgefuseError(f"data has modalities {data.modality_names}, the exported model expects {names}")
    if size < 1:
        raise EdgefuseError(f"calibration size must be >= 1, got {size}")
    sample = data.stratified_sample("train", size, seed=seed)
    held_out = data[split]
    record: dict[str, Any] = {
        "format": CALIB_FORMAT,
        "method": method,
        "size": len(sample),
        "gate_split": split,
        "gate_n": len(held_out),
        "max_drop": max_drop,
        "gate_fail": gate_fail,
        "trt_version": trt_version,
        "subsets": {},
    }
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        results = []
        for key, g in tqdm(exp["graphs"].items(), desc="calibrate", unit="subset", disable=not progress):
            fp32 = export_dir / g["file"]
            inputs = {k: sample.inputs[k] for k in g["inputs"]}
            reader = StratifiedReader(inputs, desc=f"calibrate {key}", progress=progress)
            ranges, hists = compute_ranges(fp32, reader, method=method, op_types=OP_TYPES)
            stem = g["file"][: -len(".onnx")]
            int8 = tmp / f"{stem}.int8.onnx"
            quantize_qdq(fp32, int8, ranges)
            counts = check_qdq(int8)
            shutil.copy2(fp32, tmp / g["file"])
            per_tensor = tensor_ranges(ranges, hists)
            write_report(per_tensor, tmp / f"{stem}.calib.json", {"subset": key, "method": method, "size": len(sample)})
            write_trt_cache(activation_scales(int8), tmp / f"{stem}.trtcache", trt_version=trt_version)
            gate = compare(key, tmp / g["file"], int8, {k: held_out.inputs[k] for k in g["inputs"]}, held_out.labels)
            results.append(gate)
            record["subsets"][key] = {
                "modalities": g["modalities"],
                "fp32_file": g["file"],
                "int8_file": int8.name,
                "report": f"{stem}.calib.json",
                "trt_cache": f"{stem}.trtcache",
                "qdq_nodes": counts,
                "accuracy": gate.to_dict(),
                "max_saturated_pct": max((t.saturated_pct for t in per_tensor.values()), default=0.0),
                "int8_rejected": gate.fails(max_drop),
            }
        if gate_fail == "error":
            enforce(results, max_drop)
        record["seconds"] = time.perf_counter() - start
        (tmp / "calibration.json").write_text(json.dumps(record, indent=2))
    return record
