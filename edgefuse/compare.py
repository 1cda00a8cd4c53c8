"""``edgefuse compare``: every fusion strategy on the same data and seed, side by side.

For each strategy (``edgefuse fusions``, or ``fusions``) it trains the model with the same
settings, then measures accuracy with all sensors and with each one missing, the MultiBench-style
robustness AUCs (random sensor drops and Gaussian noise on every sensor at once), the parameters
and multiply-accumulates per frame, and the batch-1 latency of its all-sensor FP32 and INT8 ONNX
Runtime engines (exported, calibrated and timed interleaved, one thread). A strategy that cannot
be exported or calibrated keeps its accuracy figures and records why. It also keeps each model's
fused features of the test split (the head's input; a late-fusion model has none, so its logits)
for a 2-D PCA.

Results are cached per strategy (``strategies/<name>.json`` and its checkpoint): a rerun with the
same settings resumes where it stopped. ``write_outputs`` adds the table (Markdown), the accuracy
against latency plot and the PCA plots.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError

FORMAT = "edgefuse-compare/1"


def macs_per_frame(model, inputs: dict) -> int:
    """Multiply-accumulates of one frame through ``model``: torch's FLOP formulas (matmuls, convolutions,
    attention) / 2, summed by a dispatch mode without FlopCounterMode's module tracker, which fails on
    ``nn.MultiheadAttention`` under no_grad (torch 2.13: "Expected gradient function to be set")."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += int(formula(*args, **kwargs, out_val=out))
            return out

    with torch.no_grad(), Count() as count:
        model({k: torch.from_numpy(v[:1]) for k, v in inputs.items()})
    return int(count.flops // 2)


def fused_features(model, inputs: dict, batch: int = 256) -> tuple[np.ndarray, str]:
    """``(features [N, F], what)``: the input of the model's head (its fused representation), or its logits
    when it has no head (late fusion, per-subset models)."""
    import torch

    head = getattr(model, "head", None)
    got: list[torch.Tensor] = []
    hook = None
    if isinstance(head, torch.nn.Module):
        hook = head.register_forward_pre_hook(lambda m, args: got.append(args[0].detach().flatten(1)))
    outs = []
    n = len(next(iter(inputs.values())))
    try:
        with torch.inference_mode():
            for i in range(0, n, batch):
                outs.append(model({k: torch.from_numpy(v[i : i + batch]) for k, v in inputs.items()}))
    finally:
        if hook is not None:
            hook.remove()
    if got:
        return torch.cat(got).float().numpy(), "head input"
    return torch.cat(outs).float().numpy(), "logits"


def pca2(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``x`` (rows: samples)."""
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def _settings(data, seed: int, config: dict) -> dict[str, Any]:
    return {"data": data.description, "seed": seed, "train": dict(sorted(config.items()))}


def compare(
    data,
    out: str | Path,
    fusions: Sequence[str] | None = None,
    seed: int = 0,
    train_options: dict | None = None,
    calib_size: int = 256,
    latency_iters: int = 300,
    progress: bool = True,
    source: str | None = None,
) -> dict[str, Any]:
    """Train and measure each strategy (see the module docstring); return the whole comparison."""
    from tqdm.auto import tqdm

    from edgefuse._fs import write_json
    from edgefuse.fusion import FAMILIES

    names = list(fusions) if fusions else list(FAMILIES)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise EdgefuseError(f"unknown fusion strategies {unknown}; `edgefuse fusions` lists {list(FAMILIES)}")
    out = Path(out)
    (out / "strategies").mkdir(parents=True, exist_ok=True)
    settings = _settings(data, seed, train_options or {})
    results: dict[str, Any] = {}
    bar = tqdm(names, desc="compare", unit="strategy", disable=not progress)
    for fusion in bar:
        bar.set_postfix_str(fusion)
        cache = out / "strategies" / f"{fusion}.json"
        if cache.is_file():
            doc = json.loads(cache.read_text())
            if doc.get("settings") == settings:
                results[fusion] = doc
                continue
        doc = _one(
            data, fusion, out / "strategies" / fusion, seed, train_options or {}, calib_size, latency_iters, source
        )
        doc["settings"] = settings
        np.savez_compressed(out / "strategies" / f"{fusion}.features.npz", **doc.pop("_features"))
        write_json(doc, cache)
        results[fusion] = doc
    return {"format": FORMAT, "settings": settings, "families": {f: FAMILIES[f] for f in names}, "strategies": results}


def _one(data, fusion: str, folder: Path, seed: int, options: dict, calib_size: int, iters: int, source) -> dict:
    import torch

    from edgefuse.evaluate import robustness
    from edgefuse.fusion import FAMILIES
    from edgefuse.inference import subset_accuracy
    from edgefuse.train import TrainConfig, train

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    res = train(
        data, TrainConfig(fusion=fusion, seed=seed, **options), out=folder / "checkpoint", progress=False, source=source
    )
    model = res.model.eval()
    names = model.names
    test = data["test"]
    subsets = [tuple(names)] + [tuple(n for n in names if n != m) for m in names]
    acc = subset_accuracy(model, test, subsets)
    full = "+".join(names)
    rob = robustness(model, test, seed=seed, gaussian_levels=(0.0, 0.5, 1.0, 2.0), drop_levels=(0.0, 0.4, 0.8, 0.95))
    feats, what = fused_features(model, test.inputs)
    doc: dict[str, Any] = {
        "fusion": fusion,
        "family": FAMILIES[fusion],
        "accuracy": {"all": acc[full], **{f"without {m}": acc["+".join(n for n in names if n != m)] for m in names}},
        "robustness_auc": {"drop": rob["drop"]["auc"]["all"], "gaussian": rob["gaussian"]["auc"].get("all")},
        "params": int(sum(p.numel() for p in model.parameters())),
        "macs_per_frame": macs_per_frame(model, test.inputs),
        "train_seconds": res.seconds,
        "features": what,
        "_features": {"pca": pca2(feats).astype(np.float32), "labels": test.labels},
    }
    try:
        doc["latency"] = _latency(model, data, folder, calib_size, iters)
    except Exception as e:  # a strategy whose graph does not export or calibrate: say why, keep the rest
        doc["latency"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    doc["seconds"] = time.perf_counter() - t0
    return doc


def _latency(model, data, folder: Path, calib_size: int, iters: int) -> dict[str, Any]:
    """Batch-1 p50/p90 of the all-sensor FP32 and INT8 ONNX Runtime graphs, interleaved, one thread."""
    from edgefuse.calibration import calibrate_export
    from edgefuse.export import export_model
    from edgefuse.latency import time_graphs

    with tempfile.TemporaryDirectory(prefix="edgefuse-compare.") as tmp:
        tmp = Path(tmp)
        rec = export_model(model, tmp / "export", subsets=[model.names], progress=False)
        (g,) = rec["graphs"].values()
        calib = calibrate_export(
            tmp / "export",
            data,
            tmp / "calib",
            size=calib_size,
            max_drop=100.0,
            progress=False,
            trt_version=None,
            min_weights=8192,
        )
        (c,) = calib["subsets"].values()
        timed = time_graphs(
            {"fp32": tmp / "export" / g["file"], "int8": tmp / "calib" / c["int8_file"]}, iters=iters, threads=1
        )
    return {
        "fp32_p50_us": timed["fp32"]["1"]["p50_us"],
        "int8_p50_us": timed["int8"]["1"]["p50_us"],
        "fp32_p90_us": timed["fp32"]["1"]["p90_us"],
        "int8_p90_us": timed["int8"]["1"]["p90_us"],
        "int8_accuracy": c["accuracy"].get("int8"),
        "fp32_accuracy": c["accuracy"].get("fp32"),
    }


# ---- outputs --------------------------------------------------------------------------------------------


def format_table(doc: dict[str, Any]) -> str:
    rows = doc["strategies"]
    if not rows:
        return "(no strategies)\n"
    missing = [k for k in next(iter(rows.values()))["accuracy"] if k != "all"]
    head = [
        "strategy",
        "family",
        "all",
        *missing,
        "AUC drop",
        "AUC noise",
        "params",
        "MACs/frame",
        "FP32 µs",
        "INT8 µs",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        lat = r["latency"]
        if "error" in lat:
            fp, i8 = "-", f"- ({lat['error'][:60]})"
        else:
            fp, i8 = f"{lat['fp32_p50_us']:.0f}", f"{lat['int8_p50_us']:.0f}"
        g = r["robustness_auc"]["gaussian"]
        cells = [
            name,
            r["family"],
            f"{r['accuracy']['all']:.3f}",
            *(f"{r['accuracy'][k]:.3f}" for k in missing),
            f"{r['robustness_auc']['drop']:.3f}",
            "-" if g is None else f"{g:.3f}",
            f"{r['params']:,}",
            f"{r['macs_per_frame'] / 1e6:.2f} M",
            fp,
            i8,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(doc: dict[str, Any], out: str | Path) -> list[Path]:
    """``compare.json``, ``compare.md``, ``accuracy_latency.png`` and ``pca.png`` in ``out``."""
    from edgefuse._fs import write_json

    out = Path(out)
    paths = [write_json(doc, out / "compare.json")]
    (out / "compare.md").write_text(
        f"Every strategy on {doc['settings']['data']}, seed {doc['settings']['seed']}; test accuracy, MultiBench "
        "robustness AUCs, batch-1 p50 of the all-sensor ONNX Runtime engines (one thread).\n\n" + format_table(doc)
    )
    paths.append(out / "compare.md")
    from edgefuse._plot import pyplot, save

    plt = pyplot()
    if plt is None:
        return paths
    rows = doc["strategies"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in rows.items():
        lat = r["latency"]
        if "error" in lat:
            continue
        ax.scatter(lat["fp32_p50_us"], r["accuracy"]["all"], color="tab:blue")
        ax.scatter(lat["int8_p50_us"], lat["int8_accuracy"] or r["accuracy"]["all"], color="tab:orange", marker="s")
        ax.plot(
            [lat["fp32_p50_us"], lat["int8_p50_us"]],
            [r["accuracy"]["all"], lat["int8_accuracy"] or 0],
            lw=0.5,
            color="grey",
        )
        ax.annotate(
            name, (lat["fp32_p50_us"], r["accuracy"]["all"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.scatter([], [], color="tab:blue", label="FP32")
    ax.scatter([], [], color="tab:orange", marker="s", label="INT8")
    ax.set_xscale("log")
    ax.set_xlabel("all-sensor engine p50, batch 1, one thread (µs)")
    ax.set_ylabel("test accuracy, all sensors")
    ax.legend(fontsize=8)
    paths.append(save(fig, out / "accuracy_latency.png"))
    n = len(rows)
    cols = min(4, n)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(3 * cols, 2.8 * ((n + cols - 1) // cols)), squeeze=False
    )
    for ax, (name, r) in zip(axes.flat, rows.items()):
        f = np.load(out / "strategies" / f"{name}.features.npz")
        ax.scatter(f["pca"][:, 0], f["pca"][:, 1], c=f["labels"], s=3, cmap="tab10")
        ax.set_title(f"{name} ({r['features']})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("fused features of the test split, first two principal components, coloured by class", fontsize=9)
    paths.append(save(fig, out / "pca.png", dpi=100))
    return paths
