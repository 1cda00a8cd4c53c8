"""``edgefuse bench BUNDLE``: latency with its method, its machine and what users would run instead.

In one run, on the machine it runs on:

* **cold start**, apart from steady state: verifying the bundle (schema, every checksum),
  constructing each engine, and each engine's first inference;
* **steady state**: every engine of the bundle at batch 1, 8 and 32, interleaved call by call
  with its peers on the same inputs: a plain ``onnxruntime.InferenceSession`` on the same graph
  with default settings (what a user writes first), the PyTorch model in eager mode when torch
  and the bundle's checkpoint are here, and the engines of a second bundle (``against``: e.g. the
  same model built INT8 everywhere, which gives INT8 / FP32 per subset from this run);
* **the runtime**: ``Runtime.infer()`` against calling the engine directly (its overhead), and the
  time from the frame that takes a sensor out to the first answer of the new engine (swap latency);
* ``duration``: MLPerf SingleStream style instead of a fixed count: batch 1, queries back to back
  for that many seconds and at least 1024 of them per engine, p90 the headline.

Every latency is reported as p50 / p90 / p99 / p99.9 / max with its count and the time it took,
with warm-up, threads, precision, calibration facts, the CPU (model and SIMD flags) and the
versions of onnxruntime, numpy, torch, Triton and TensorRT where present. ``write_outputs`` writes
the JSON, a Markdown page and PNG plots. Needs the device install; torch only for the eager peer.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError

REPORT_FORMAT = "edgefuse-bench/1"
SINGLE_STREAM_MIN_QUERIES = 1024  # MLPerf Inference's SingleStream minimum
#: what each engine is timed against, when it applies: plain ONNX Runtime, PyTorch eager on the CPU, a second
#: bundle; for a torch bundle on CUDA, CUDA-graph replay and torch.compile of the same model
PEERS = ("plain_ort", "torch_eager", "against", "cuda_graph", "torch_compile")


def stats(us: Sequence[float], seconds: float | None = None) -> dict[str, float]:
    """p50 / p90 / p99 / p99.9 / max / mean (microseconds) and the count of ``us`` (and the seconds they took)."""
    a = np.asarray(us, dtype=np.float64)
    out = {
        "p50_us": float(np.percentile(a, 50)),
        "p90_us": float(np.percentile(a, 90)),
        "p99_us": float(np.percentile(a, 99)),
        "p99.9_us": float(np.percentile(a, 99.9)),
        "max_us": float(a.max()),
        "mean_us": float(a.mean()),
        "n": int(a.size),
    }
    if seconds is not None:
        out["seconds"] = float(seconds)
    return out


def environment() -> dict[str, Any]:
    """The CPU (model, cores, SIMD flags), the OS, and the versions of what the numbers depend on."""
    from edgefuse import __version__
    from edgefuse._platform import cpu

    name, flags = cpu()
    versions = {"edgefuse": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "onnxruntime", "torch", "triton", "tensorrt", "cuda-python"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    simd = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp")
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "simd": [f for f in simd if f in flags],
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "versions": versions,
    }


def _inputs(specs, members: Sequence[str], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs of ``batch`` frames for ``members``: in each sensor's value range, or unit normals."""
    rng = np.random.default_rng(seed)
    by = {s.name: s for s in specs}
    out = {}
    for m in members:
        s = by[m]
        shape = (batch, *s.shape)
        if s.kind == "tokens":
            out[m] = rng.integers(0, s.vocab_size, size=shape).astype(s.dtype)
        elif s.value_range is not None:
            lo, hi = s.value_range
            out[m] = rng.uniform(lo, hi, size=shape).astype(s.dtype)
        else:
            out[m] = rng.standard_normal(shape).astype(s.dtype)
    return out


def interleaved(
    calls: Mapping[str, Callable[[], Any]],
    iters: int = 200,
    warmup: int = 20,
    duration: float | None = None,
    min_queries: int = SINGLE_STREAM_MIN_QUERIES,
) -> dict[str, dict[str, float]]:
    """Time each of ``calls`` after ``warmup`` calls, interleaved: every round calls each once, in an order
    rotated round by round, so a slow spell of the machine hits them alike. ``iters`` rounds, or with
    ``duration`` rounds until that many seconds have passed and each has ``min_queries``."""
    names = list(calls)
    for k in names:
        for _ in range(warmup):
            calls[k]()
    t = {k: [] for k in names}
    start = time.perf_counter()
    i = 0
    while True:
        if duration is None:
            if i >= iters:
                break
        elif i >= min_queries and time.perf_counter() - start >= duration:
            break
        for k in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            calls[k]()
            t[k].append((time.perf_counter() - t0) * 1e6)
        i += 1
    total = time.perf_counter() - start
    return {k: stats(v, total) for k, v in t.items()}


def _plain_session(path: Path):
    """What a user writes first: an InferenceSession on the same graph with default settings."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)


def _checkpoint(bundle, given: str | Path | None) -> Path | None:
    if given is not None:
        return Path(given)
    src = bundle.manifest.get("source", {}).get("checkpoint")
    if src and (Path(src) / "config.json").is_file():
        return Path(src)
    if (bundle.root / "engines" / "torch" / "config.json").is_file():
        return bundle.root / "engines" / "torch"
    return None


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the device install has no tqdm: a line per stage
        print(f"{desc} ...", flush=True)
        return items
    return tqdm(items, desc=desc, unit="subset")


def bench_bundle(
    path: str | Path,
    batches: Sequence[int] = (1, 8, 32),
    iters: int = 200,
    warmup: int = 20,
    duration: float | None = None,
    threads: int = 1,
    checkpoint: str | Path | None = None,
    eager: bool = True,
    against: str | Path | None = None,
    runtime_iters: int = 2000,
    swaps: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """The report of the module docstring, as a dict (``write_outputs`` writes it)."""
    from edgefuse.bundle import load_bundle

    t0 = time.perf_counter()
    bundle = load_bundle(path)
    verify_ms = (time.perf_counter() - t0) * 1e3
    m = bundle.manifest
    if bundle.kind != "subsets":
        raise EdgefuseError(f"edgefuse bench times per-subset bundles; {bundle.root} is a {bundle.kind} bundle")
    backend = m.get("backend")
    if duration is not None:
        batches = (1,)
    kwargs = {"threads": threads} if backend == "ort" else {}
    engines, load_ms, first_ms = {}, {}, {}
    try:
        for key in bundle.subsets:
            t = time.perf_counter()
            engines[key] = bundle.load_engine(key, **kwargs)
            load_ms[key] = (time.perf_counter() - t) * 1e3
        for key, e in engines.items():
            feeds = _inputs(bundle.specs, bundle.subsets[key]["modalities"], 1, seed=1)
            t = time.perf_counter()
            e.run(feeds)
            first_ms[key] = (time.perf_counter() - t) * 1e3
        cold = {
            "verify_ms": verify_ms,
            "files_verified": len(m["files"]),
            "load_ms": load_ms,
            "first_inference_ms": first_ms,
            "total_ms": verify_ms + sum(load_ms.values()) + sum(first_ms.values()),
        }
        peers: dict[str, dict[str, Callable]] = {k: {} for k in engines}
        notes: list[str] = []
        if backend == "ort":
            for key in engines:
                peers[key]["plain_ort"] = _plain_session(bundle.engine_path(key))
        else:
            notes.append(f"plain ONNX Runtime: not applicable to a {backend} bundle")
        ckpt = _checkpoint(bundle, checkpoint) if eager else None
        torch_engines = {}
        if not eager:
            notes.append("PyTorch eager: not asked for (--no-eager)")
        elif importlib.util.find_spec("torch") is None:
            notes.append("PyTorch eager: torch is not installed here")
        elif ckpt is None:
            notes.append("PyTorch eager: the bundle's checkpoint is not here (pass --checkpoint)")
        elif backend != "torch":
            from edgefuse.engines.pyt import TorchEngine

            for key, e in bundle.subsets.items():
                torch_engines[key] = TorchEngine(ckpt, modalities=e["modalities"], device="cpu", threads=threads)
                peers[key]["torch_eager"] = torch_engines[key].run
        if backend == "torch":
            torch_engines.update(_cuda_peers(bundle, peers, notes))
        other = None
        if against is not None:
            other = load_bundle(against)
            if set(other.subsets) != set(bundle.subsets) or other.specs != bundle.specs:
                raise EdgefuseError(
                    f"--against {other.root}: expected a bundle of the same sensors and subsets as {bundle.root}"
                )
            for key in engines:
                e = other.load_engine(key, **({"threads": threads} if other.manifest.get("backend") == "ort" else {}))
                torch_engines[f"against:{key}"] = e
                peers[key]["against"] = e.run
        rows = []
        for key in _progress(list(engines), "bench engines", progress):
            members = bundle.subsets[key]["modalities"]
            for b in batches:
                feeds = _inputs(bundle.specs, members, b, seed=b)
                calls = {"edgefuse": lambda e=engines[key], f=feeds: e.run(f, check=False)}
                for name, fn in peers[key].items():
                    calls[name] = lambda fn=fn, f=feeds: fn(f)
                timed = interleaved(calls, iters=iters, warmup=warmup, duration=duration)
                rows.append({"subset": key, "batch": b, "precision": bundle.subsets[key]["precision"], **timed})
        runtime = _runtime_figures(bundle, engines, runtime_iters, swaps, threads) if runtime_iters else None
    finally:
        for e in [*engines.values(), *torch_engines.values()]:
            e.close()
    head = "p90_us" if duration is not None else "p50_us"
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "bundle": str(bundle.root),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": environment(),
        "settings": {
            "mode": "single-stream" if duration is not None else "fixed",
            "duration_s": duration,
            "min_queries": SINGLE_STREAM_MIN_QUERIES if duration is not None else None,
            "iters": None if duration is not None else iters,
            "warmup": warmup,
            "threads": threads,
            "batches": list(batches),
            "timing": "interleaved: every round calls each engine once, the order rotated round by round",
            "inputs": "random frames in each sensor's value range (unit normals where it has none)",
            "headline": head,
        },
        "backend": backend,
        "precision": {k: e["precision"] for k, e in bundle.subsets.items()},
        "calibration": _calibration_facts(m),
        "accuracy": {k: e.get("accuracy", {}) for k, e in bundle.subsets.items()},
        "against": None
        if other is None
        else {"bundle": str(other.root), "precision": {k: e["precision"] for k, e in other.subsets.items()}},
        "peers": sorted({p for r in rows for p in r if p not in ("subset", "batch", "precision")}),
        "notes": notes,
        "cold_start": cold,
        "engines": rows,
        "ratios": _ratios(rows, head, bundle, other),
        "runtime": runtime,
        "seconds": time.perf_counter() - t0,
    }
    return report


def _cuda_peers(bundle, peers: dict, notes: list) -> dict:
    """A torch bundle on a CUDA machine: its engines (eager, the Triton kernels where they run) against
    CUDA-graph replay of the same model and ``torch.compile`` of it, per subset."""
    import torch

    if not torch.cuda.is_available():
        notes.append("CUDA-graph replay and torch.compile peers: no CUDA device here")
        return {}
    from edgefuse.engines.pyt import TorchEngine

    made = {}
    root = bundle.root / "engines" / "torch"
    for key, e in bundle.subsets.items():
        kw = {"modalities": e["modalities"], "device": "cuda", "precision": e["precision"]}
        graph = made[f"graph:{key}"] = TorchEngine(root, cuda_graph=True, **kw)
        compiled = made[f"compile:{key}"] = TorchEngine(root, **kw)
        compiled._fn = torch.compile(compiled._fn)
        peers[key]["cuda_graph"] = graph.run
        peers[key]["torch_compile"] = compiled.run
    return made


def _calibration_facts(m: Mapping[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for key in ("int8_quantization", "int8_gate", "fp16_gate", "latency"):
        if key in m:
            facts[key] = m[key]
    per = [e["calibration"] for e in m["subsets"].values() if "calibration" in e]
    calib = per[0] if per else m.get("int8_quantization", {}).get("calibration", {})
    if calib:
        facts["method"], facts["size"] = calib.get("method"), calib.get("size")
    return facts


def _ratios(rows: list, head: str, bundle, other) -> list[dict[str, Any]]:
    """Per subset and batch, edgefuse's engine against each peer (peer / edgefuse: > 1 means edgefuse is
    faster), and against a second bundle; INT8 / FP32 where one side is INT8 and the other FP32."""
    out = []
    for r in rows:
        mine = r["edgefuse"][head]
        row: dict[str, Any] = {"subset": r["subset"], "batch": r["batch"]}
        for peer in PEERS:
            if peer in r:
                row[f"{peer}_over_edgefuse"] = r[peer][head] / mine
        if other is not None and "against" in r:
            p = (r["precision"], other.subsets[r["subset"]]["precision"])
            if p == ("int8", "fp32"):
                row["int8_over_fp32"] = mine / r["against"][head]
            elif p == ("fp32", "int8"):
                row["int8_over_fp32"] = r["against"][head] / mine
        out.append(row)
    return out


def _runtime_figures(bundle, engines: dict, iters: int, swaps: int, threads: int) -> dict[str, Any]:
    """The runtime's overhead over its engine (all sensors live) and its swap latency (one sensor's frame
    goes bad: from that push to the new engine's answer), on the engines already loaded."""
    import logging

    from edgefuse.manifest import engine_accuracy
    from edgefuse.runtime import ManualClock, Policy, Runtime, SensorPolicy

    logging.getLogger("edgefuse.runtime").setLevel(logging.ERROR)  # a sensor loss logs at WARNING
    names = bundle.modality_names
    full = "+".join(names)
    if full not in engines:
        return {"note": "no all-sensor engine in this bundle"}
    frames = [{n: v[0] for n, v in _inputs(bundle.specs, names, 1, seed=100 + i).items()} for i in range(16)]
    bad = {s.name: np.full(s.shape, np.nan, dtype=s.dtype) for s in bundle.specs if s.kind != "tokens"}
    clock = ManualClock(0.0)
    rt = Runtime(
        bundle.specs,
        engines=dict(engines),
        accuracy={k: engine_accuracy(v) for k, v in bundle.subsets.items()},
        clock=clock,
        policy=Policy(default=SensorPolicy(recover_frames=1, recover_s=0.0, frozen_s=float("inf"), check_range=False)),
    )

    def push_all(i: int, skip: str | None = None) -> None:
        for n in names:
            if n != skip:
                rt.push(n, frames[i % 16][n])

    clock.advance(0.001)
    push_all(0)
    direct = {n: frames[0][n][None] for n in names}
    eng = engines[full]
    t_rt, t_direct = [], []
    for i in range(iters + 100):
        first, second = (rt.infer, lambda: eng.run(direct)) if i % 2 else (lambda: eng.run(direct), rt.infer)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        if i >= 100:  # warm-up
            a, b = (t1 - t0, t2 - t1) if i % 2 else (t2 - t1, t1 - t0)
            t_rt.append(a * 1e6)
            t_direct.append(b * 1e6)
    out: dict[str, Any] = {
        "overhead": {
            "engine": full,
            "infer": stats(t_rt),
            "engine_run": stats(t_direct),
            "p50_us": float(np.median(t_rt) - np.median(t_direct)),
            "p99_us": float(np.percentile(t_rt, 99) - np.percentile(t_direct, 99)),
        },
        "swaps": {},
    }
    droppable = [d for d in names if d in bad and "+".join(x for x in names if x != d) in engines]
    for drop in droppable:
        new = "+".join(n for n in names if n != drop)
        lat = []
        for k in range(swaps):
            clock.advance(0.001)
            push_all(k)  # readmits the sensor
            for _ in range(10):
                r = rt.infer()
            clock.advance(0.001)
            push_all(k + 1, skip=drop)
            t0 = time.perf_counter()
            rt.push(drop, bad[drop])
            r = rt.infer()
            lat.append((time.perf_counter() - t0) * 1e6)
            if r.engine != new:
                raise EdgefuseError(f"bench: after {drop}'s bad frame the runtime answered with {r.engine}, not {new}")
        out["swaps"][f"{full} -> {new}"] = {"dropped": drop, **stats(lat)}
    return out


# ---- outputs ----------------------------------------------------------------------------------------


def format_markdown(report: Mapping[str, Any]) -> str:
    mach, s, cold = report["machine"], report["settings"], report["cold_start"]
    head = s["headline"]
    v = ", ".join(f"{k} {x}" for k, x in mach["versions"].items())
    lines = [
        f"# edgefuse bench: {report['bundle']}",
        "",
        f"{mach['cpu']} ({mach['cores']} cores; {', '.join(mach['simd']) or 'no SIMD flags read'}), {mach['os']}; {v}.",
        f"Mode {s['mode']}"
        + (
            f" ({s['duration_s']:g} s per engine, at least {s['min_queries']} queries)"
            if s["duration_s"]
            else f" ({s['iters']} interleaved rounds)"
        )
        + f", warm-up {s['warmup']}, {s['threads']} thread(s), {s['inputs']}. Headline: {head[:-3]}.",
        "",
        "## Cold start (apart from steady state)",
        "",
        f"Verify the bundle ({cold['files_verified']} files, sha256): {cold['verify_ms']:.1f} ms; "
        f"construct every engine: {sum(cold['load_ms'].values()):.1f} ms; every engine's first inference: "
        f"{sum(cold['first_inference_ms'].values()):.1f} ms; total {cold['total_ms']:.1f} ms.",
        "",
        "## Engines (µs)",
        "",
    ]
    peers = ["edgefuse", *[p for p in PEERS if p in report["peers"]]]
    lines.append("| subset | batch | precision | " + " | ".join(f"{p} p50 / p99" for p in peers) + " |")
    lines.append("|---|---|---|" + "---|" * len(peers))
    for r in report["engines"]:
        cells = [f"{r[p]['p50_us']:.1f} / {r[p]['p99_us']:.1f}" if p in r else "-" for p in peers]
        lines.append(f"| {r['subset']} | {r['batch']} | {r['precision']} | " + " | ".join(cells) + " |")
    lines += ["", f"## Ratios ({head[:-3]}; peer / edgefuse: above 1, edgefuse is faster)", ""]
    keys = sorted({k for r in report["ratios"] for k in r if k not in ("subset", "batch")})
    lines.append("| subset | batch | " + " | ".join(keys) + " |")
    lines.append("|---|---|" + "---|" * len(keys))
    for r in report["ratios"]:
        lines.append(
            f"| {r['subset']} | {r['batch']} | " + " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in keys) + " |"
        )
    rt = report.get("runtime") or {}
    if "overhead" in rt:
        o = rt["overhead"]
        lines += [
            "",
            "## Runtime",
            "",
            f"Overhead of `Runtime.infer()` over calling the engine: p50 {o['p50_us']:.1f} µs, "
            f"p99 {o['p99_us']:.1f} µs ({o['infer']['n']} interleaved pairs).",
            "",
            "| swap | p50 µs | p99 µs | max µs | n |",
            "|---|---|---|---|---|",
        ]
        for k, w in rt["swaps"].items():
            lines.append(f"| {k} | {w['p50_us']:.1f} | {w['p99_us']:.1f} | {w['max_us']:.1f} | {w['n']} |")
    if report["notes"]:
        lines += ["", "Notes: " + "; ".join(report["notes"]) + "."]
    return "\n".join(lines) + "\n"


def write_outputs(report: Mapping[str, Any], out: str | Path) -> list[Path]:
    """``bench.json``, ``bench.md`` and, with matplotlib, ``latency_cdf.png``, ``peers.png`` and
    ``accuracy.png`` in ``out``; returns the paths written."""
    import json

    from edgefuse._fs import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(json.loads(json.dumps(report)), out / "bench.json")]
    (out / "bench.md").write_text(format_markdown(report))
    paths.append(out / "bench.md")
    from edgefuse._plot import pyplot

    plt = pyplot()
    if plt is not None:
        paths += _plots(report, out, plt)
    return paths


def _plots(report, out: Path, plt) -> list[Path]:
    from edgefuse._plot import save

    rows1 = [r for r in report["engines"] if r["batch"] == 1]
    written = []
    # latency CDF per engine (batch 1): from the quantiles recorded
    fig, ax = plt.subplots(figsize=(7, 4))
    qs = [("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99), ("p99.9_us", 0.999), ("max_us", 1.0)]
    for r in rows1:
        ax.plot(
            [r["edgefuse"][k] for k, _ in qs], [q for _, q in qs], marker="o", label=f"{r['subset']} ({r['precision']})"
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency (µs, batch 1)")
    ax.set_ylabel("quantile")
    ax.set_title(f"edgefuse engines on {report['machine']['cpu'][:40]}", fontsize=9)
    ax.legend(fontsize=7)
    written.append(save(fig, out / "latency_cdf.png"))
    # p50 / p99 against the peers (batch 1)
    peers = ["edgefuse", *[p for p in PEERS if p in report["peers"]]]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(rows1))
    w = 0.8 / len(peers)
    for j, p in enumerate(peers):
        p50 = [r[p]["p50_us"] if p in r else np.nan for r in rows1]
        p99 = [r[p]["p99_us"] if p in r else np.nan for r in rows1]
        ax.bar(x + j * w, p50, w, label=f"{p} p50")
        ax.scatter(x + j * w, p99, marker="_", s=120, color="black")
    ax.set_xticks(x + w * (len(peers) - 1) / 2, [r["subset"] for r in rows1], rotation=30, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency (µs, batch 1; bar p50, tick p99)")
    ax.legend(fontsize=7)
    written.append(save(fig, out / "peers.png"))
    # accuracy per subset, FP32 vs the reduced precision (the manifest's, measured at build)
    acc = report["accuracy"]
    keys = list(acc)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(keys))
    low = next((p for p in ("int8", "fp16") if any(p in a for a in acc.values())), None)
    ax.bar(x - 0.2, [acc[k].get("fp32", np.nan) for k in keys], 0.4, label="fp32")
    if low:
        ax.bar(x + 0.2, [acc[k].get(low, np.nan) for k in keys], 0.4, label=low)
    ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (bundle manifest)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    written.append(save(fig, out / "accuracy.png"))
    return written
