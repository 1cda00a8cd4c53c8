"""Per-subset bundles against split bundles, on one checkpoint: bytes, build time, accuracy, latency, encoder CPU.

For 3 sensors (the ``make demo`` checkpoint, INT8 and FP32) and for 6 (SensorScenes' three
sensors twice, the second copy with extra noise, a gated model trained here; FP32, every one
of the 63 subsets an engine in the per-subset bundle), in one run, batch 1, one engine thread:

* bundle bytes (every file) and build time;
* accuracy per subset, as each manifest records it;
* ``Runtime.infer()`` with every sensor live, p50/p99, per-subset and split interleaved, with
  the per-subset all-sensor engine and the split bundle's head engine called directly (target:
  split ``infer()`` p50 at most half of the all-sensor engine's), and the head's node count (in
  its ONNX graph, and as ONNX Runtime runs it). Two ways: back to back with no new frames (each
  call after the others'), and as served (each sensor's new frame pushed before each call, the split bundle running its
  encoders there, the engine's feeds filled before its run);
* time from the last frame's arrival to the result: ``push`` of the last sensor's frame (a
  split bundle runs that sensor's encoder there) and ``infer()``;
* each encoder's CPU cost per second at its sensor's rate (its p50 x the rate);
* a swap in a split bundle: the first result after a sensor leaves LIVE, against ``infer()``.

Writes ``split.json``.

    python bench/bench_split.py --checkpoint runs/demo/checkpoint --out bench/results/local
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from _common import machine, quantiles, weighted_share, write_report


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def six_sensor_data(seed: int = 0):
    """SensorScenes with each sensor twice: the second copy of every sample with Gaussian noise of a tenth
    of the sensor's value range added (and clipped to it), so that six sensors see the same objects."""
    from edgefuse.data import Dataset, Split, load_sensorscenes
    from edgefuse.specs import ModalitySpec

    base = load_sensorscenes(seed=seed)
    rng = np.random.default_rng(seed + 7)
    specs = list(base.specs)
    for s in base.specs:
        specs.append(ModalitySpec(f"{s.name}2", s.shape, s.kind, s.dtype, s.rate_hz, s.value_range))
    splits = {}
    for name, sp in base.splits.items():
        inputs = dict(sp.inputs)
        for s in base.specs:
            lo, hi = s.value_range
            noisy = sp.inputs[s.name] + rng.normal(0, 0.1 * (hi - lo), sp.inputs[s.name].shape).astype(np.float32)
            inputs[f"{s.name}2"] = np.clip(noisy, lo, hi).astype(np.float32)
        splits[name] = Split(inputs, sp.labels)
    return Dataset(specs, splits, base.class_names, name="sensorscenes-x2", description=f"SensorScenes x2 seed={seed}")


def compare(checkpoint: Path, data, precision: str, subsets, work: Path, iters: int) -> dict:
    from edgefuse.build import build_bundle
    from edgefuse.engines.ort import OrtEngine
    from edgefuse.runtime import ManualClock, Runtime

    out: dict = {"precision": precision, "sensors": data.modality_names}
    bundles = {}
    for kind in ("subsets", "split"):
        path = work / f"{kind}-{precision}"
        t0 = time.perf_counter()
        b = build_bundle(
            checkpoint,
            path,
            precision=precision,
            data=data,
            subsets=subsets if kind == "subsets" else None,
            split=kind == "split",
            gate_fail="fp32",
            progress=False,
        )
        bundles[kind] = b
        out[kind] = {
            "bytes": _bytes(path),
            "build_seconds": time.perf_counter() - t0,
            "engines": len(b.subsets) if kind == "subsets" else len(b.manifest["encoders"]) + 1,
            "subsets_served": len(b.subsets),
            "accuracy": {k: v["accuracy"].get(v["precision"], v["accuracy"]["fp32"]) for k, v in b.subsets.items()},
        }
        print(
            f"{kind:8s} {precision}: {out[kind]['bytes'] / 1e6:.2f} MB, {out[kind]['engines']} engines serving "
            f"{out[kind]['subsets_served']} subsets, built in {out[kind]['build_seconds']:.1f} s",
            flush=True,
        )
    out["bytes_ratio_split_over_subsets"] = out["split"]["bytes"] / out["subsets"]["bytes"]

    test = data["test"]
    names = data.modality_names
    full = "+".join(names)
    frames = [{n: np.ascontiguousarray(test.inputs[n][i]) for n in names} for i in range(32)]
    clocks = {k: ManualClock(0.0) for k in bundles}
    rts = {k: Runtime.from_bundle(b.root, clock=clocks[k], threads=1) for k, b in bundles.items()}
    direct = OrtEngine(bundles["subsets"].engine_path(full), threads=1)
    direct_feeds = {n: frames[0][n][None] for n in names}
    split_bundle = bundles["split"]
    encoders = {
        s.name: OrtEngine(split_bundle.root / split_bundle.manifest["encoders"][s.name]["engine"], threads=1)
        for s in data.specs
    }
    head_entry = split_bundle.manifest["head"]
    head = OrtEngine(split_bundle.root / head_entry["engine"], threads=1)
    embeddings = np.stack([next(iter(encoders[n].run({n: frames[0][n][None]}).values()))[0] for n in names])
    head_feeds = {"embeddings": embeddings[None], "present": np.ones((1, len(names)), dtype=bool)}
    out["head"] = {
        "precision": head_entry.get("precision"),
        "onnx_nodes": len(onnx.load(str(head.source)).graph.node),
        "nodes_run": weighted_share(head, head_feeds)["nodes_per_run"],
    }
    for k, rt in rts.items():
        clocks[k].advance(0.001)
        for n in names:
            rt.push(n, frames[0][n])
    t = {"subsets": [], "split": [], "direct": [], "head": []}
    order = list(t)
    for i in range(iters):  # rotated, so that none always runs first
        for k in order[i % 4 :] + order[: i % 4]:
            t0 = time.perf_counter()
            if k == "direct":
                direct.run(direct_feeds)
            elif k == "head":
                head.run(head_feeds)
            else:
                r = rts[k].infer()
                assert r.used == tuple(names), r
            t[k].append((time.perf_counter() - t0) * 1e6)
    out["infer_all_live"] = {k: quantiles(v) for k, v in t.items()}
    out["split_infer_p50_over_direct_engine_p50"] = (
        out["infer_all_live"]["split"]["p50_us"] / out["infer_all_live"]["direct"]["p50_us"]
    )

    # as served: every sensor's new frame pushed (a split bundle encodes it there), then infer() timed; the
    # all-sensor engine in the same loop, its feeds filled from the frames, then run timed
    served = {"subsets": [], "split": [], "direct": []}
    order = list(served)
    for i in range(iters):
        f = frames[(i + 1) % 32]
        for k in order[i % 3 :] + order[: i % 3]:
            if k == "direct":
                feeds = {n: f[n][None] for n in names}
                t0 = time.perf_counter()
                direct.run(feeds)
            else:
                clocks[k].advance(0.001)
                for n in names:
                    rts[k].push(n, f[n])
                t0 = time.perf_counter()
                rts[k].infer()
            served[k].append((time.perf_counter() - t0) * 1e6)
    out["infer_as_served"] = {k: quantiles(v) for k, v in served.items()}
    out["split_served_p50_over_direct_engine_p50"] = (
        out["infer_as_served"]["split"]["p50_us"] / out["infer_as_served"]["direct"]["p50_us"]
    )

    last = {k: [] for k in rts}  # the last sensor's frame arriving, then the result
    for i in range(iters // 4):
        for k, rt in rts.items():
            clocks[k].advance(0.001)
            for n in names[:-1]:
                rt.push(n, frames[(i + 1) % 32][n])
            t0 = time.perf_counter()
            rt.push(names[-1], frames[(i + 1) % 32][names[-1]])
            rt.infer()
            last[k].append((time.perf_counter() - t0) * 1e6)
    out["last_frame_to_result"] = {k: quantiles(v) for k, v in last.items()}

    enc = {}
    for s in data.specs:
        e = encoders[s.name]
        feeds = {s.name: frames[0][s.name][None]}
        for _ in range(100):
            e.run(feeds)
        ts = []
        for _ in range(500):
            t0 = time.perf_counter()
            e.run(feeds)
            ts.append(time.perf_counter() - t0)
        p50 = float(np.median(ts))
        enc[s.name] = {"p50_us": p50 * 1e6, "rate_hz": s.rate_hz, "cpu_share_of_one_core": p50 * s.rate_hz}
    out["encoder_cpu"] = enc

    # a swap in the split bundle: no engine changes, the mask does
    rt, clock = rts["split"], clocks["split"]
    swaps = []
    for i in range(200):
        clock.advance(0.5)  # long enough for any sensor to be readmitted below
        for _ in range(6):
            clock.advance(0.06)
            for n in names:
                rt.push(n, frames[(i + _) % 32][n])
        rt.infer()
        t0 = time.perf_counter()
        rt.push(names[0], np.full(data.specs[0].shape, np.nan, dtype=np.float32))
        r = rt.infer()
        swaps.append((time.perf_counter() - t0) * 1e6)
        assert names[0] not in r.used
    out["split_swap_latency"] = quantiles(swaps)
    for e in [*rts.values(), direct, head, *encoders.values()]:
        e.close()
    print(
        f"  infer(), all live, p50: per-subset {out['infer_all_live']['subsets']['p50_us']:.0f} us, split "
        f"{out['infer_all_live']['split']['p50_us']:.0f} us, the all-sensor engine alone "
        f"{out['infer_all_live']['direct']['p50_us']:.0f} us, the head alone "
        f"{out['infer_all_live']['head']['p50_us']:.0f} us ({out['head']['onnx_nodes']} ONNX nodes); split/engine "
        f"{out['split_infer_p50_over_direct_engine_p50']:.2f}; bytes split/per-subset "
        f"{out['bytes_ratio_split_over_subsets']:.3f}",
        flush=True,
    )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--six-epochs", type=int, default=15, help="training epochs of the 6-sensor model (default 15)")
    p.add_argument(
        "--skip-six", action="store_true", help="the 3-sensor comparison only (the 6-sensor one takes minutes)"
    )
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from edgefuse import __version__
    from edgefuse.data import load_sensorscenes
    from edgefuse.specs import all_subsets
    from edgefuse.train import TrainConfig, train

    logging.getLogger("edgefuse.runtime").setLevel(logging.ERROR)
    if not (args.checkpoint / "config.json").is_file():
        print(
            f"bench_split: no checkpoint at {args.checkpoint}; run `make demo` first (it trains one)", file=sys.stderr
        )
        return 2
    torch.set_num_threads(1)
    report = {
        "machine": machine(),
        "versions": {"edgefuse": __version__, "onnxruntime": ort.__version__, "torch": torch.__version__},
        "batch": 1,
        "engine_threads": 1,
    }
    with tempfile.TemporaryDirectory(prefix="edgefuse-bench-split.") as work:
        work = Path(work)
        demo = load_sensorscenes()
        report["n3"] = {
            p: compare(args.checkpoint, demo, p, None, work / f"n3-{p}", args.iters) for p in ("int8", "fp32")
        }
        if args.skip_six:
            write_report(report, args.out / "split-n3.json")
            return 0
        six = six_sensor_data()
        ck = work / "six" / "checkpoint"
        t0 = time.perf_counter()
        train(
            six, TrainConfig(fusion="gated", epochs=args.six_epochs), out=ck, progress=False, source="sensorscenes-x2"
        )
        report["n6_training_seconds"] = time.perf_counter() - t0
        report["n6_data"] = "SensorScenes' camera, lidar and radar, and each again with noise of 0.1 x its value range"
        report["n6"] = {"fp32": compare(ck, six, "fp32", all_subsets(six.modality_names), work / "n6", args.iters)}
    n6 = report["n6"]["fp32"]
    report["targets"] = {
        "n3 split int8 within 1 point of fp32 and of the per-subset bundle": all(
            abs(report["n3"]["int8"]["split"]["accuracy"][k] - report["n3"]["int8"]["subsets"]["accuracy"][k]) <= 0.01
            for k in report["n3"]["int8"]["split"]["accuracy"]
        ),
        "n6 split bytes <= a quarter of the per-subset bundle's, serving all 63 subsets": (
            n6["bytes_ratio_split_over_subsets"] <= 0.25 and n6["split"]["subsets_served"] == 63
        ),
        "split infer() p50 <= half the per-subset all-sensor engine's p50, as served (n3 int8)": (
            report["n3"]["int8"]["split_served_p50_over_direct_engine_p50"] <= 0.5
        ),
        "split infer() p50 <= half the per-subset all-sensor engine's p50, back to back (n3 int8)": (
            report["n3"]["int8"]["split_infer_p50_over_direct_engine_p50"] <= 0.5
        ),
    }
    write_report(report, args.out / "split.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
