"""The runtime's cost over its engines: overhead, swap latency, the first inference after a swap, RSS growth.

On a bundle (default: the one `make demo` builds), batch 1, one engine thread, in one run:

* **overhead**: ``Runtime.infer()`` against calling the same engine (the all-sensor one) with
  ``Engine.run`` directly, interleaved call by call on the same frames; the runtime's own
  ``overhead_ms`` is reported too. Target: p50 <= 30 us.
* **swap latency**: from the start of the ``push`` that takes a sensor out of LIVE (a NaN
  frame) to the return of the first ``infer()`` answered by the new engine, for each sensor in
  turn, after ``--steady`` inferences on the all-sensor engine. Target: p99 <= one inference
  of the new engine + 100 us, read two ways: the swap less the new engine's run inside it
  (what the runtime adds), and the swap against the new engine's p50 (which also charges the
  first run's cold caches to the swap).
* **first inference after a swap**: the new engine's latency on that first call against its
  p50, both back to back (``Engine.run`` in a loop) and as the runtime serves it (frames pushed
  between inferences). Target: <= 2x.
* **RSS growth** over 10^5 inferences with frames pushed before each and a fault every 1000.
  Target: < 20 MB.

Writes ``runtime.json`` (every figure, the targets and verdicts, CPU and versions).

    python bench/bench_runtime.py --bundle runs/demo/bundle --out bench/results/local
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, quantiles, write_report


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iters", type=int, default=5000, help="interleaved overhead pairs (default 5000)")
    p.add_argument("--swaps", type=int, default=300, help="swaps per sensor (default 300)")
    p.add_argument("--steady", type=int, default=50, help="inferences on the all-sensor engine before each swap")
    p.add_argument(
        "--long-steady",
        type=int,
        default=2000,
        help="inferences on the all-sensor engine before each of the --long-swaps swaps (a long-idle engine)",
    )
    p.add_argument("--long-swaps", type=int, default=20)
    p.add_argument("--rss-iters", type=int, default=100_000)
    args = p.parse_args(argv)

    import onnxruntime as ort

    from edgefuse import __version__
    from edgefuse.bundle import load_bundle
    from edgefuse.data import load_sensorscenes
    from edgefuse.runtime import ManualClock, Policy, Runtime, SensorPolicy

    if not (args.bundle / "manifest.json").is_file():
        print(f"bench_runtime: no bundle at {args.bundle}; run `make demo` first (it builds one)", file=sys.stderr)
        return 2
    # the runtime logs each sensor loss at WARNING: here to nowhere, so that a terminal's write is not what is timed
    logging.getLogger("edgefuse.runtime").setLevel(logging.ERROR)
    bundle = load_bundle(args.bundle)
    names = bundle.modality_names
    full = "+".join(names)
    test = load_sensorscenes()["test"]
    frames = [{n: np.ascontiguousarray(test.inputs[n][i]) for n in names} for i in range(64)]
    nan_frame = {n: np.full(test.inputs[n].shape[1:], np.nan, dtype=test.inputs[n].dtype) for n in names}

    clock = ManualClock(0.0)
    # readmission after one valid frame: the swap back is not what is measured, and the loop stays short
    policy = Policy(default=SensorPolicy(recover_frames=1, recover_s=0.0, frozen_s=float("inf")))
    rt = Runtime.from_bundle(args.bundle, policy=policy, clock=clock, threads=1)
    engines = rt.engines

    def push_all(i: int) -> None:
        for n in names:
            rt.push(n, frames[i % 64][n])

    # ---- overhead: infer() vs engine.run() on the same frames, interleaved -----------------------
    clock.advance(0.001)
    push_all(0)
    direct_feeds = {n: frames[0][n][None] for n in names}
    eng = engines[full]
    for _ in range(200):
        rt.infer()
        eng.run(direct_feeds)
    t_rt, t_direct, own = np.empty(args.iters), np.empty(args.iters), np.empty(args.iters)
    for i in range(
        args.iters
    ):  # ABBA: each goes first half of the time, so neither always finds the other's warm caches
        if i % 2:
            t0 = time.perf_counter()
            eng.run(direct_feeds)
            t1 = time.perf_counter()
            r = rt.infer()
            t2 = time.perf_counter()
            t_direct[i], t_rt[i] = (t1 - t0) * 1e6, (t2 - t1) * 1e6
        else:
            t0 = time.perf_counter()
            r = rt.infer()
            t1 = time.perf_counter()
            eng.run(direct_feeds)
            t2 = time.perf_counter()
            t_rt[i], t_direct[i] = (t1 - t0) * 1e6, (t2 - t1) * 1e6
        own[i] = r.overhead_ms * 1e3
    assert r.engine == full
    overhead = {
        "engine": full,
        "infer": quantiles(t_rt),
        "engine_run_direct": quantiles(t_direct),
        "runtime_reported_overhead": quantiles(own),
        "p50_us": float(np.median(t_rt) - np.median(t_direct)),
        "p99_us": float(np.percentile(t_rt, 99) - np.percentile(t_direct, 99)),
    }
    print(
        f"overhead over engine.run: p50 {overhead['p50_us']:.1f} us, p99 {overhead['p99_us']:.1f} us "
        f"(infer p50 {overhead['infer']['p50_us']:.1f} us, direct p50 {overhead['engine_run_direct']['p50_us']:.1f} us)"
    )

    # ---- each engine's own p50, called directly -------------------------------------------------
    p50 = {}
    for key, e in engines.items():
        feeds = {n: frames[1][n][None] for n in key.split("+")}
        ts = []
        for _ in range(1000):
            t0 = time.perf_counter()
            e.run(feeds)
            ts.append((time.perf_counter() - t0) * 1e6)
        p50[key] = float(np.median(ts))

    # ---- swap latency and the first inference after a swap -------------------------------------
    swaps = {}
    for drop in names:
        new = "+".join(n for n in names if n != drop)
        lat, first, served, own = [], [], [], []
        for k in range(args.swaps):
            clock.advance(0.001)
            push_all(k)  # readmits `drop` (one frame is enough under this policy)
            for _ in range(args.steady):
                r = rt.infer()
            assert r.engine == full, r
            clock.advance(0.001)
            for n in names:
                if n != drop:
                    rt.push(n, frames[(k + 1) % 64][n])
            t0 = time.perf_counter()
            rt.push(drop, nan_frame[drop])
            r = rt.infer()
            t1 = time.perf_counter()
            assert r.engine == new, (r.engine, new)
            lat.append((t1 - t0) * 1e6)
            first.append(r.latency_ms * 1e3)
            own.append(lat[-1] - first[-1])
            for j in range(5):  # the new engine as the runtime serves it, frames pushed between inferences
                clock.advance(0.001)
                for n in names:
                    if n != drop:
                        rt.push(n, frames[(k + j + 2) % 64][n])
                served.append(rt.infer().latency_ms * 1e3)
        lat_q, first_q, served_q = quantiles(lat), quantiles(first), quantiles(served)
        swaps[f"{full} -> {new}"] = {
            "dropped": drop,
            "swap_latency": lat_q,
            "swap_latency_less_new_engine_run": quantiles(own),
            "new_engine_p50_us": p50[new],
            "new_engine_served": served_q,
            "swap_p99_minus_engine_p50_us": lat_q["p99_us"] - p50[new],
            "swap_p99_minus_served_p50_us": lat_q["p99_us"] - served_q["p50_us"],
            "first_inference": first_q,
            "first_over_p50": {"p50": first_q["p50_us"] / p50[new], "p99": first_q["p99_us"] / p50[new]},
            "first_over_served_p50": {
                "p50": first_q["p50_us"] / served_q["p50_us"],
                "p99": first_q["p99_us"] / served_q["p50_us"],
            },
        }
        print(
            f"swap {full} -> {new}: p50 {lat_q['p50_us']:.0f} us, p99 {lat_q['p99_us']:.0f} us; new engine p50 "
            f"{p50[new]:.0f} us back to back, {served_q['p50_us']:.0f} us as served; first inference "
            f"{first_q['p50_us']:.0f} us p50, {first_q['p99_us']:.0f} us p99"
        )

    # ---- after a long time on the all-sensor engine: how cold is the first inference of another? ----
    long_first, long_ratio = [], []
    for k in range(args.long_swaps):
        drop = names[k % len(names)]
        new = "+".join(n for n in names if n != drop)
        clock.advance(0.001)
        push_all(k)
        for i in range(args.long_steady):
            clock.advance(0.0001)
            push_all(i)
            rt.infer()
        clock.advance(0.0001)
        rt.push(drop, nan_frame[drop])
        r = rt.infer()
        assert r.engine == new
        long_first.append(r.latency_ms * 1e3)
        long_ratio.append(long_first[-1] / swaps[f"{full} -> {new}"]["new_engine_served"]["p50_us"])
    long_idle = {
        "steady": args.long_steady,
        "swaps": args.long_swaps,
        "first_inference": quantiles(long_first),
        "first_over_served_p50": {"p50": float(np.median(long_ratio)), "max": float(np.max(long_ratio))},
    }
    print(
        f"after {args.long_steady} inferences on {full}: first inference of the new engine "
        f"{np.median(long_first):.0f} us p50 "
        f"({np.median(long_ratio):.1f}x its p50 as served)"
    )

    # ---- RSS growth over --rss-iters inferences -------------------------------------------------
    clock.advance(0.001)
    push_all(0)
    for i in range(1000):
        clock.advance(0.001)
        push_all(i)
        rt.infer()
    rss0 = _rss_mb()
    wall = time.perf_counter()
    for i in range(args.rss_iters):
        clock.advance(0.001)
        push_all(i)
        if i % 1000 == 500:
            rt.push(names[i % len(names)], nan_frame[names[i % len(names)]])
        rt.infer()
    rss1 = _rss_mb()
    rss = {
        "inferences": args.rss_iters,
        "rss_before_mb": rss0,
        "rss_after_mb": rss1,
        "growth_mb": rss1 - rss0,
        "seconds": time.perf_counter() - wall,
        "swaps": rt.counters()["swaps"],
    }
    print(f"RSS over {args.rss_iters} inferences: {rss0:.1f} -> {rss1:.1f} MB ({rss1 - rss0:+.2f} MB)")
    rt.close()

    worst_swap = max(s["swap_latency_less_new_engine_run"]["p99_us"] for s in swaps.values())
    worst_swap_strict = max(s["swap_p99_minus_served_p50_us"] for s in swaps.values())
    worst_first = max(s["first_over_served_p50"]["p50"] for s in swaps.values())
    worst_first_b2b = max(s["first_over_p50"]["p50"] for s in swaps.values())
    report = {
        "bundle": str(args.bundle),
        "backend": bundle.manifest["backend"],
        "precision": bundle.manifest["precision"],
        "batch": 1,
        "engine_threads": 1,
        "runtime_log_level": "ERROR",
        "iters": args.iters,
        "swaps_per_sensor": args.swaps,
        "steady": args.steady,
        "machine": machine(),
        "versions": {"edgefuse": __version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
        "overhead": overhead,
        "engine_p50_us": p50,
        "swaps": swaps,
        "long_idle": long_idle,
        "rss": rss,
        "targets": {
            "overhead_p50_us <= 30": overhead["p50_us"] <= 30,
            "swap p99 <= the new engine's run in it + 100 us": worst_swap <= 100,
            "swap p99 <= new engine p50 (as served) + 100 us": worst_swap_strict <= 100,
            "first inference after a swap <= 2x the engine's p50 as served (median over swaps)": worst_first <= 2.0,
            "first inference after a swap <= 2x the engine's p50 back to back (median over swaps)": worst_first_b2b
            <= 2.0,
            "rss growth < 20 MB": rss["growth_mb"] < 20,
        },
    }
    write_report(report, args.out / "runtime.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
