"""Latency of the all-sensor engine: INT8 ORT vs FP32 ORT vs PyTorch eager, on one model, in one run.

Builds (or reuses) an INT8 (``--strict``: INT8 wherever it passes the gate) and an FP32 ORT bundle
from a checkpoint, then times the all-sensor engine of each and the checkpoint's model in eager
PyTorch: batch 1 (and 8, 32), one thread each, the same SensorScenes test frames, after a
warm-up. Then every engine of the bundle ``make demo`` builds (latency-aware: each subset keeps
the fastest engine that passes the gate) against its subset's FP32 engine, interleaved. Writes
``engines.json`` (p50/p90/mean µs, ratios, the issue's bar verdicts, CPU and versions) and
``engines.png``.

    python bench/bench_engines.py --checkpoint runs/demo/checkpoint --out bench/results/cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, macs_per_frame, pyplot, weighted_share


def _time(fn, iters: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    ts = np.empty(iters)
    for i in range(iters):
        t = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t
    return {"_us": ts * 1e6}


def _summary(us: np.ndarray) -> dict:
    return {
        "p50_us": float(np.median(us)),
        "p90_us": float(np.percentile(us, 90)),
        "mean_us": float(us.mean()),
        "iters": int(len(us)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None, help="where the bundles go (default: OUT/bundles)")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batches", default="1,8,32")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from edgefuse.build import build_bundle
    from edgefuse.bundle import load_bundle
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.data import load_sensorscenes

    if not (args.checkpoint / "config.json").is_file():
        print(
            f"bench_engines: no checkpoint at {args.checkpoint}; run `make demo` first (it trains one)", file=sys.stderr
        )
        return 2
    torch.set_num_threads(1)
    work = args.work or args.out / "bundles"
    args.out.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for prec in ("int8", "fp32"):
        path = work / f"ort-{prec}"
        try:
            bundles[prec] = load_bundle(path)
        except ValueError:  # as make demo builds: a subset that fails the INT8 gate keeps FP32
            bundles[prec] = build_bundle(  # strict: the INT8 engine as built, even where FP32 is faster here
                args.checkpoint, path, backend="ort", precision=prec, progress=False, gate_fail="fp32", strict=True
            )
    model, _ = load_checkpoint(args.checkpoint)
    full = "+".join(model.names)
    if bundles["int8"].subsets[full]["precision"] != "int8":  # timing it as INT8 would be a lie
        print(
            f"bench_engines: the {full} engine failed the INT8 accuracy gate and is FP32 "
            f"({bundles['int8'].subsets[full].get('int8_rejected')}); there is no INT8 engine to time",
            file=sys.stderr,
        )
        return 2
    test = load_sensorscenes()["test"]
    macs = macs_per_frame(model, test.inputs)  # matmul/conv work of one frame
    results: dict = {}
    engines = {}
    for prec, bundle in bundles.items():
        engines[f"ort_{prec}"] = bundle.load_engine(full, threads=1, optimized_cache=True)
        engines[f"ort_{prec}"].warmup()
    for b in [int(x) for x in args.batches.split(",")]:
        feeds = {k: np.ascontiguousarray(v[:b]) for k, v in test.inputs.items()}
        x = {k: torch.from_numpy(v) for k, v in feeds.items()}
        fns = {name: (lambda e=e: e.run(feeds)) for name, e in engines.items()}

        def eager():
            with torch.inference_mode():
                return model(x)

        fns["torch_eager"] = eager
        iters = max(200, args.iters // b)
        # interleave the variants in rounds so drift on a shared machine hits them all alike
        samples = {k: [] for k in fns}
        rounds = 10
        for name, fn in fns.items():
            _time(fn, 1, warmup=50)
        for _ in range(rounds):
            for name, fn in fns.items():
                n = max(10, iters // rounds // (4 if name == "torch_eager" else 1))
                samples[name].append(_time(fn, n, warmup=5)["_us"])
        row = {name: _summary(np.concatenate(v)) for name, v in samples.items()}
        row["int8_over_fp32"] = row["ort_int8"]["p50_us"] / row["ort_fp32"]["p50_us"]
        row["int8_over_eager"] = row["ort_int8"]["p50_us"] / row["torch_eager"]["p50_us"]
        results[str(b)] = row
        print(
            f"batch {b:>3}: "
            + "  ".join(f"{k} p50 {v['p50_us']:8.1f} us" for k, v in row.items() if isinstance(v, dict))
            + f"  int8/fp32 {row['int8_over_fp32']:.2f}  int8/eager {row['int8_over_eager']:.2f}",
            flush=True,
        )
    # where batch-1 time goes (ONNX Runtime's profiler): if the FP32 graph spends a share w of a
    # run in GEMM/conv kernels, INT8 cannot go below (1 - w) x FP32 even with free integer GEMMs
    feeds1 = {k: np.ascontiguousarray(v[:1]) for k, v in test.inputs.items()}
    profile = {name: weighted_share(e, feeds1) for name, e in engines.items()}
    profile["int8_over_fp32_floor_if_int8_gemms_were_free"] = 1.0 - profile["ort_fp32"]["weighted_share"]
    print(
        "profile, batch 1: "
        + "  ".join(
            f"{k}: {v['nodes_per_run']:.0f} nodes, GEMM/conv {v['weighted_share']:.0%} of a run"
            for k, v in profile.items()
            if isinstance(v, dict)
        ),
        flush=True,
    )
    for e in engines.values():
        e.close()
    # the bundle `make demo` builds (latency-aware: each subset the fastest engine that passes the gate)
    # against the FP32 bundle, every subset, batch 1, interleaved
    auto_path = work / "ort-int8-auto"
    try:
        auto = load_bundle(auto_path)
    except ValueError:
        auto = build_bundle(
            args.checkpoint, auto_path, backend="ort", precision="int8", progress=False, gate_fail="fp32"
        )
    demo_bundle = {}
    for key, entry in auto.subsets.items():
        a = auto.load_engine(key, threads=1, optimized_cache=True)
        f = bundles["fp32"].load_engine(key, threads=1, optimized_cache=True)
        feeds = {k: np.ascontiguousarray(test.inputs[k][:1]) for k in entry["modalities"]}
        ta, tf = [], []
        for _ in range(50):
            a.run(feeds), f.run(feeds)
        for i in range(1000):
            for which in ((a, ta), (f, tf)) if i % 2 == 0 else ((f, tf), (a, ta)):
                t0 = time.perf_counter()
                which[0].run(feeds)
                which[1].append((time.perf_counter() - t0) * 1e6)
        demo_bundle[key] = {
            "precision": entry["precision"],
            "p50_us": float(np.median(ta)),
            "fp32_p50_us": float(np.median(tf)),
            "over_fp32": float(np.median(ta) / np.median(tf)),
            "build_choice": entry.get("latency", {}).get("why"),
        }
        a.close(), f.close()
        print(
            f"make-demo bundle {key:<22} {entry['precision']}: p50 {demo_bundle[key]['p50_us']:7.1f} us, "
            f"{demo_bundle[key]['over_fp32']:.2f}x its FP32 engine",
            flush=True,
        )
    b1 = results.get("1")
    bar = {}
    if b1:
        worst = max(v["over_fp32"] for v in demo_bundle.values())
        bar = {
            "int8_p50_<=0.55x_fp32_ort": {"ratio": b1["int8_over_fp32"], "pass": b1["int8_over_fp32"] <= 0.55},
            "int8_p50_<=0.4x_torch_eager": {"ratio": b1["int8_over_eager"], "pass": b1["int8_over_eager"] <= 0.4},
            "make-demo bundle: no engine slower than its FP32 engine (p50, 5 % noise)": {
                "worst_ratio": worst,
                "pass": worst <= 1.05,
            },
        }
    doc = {
        "machine": machine(),
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        "threads": 1,
        "model": {
            "fusion": model.fusion_name,
            "subset": full,
            "checkpoint": str(args.checkpoint),
            "macs_per_frame": macs,
        },
        "bar": bar,
        "int8_form": "strict INT8 bundle: " + str(bundles["int8"].manifest.get("int8_quantization", {}).get("nodes")),
        "make_demo_bundle_vs_fp32": demo_bundle,
        "profile_batch1": profile,
        "results": results,
    }
    (args.out / "engines.json").write_text(json.dumps(doc, indent=2))
    _plot(results, args.out / "engines.png", doc)
    print(json.dumps(bar, indent=2))
    return 0


def _plot(results: dict, path: Path, doc: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    variants = ["ort_int8", "ort_fp32", "torch_eager"]
    batches = list(results)
    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.27
    for i, v in enumerate(variants):
        ax.bar([j + i * w for j in range(len(batches))], [results[b][v]["p50_us"] for b in batches], w, label=v)
    ax.set_xticks([j + w for j in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (µs, 1 thread)")
    ax.set_title(f"{doc['model']['fusion']} all-sensor engine on {doc['machine']['cpu'][:40]}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
