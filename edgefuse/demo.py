"""``edgefuse demo``: the product doing its job, end to end, in one folder.

SensorScenes -> train the gated model -> evaluate every sensor subset -> build the INT8 ONNX Runtime
bundle (each subset the fastest engine that passes the accuracy gate) and, for the INT8 / FP32
comparison, the same model INT8 wherever it passes the gate -> replay a camera-dropout scenario
through the runtime -> ``edgefuse bench`` -> one summary table. Every artefact lands in ``out``
and is listed at the end. ``make demo`` runs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "camera_unplugged.toml"

#: the demo's scenario when the package is installed without the repository's scenarios/ folder: the
#: camera's cable comes loose for a third of the replay
_SCENARIO_TOML = """
name = "camera unplugged"
description = "camera sends nothing from 200 s to 400 s, then comes back"
duration_s = 600.0

[[faults]]
sensor = "camera"
kind = "off"
start_s = 200.0
end_s = 400.0
"""

STAGES = ("train", "evaluate", "build", "build int8", "replay", "bench")


def run_demo(
    out: str | Path = "runs/demo",
    progress: bool = True,
    bench_iters: int = 200,
    fast: bool = False,
    checkpoint: str | Path | None = None,
) -> dict:
    """Run every stage into ``out``; return the summary (also written as ``summary.json``). ``fast``: a few
    hundred training steps, short timings and the four subsets the replay uses (the numbers are not the
    demo's). ``checkpoint``: start from
    this trained gated SensorScenes model (copied in) instead of training."""
    from tqdm.auto import tqdm

    from edgefuse._fs import write_json
    from edgefuse._plot import pyplot
    from edgefuse.benchmark import bench_bundle, write_outputs
    from edgefuse.build import build_bundle
    from edgefuse.data import load_sensorscenes
    from edgefuse.evaluate import evaluate, plot_report
    from edgefuse.runtime import Runtime
    from edgefuse.runtime.scenario import ReplayClock, Scenario, replay
    from edgefuse.train import TrainConfig, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    stages = tqdm(STAGES, desc="edgefuse demo", unit="stage", disable=not progress, position=0)
    t_all = time.perf_counter()

    def stage(name: str) -> float:
        stages.set_postfix_str(name)
        return time.perf_counter()

    data = load_sensorscenes()
    # -- train
    t = stage("train")
    if checkpoint is not None:
        import shutil

        from edgefuse.checkpoint import load_checkpoint

        if Path(checkpoint).resolve() != (out / "checkpoint").resolve():
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            shutil.copytree(checkpoint, out / "checkpoint")
        model, _ = load_checkpoint(out / "checkpoint")
    else:
        config = TrainConfig(fusion="gated", max_steps=300) if fast else TrainConfig(fusion="gated")
        model = train(data, config, out=out / "checkpoint", progress=progress, source="sensorscenes").model
    seconds["train"] = time.perf_counter() - t
    stages.update()
    # -- evaluate
    t = stage("evaluate")
    report = evaluate(model, data, split="test", with_robustness=not fast)
    report["checkpoint"] = str(out / "checkpoint")
    write_json(report, out / "eval.json")
    if pyplot() is not None:  # plots are the plot extra's; the rest of the demo needs none
        plot_report(report, out / "eval.png")
    seconds["evaluate"] = time.perf_counter() - t
    stages.update()
    # -- the deployable bundle, then INT8 everywhere it passes the gate (for INT8 / FP32 in one bench run)
    iters = 20 if fast else 200
    names = data.modality_names
    # fast: 128 calibration samples, and only the subsets the replay needs (all sensors, each one missing)
    calib = {"calib_size": 128, "subsets": [names, *[[n for n in names if n != m] for m in names]]} if fast else {}
    built = {}
    for name, folder, strict in (("build", "bundle", False), ("build int8", "bundle-int8", True)):
        t = stage(name)
        built[name] = build_bundle(
            out / "checkpoint",
            out / folder,
            backend="ort",
            precision="int8",
            gate_fail="fp32",
            strict=strict,
            progress=progress,
            latency_iters=iters,
            **calib,
        )
        seconds[name] = time.perf_counter() - t
        stages.update()
    bundle, forced = built["build"], built["build int8"]
    # -- the runtime through a camera dropout
    t = stage("replay")
    text = SCENARIO.read_text() if SCENARIO.is_file() else _SCENARIO_TOML
    (out / "scenario.toml").write_text(text)
    scenario = Scenario.from_toml(out / "scenario.toml", bundle.specs)
    clock = ReplayClock(realtime=False)
    test = data["test"]
    with Runtime.from_bundle(out / "bundle", policy=scenario.policy, clock=clock, threads=1) as rt:
        timeline = replay(rt, scenario, test.inputs, test.labels, clock)
    timeline["data"] = "sensorscenes"
    write_json(timeline, out / "timeline.json")
    _plot_timeline(timeline, out / "timeline.png")
    seconds["replay"] = time.perf_counter() - t
    stages.update()
    # -- latency: every engine, its peers, the INT8 bundle, the runtime
    t = stage("bench")
    bench = bench_bundle(
        out / "bundle",
        batches=(1, 8) if fast else (1, 8, 32),
        iters=20 if fast else bench_iters,
        against=out / "bundle-int8",
        checkpoint=out / "checkpoint",
        runtime_iters=200 if fast else 2000,
        swaps=5 if fast else 50,
        progress=progress,
    )
    write_outputs(bench, out / "bench")
    seconds["bench"] = time.perf_counter() - t
    stages.update()
    stages.close()
    seconds["total"] = time.perf_counter() - t_all
    summary = _summary(bundle, forced, report, timeline, bench, seconds)
    summary["artefacts"] = _artefacts(out)
    write_json(summary, out / "summary.json")
    (out / "summary.md").write_text(format_summary(summary))
    return summary


def _artefacts(out: Path) -> list[str]:
    """Every file the demo wrote, a bundle's engine and calibration files as one line per folder."""
    files = {p for p in out.rglob("*") if p.is_file()} | {out / "summary.json", out / "summary.md"}
    lines, folders = [], {}
    for p in sorted(files):
        rel = p.relative_to(out).parts
        if len(rel) == 3 and rel[0].startswith("bundle") and rel[1] in ("engines", "calibration"):
            folders.setdefault(p.parent, []).append(p)
        else:
            lines.append(str(p))
    lines += [
        f"{d}/ ({len(v)} files: {', '.join(sorted({x.name.split('.', 1)[1] for x in v}))})" for d, v in folders.items()
    ]
    return sorted(lines)


def _summary(bundle, forced, report, timeline, bench, seconds) -> dict[str, Any]:
    rows = []
    head = bench["settings"]["headline"]
    lat = {(r["subset"], r["batch"]): r for r in bench["engines"]}
    for key, e in bundle.subsets.items():
        acc = e["accuracy"]
        r1 = lat.get((key, 1))
        rows.append(
            {
                "subset": key,
                "fp32": acc.get("fp32"),
                "int8": acc.get("int8"),
                "engine": e["precision"],
                "p50_us": r1["edgefuse"]["p50_us"] if r1 else None,
                "p99_us": r1["edgefuse"]["p99_us"] if r1 else None,
                "int8_p50_us": r1["against"]["p50_us"] if r1 and "against" in r1 else None,
                "int8_engine": forced.subsets[key]["precision"],
            }
        )
    phases = [
        {
            "time_s": f"{p['start_s']:g}-{p['end_s']:g}",
            "phase": p["name"],
            "engines": p["engines"],
            "accuracy": p["accuracy"],
            "expected": p["expected_accuracy"],
            "swaps": len(p["swaps"]),
        }
        for p in timeline["phases"]
    ]
    rt = bench.get("runtime") or {}
    swaps = rt.get("swaps", {})
    return {
        "subsets": rows,
        "timeline": phases,
        "runtime": {
            "overhead_p50_us": rt.get("overhead", {}).get("p50_us"),
            "overhead_p99_us": rt.get("overhead", {}).get("p99_us"),
            "swap_p50_us": float(np.median([w["p50_us"] for w in swaps.values()])) if swaps else None,
            "swap_p99_us": max((w["p99_us"] for w in swaps.values()), default=None),
        },
        "cold_start_ms": bench["cold_start"]["total_ms"],
        "headline": head,
        "machine": bench["machine"],
        "seconds": seconds,
    }


def format_summary(s: dict[str, Any]) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    m = s["machine"]
    lines = [
        f"edgefuse demo on {m['cpu']} ({m['cores']} cores), {s['seconds']['total']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in s['seconds'].items() if k != 'total')})",
        "",
        "| subset | FP32 acc | INT8 acc | engine | p50 µs | p99 µs | INT8 p50 µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["subsets"]:
        lines.append(
            f"| {r['subset']} | {f(r['fp32'], '.3f')} | {f(r['int8'], '.3f')} | {r['engine']} | "
            f"{f(r['p50_us'], '.1f')} | {f(r['p99_us'], '.1f')} | {f(r['int8_p50_us'], '.1f')} |"
        )
    lines += ["", "| scenario time (s) | phase | engines | accuracy | manifest | swaps |", "|---|---|---|---|---|---|"]
    for p in s["timeline"]:
        eng = ", ".join(f"{k} ({v})" for k, v in p["engines"].items())
        lines.append(
            f"| {p['time_s']} | {p['phase']} | {eng} | {f(p['accuracy'], '.3f')} | {f(p['expected'], '.3f')} | "
            f"{p['swaps']} |"
        )
    rt = s["runtime"]
    lines += [
        "",
        f"runtime overhead over the engine: p50 {f(rt['overhead_p50_us'], '.1f')} µs, p99 "
        f"{f(rt['overhead_p99_us'], '.1f')} µs; swap on a sensor loss: p50 {f(rt['swap_p50_us'], '.0f')} µs, "
        f"p99 {f(rt['swap_p99_us'], '.0f')} µs; cold start (verify, load, first inference of every engine) "
        f"{s['cold_start_ms']:.0f} ms",
    ]
    if "artefacts" in s:
        lines += ["", "artefacts:"] + [f"  {a}" for a in s["artefacts"]]
    return "\n".join(lines) + "\n"


def _plot_timeline(timeline: dict[str, Any], path: Path) -> None:
    from edgefuse._plot import pyplot, save

    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for p in timeline["phases"]:
        a, b = p["start_s"], p["end_s"]
        acc = p["accuracy"] or 0.0
        ax.bar((a + b) / 2, acc, width=(b - a) * 0.95, color="tab:blue" if not p["faults"] else "tab:orange")
        engine = next(iter(p["engines"]), "")
        ax.text((a + b) / 2, acc + 0.02, f"{engine}\n{acc:.3f}", ha="center", fontsize=7)
        if p["expected_accuracy"] is not None:
            ax.hlines(p["expected_accuracy"], a, b, colors="black", linestyles="--", lw=0.8)
        for sw in p["swaps"]:
            ax.axvline(sw["t"], color="red", lw=0.6)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("scenario time (s); red: engine swaps; dashed: the manifest's accuracy")
    ax.set_ylabel("accuracy per phase")
    ax.set_title(timeline["scenario"]["name"], fontsize=9)
    save(fig, path)
