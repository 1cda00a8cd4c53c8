"""A fault scenario as a ROS 2 bag: record it, replay it through a bundle, and compare with replaying the
scenario itself (what the README's bag row quotes).

    python bench/bench_bag.py --bundle runs/demo/bundle --out bench/results/local
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle"))
    p.add_argument("--scenario", type=Path, default=Path("scenarios/camera_unplugged.toml"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import logging

    from edgefuse import __version__
    from edgefuse.bundle import load_bundle
    from edgefuse.data import load_dataset
    from edgefuse.ros.bag import record_bag, replay_bag
    from edgefuse.runtime import Runtime
    from edgefuse.runtime.scenario import ReplayClock, Scenario, replay

    logging.getLogger("edgefuse.runtime").setLevel(logging.ERROR)
    bundle = load_bundle(args.bundle)
    src = bundle.manifest.get("source", {})
    data = load_dataset(src.get("dataset") or "sensorscenes", seed=int(src.get("seed", 0)))
    test = data["test"]
    scenario = Scenario.from_toml(args.scenario, bundle.specs)
    with tempfile.TemporaryDirectory(prefix="edgefuse-bench-bag.") as tmp:
        bag = Path(tmp) / "scenario.mcap"
        t0 = time.perf_counter()
        desc = record_bag(scenario, data.specs, test.inputs, test.labels, bag, progress=False)
        record_s = time.perf_counter() - t0
        size = bag.stat().st_size
        timelines = {}
        for kind in ("scenario", "bag"):
            clock = ReplayClock()
            with Runtime.from_bundle(args.bundle, clock=clock, threads=1) as rt:
                t0 = time.perf_counter()
                if kind == "bag":
                    timelines[kind] = replay_bag(rt, bag, clock)
                else:
                    timelines[kind] = replay(rt, scenario, test.inputs, test.labels, clock)
                timelines[kind]["seconds"] = time.perf_counter() - t0
    phases = [
        {
            "name": s["name"],
            "engines_equal": s["engines"] == b["engines"],
            "rejected_equal": s["rejected"] == b["rejected"],
            "accuracy": {"scenario": s["accuracy"], "bag": b["accuracy"]},
        }
        for s, b in zip(timelines["scenario"]["phases"], timelines["bag"]["phases"])
    ]
    report = {
        "machine": machine(),
        "versions": {"edgefuse": __version__},
        "scenario": str(args.scenario),
        "bundle": str(args.bundle),
        "messages": sum(desc["messages"].values()),
        "bag_mb": size / 1e6,
        "record_seconds": record_s,
        "replay_seconds": {k: v["seconds"] for k, v in timelines.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "phases": phases,
        "targets": {
            "same engines, rejected frames and accuracy (within 1 point) per phase": all(
                p["engines_equal"]
                and p["rejected_equal"]
                and abs((p["accuracy"]["scenario"] or 0) - (p["accuracy"]["bag"] or 0)) <= 0.01
                for p in phases
            )
        },
    }
    print(
        f"{report['messages']} messages, {report['bag_mb']:.1f} MB, recorded in {record_s:.1f} s; replayed in "
        f"{report['replay_seconds']['bag']:.1f} s (the scenario: {report['replay_seconds']['scenario']:.1f} s)"
    )
    write_report(report, args.out / "bag.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
