"""When does INT8 pay on this CPU? INT8 / FP32 ONNX Runtime latency as the model grows.

The demo model is 0.6 M MACs per frame, small enough that per-node overhead dominates at
batch 1 and INT8's extra Q/DQ nodes cost more than its integer GEMMs save. This sweeps the
fusion width ``dim`` (the projection, gating and head grow as dim^2; the conv encoders stay)
on untrained SensorScenes models. For each model it exports the all-sensor graph, calibrates
it with edgefuse's MinMax Q/DQ path on 256 stratified training frames, and times FP32 and
INT8 in interleaved rounds: 1 thread, batch 1 and 8. Accuracy is not the point here (the
models are untrained), so only latency is reported. Two INT8 forms: every Conv/Gemm/MatMul
quantized (TensorRT's placement), and only those with >= ``--min-weights`` weights (edgefuse's
ONNX Runtime default); the latter also with asymmetric U8 activations (zero points free, Relu
folded into the range), the form the issue asked to measure before adopting. Writes ``int8_scaling.json`` and
``int8_scaling.png``.

    python bench/bench_int8_scaling.py --out bench/results/cpu-2core
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, macs_per_frame, pyplot


def _p50_us(engines: dict, feeds: dict, rounds: int = 10, per_round: int = 60) -> dict:
    samples = {k: [] for k in engines}
    for e in engines.values():
        for _ in range(30):
            e.run(feeds)
    for _ in range(rounds):  # interleaved: drift on a shared machine hits every variant alike
        for k, e in engines.items():
            for _ in range(5):
                e.run(feeds)
            for _ in range(per_round):
                t = time.perf_counter()
                e.run(feeds)
                samples[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e6) for k, v in samples.items()}


def _quantize_u8(fp32: Path, out: Path, inputs: dict, min_weights: int) -> Path:
    """The asymmetric-U8-activation form, straight from onnxruntime's quantize_static (MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgefuse.calibration.quantize import weighted_nodes

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = len(next(iter(inputs.values())))
            self._it = iter([{k: v[i : i + 1] for k, v in inputs.items()} for i in range(n)])

        def get_next(self):
            return next(self._it, None)

    nodes, _ = weighted_nodes(fp32, min_weights)
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_quantize=nodes or None,
        extra_options={"WeightSymmetric": True, "QuantizeBias": False},
    )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fusions", default="gated,concat")
    p.add_argument("--dims", default="64,256,512,1024")
    p.add_argument("--batches", default="1,8")
    p.add_argument(
        "--min-weights", type=int, default=8192, help="the second INT8 form: only weights this large (default 8192)"
    )
    p.add_argument(
        "--lean-gate-max-width",
        type=int,
        default=None,
        help="export gated subsets lean up to this sensors x width (edgefuse.export.LEAN_GATE_MAX_WIDTH, 256); "
        "a large value times the dense lean gate at every width, as exports before that limit did",
    )
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from edgefuse.calibration.calibrate import StratifiedReader, compute_ranges
    from edgefuse.calibration.quantize import OP_TYPES, quantize_qdq
    from edgefuse.data import load_sensorscenes
    from edgefuse.engines.ort import OrtEngine
    from edgefuse.export import export_model
    from edgefuse.fusion import build_model

    if args.lean_gate_max_width is not None:
        import edgefuse.export

        edgefuse.export.LEAN_GATE_MAX_WIDTH = args.lean_gate_max_width
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_sensorscenes()
    sample = data.stratified_sample("train", 256, seed=0)
    test = data["test"]
    rows = []
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="edgefuse-int8-scaling.") as tmp:
        tmp = Path(tmp)
        for fusion in args.fusions.split(","):
            for dim in [int(d) for d in args.dims.split(",")]:
                model = build_model(fusion, data.specs, data.num_classes, dim=dim).eval()
                macs = macs_per_frame(model, test.inputs)
                work = tmp / f"{fusion}-{dim}"
                rec = export_model(model, work / "export", subsets=[model.names], progress=False)
                fp32 = work / "export" / next(iter(rec["graphs"].values()))["file"]
                ranges, _ = compute_ranges(
                    fp32, StratifiedReader(sample.inputs, progress=False), method="minmax", op_types=OP_TYPES
                )
                int8 = quantize_qdq(fp32, work / "int8.onnx", ranges)
                large = quantize_qdq(fp32, work / "int8-large.onnx", ranges, min_weights=args.min_weights)
                u8 = _quantize_u8(fp32, work / "int8-large-u8.onnx", sample.inputs, args.min_weights)
                engines = {
                    "fp32": OrtEngine(fp32, threads=1),
                    "int8": OrtEngine(int8, threads=1),
                    "int8_large": OrtEngine(large, threads=1),
                    "int8_large_u8": OrtEngine(u8, threads=1),
                }  # the bundles' settings
                for b in [int(x) for x in args.batches.split(",")]:
                    feeds = {k: np.ascontiguousarray(v[:b]) for k, v in test.inputs.items()}
                    t = _p50_us(engines, feeds)
                    row = {
                        "fusion": fusion,
                        "dim": dim,
                        "batch": b,
                        "macs_per_frame": int(macs),
                        "fp32_p50_us": t["fp32"],
                        "int8_p50_us": t["int8"],
                        "int8_over_fp32": t["int8"] / t["fp32"],
                        "int8_large_p50_us": t["int8_large"],
                        "int8_large_over_fp32": t["int8_large"] / t["fp32"],
                        "int8_large_u8_p50_us": t["int8_large_u8"],
                        "int8_large_u8_over_fp32": t["int8_large_u8"] / t["fp32"],
                    }
                    rows.append(row)
                    print(
                        f"{fusion:7s} dim {dim:5d} batch {b:3d}  {macs / 1e6:7.2f} M MACs/frame  "
                        f"fp32 {t['fp32']:8.1f} us  int8 {t['int8']:8.1f} us ({row['int8_over_fp32']:.2f}x)  "
                        f"int8 large {t['int8_large']:8.1f} us ({row['int8_large_over_fp32']:.2f}x)  "
                        f"u8 large {t['int8_large_u8']:8.1f} us ({row['int8_large_u8_over_fp32']:.2f}x)",
                        flush=True,
                    )
                for e in engines.values():
                    e.close()
    doc = {
        "machine": machine(),
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        "threads": 1,
        "calibration": {"method": "minmax", "size": len(sample)},
        "int8_forms": {
            "int8": "every Conv/Gemm/MatMul",
            "int8_large": f"only weights >= {args.min_weights} values",
            "int8_large_u8": f"only weights >= {args.min_weights} values, asymmetric U8 activations",
        },
        "seconds": round(time.time() - start, 1),
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_scaling.json").write_text(json.dumps(doc, indent=2))
    _plot(rows, args.out / "int8_scaling.png", doc)
    return 0


def _plot(rows: list, path: Path, doc: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for fusion in dict.fromkeys(r["fusion"] for r in rows):
        for b, style in zip(sorted({r["batch"] for r in rows}), ("-o", "--s", ":^")):
            pts = sorted(
                (r["macs_per_frame"] / 1e6, r["int8_over_fp32"])
                for r in rows
                if r["fusion"] == fusion and r["batch"] == b
            )
            ax.plot(*zip(*pts), style, label=f"{fusion}, batch {b}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(0.55, color="red", lw=0.8, ls="--", label="issue 4 bar (0.55)")
    ax.set_xscale("log")
    ax.set_xlabel("model size (M MACs per frame)")
    ax.set_ylabel("INT8 / FP32 p50 latency (ORT, 1 thread)")
    ax.set_title(
        f"INT8 vs FP32 on {doc['machine']['cpu'][:40]} (VNNI: "
        f"{doc['machine']['avx512_vnni'] or doc['machine']['avx_vnni']})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
