"""Evaluation: accuracy of every modality subset, and robustness to per-modality noise and random dropouts.

Robustness follows MultiBench (Liang et al., 2021): accuracy is measured along a sweep of
corruption levels and summarised by the area under the accuracy-vs-level curve, with the
level axis scaled to [0, 1] (so the AUC is a mean accuracy over the sweep, comparable
between models and sweeps).

* ``gaussian``: additive Gaussian noise of ``level`` x the modality's training std, on one
  modality at a time and on all of them together.
* ``drop``: each sample loses the modality with probability ``level`` (one modality at a
  time, and every modality independently for ``all``; an emptied sample keeps one modality).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgefuse.data import Dataset, Split
from edgefuse.specs import all_subsets

GAUSSIAN_LEVELS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
DROP_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)


def auc(levels: Sequence[float], acc: Sequence[float]) -> float:
    """Area under accuracy-vs-level with the level axis scaled to [0, 1] (trapezoid rule)."""
    x = np.asarray(levels, dtype=float)
    y = np.asarray(acc, dtype=float)
    span = x[-1] - x[0]
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / span) if span > 0 else float(y[0])


def _accuracy(model, inputs, labels, present=None) -> float:
    from edgefuse.inference import predict

    return float((predict(model, inputs, present).argmax(1) == labels).mean())


def robustness(
    model, split: Split, seed: int = 0, gaussian_levels=GAUSSIAN_LEVELS, drop_levels=DROP_LEVELS
) -> dict[str, Any]:
    """Gaussian-noise and random-drop sweeps; see the module docstring."""
    names = model.names
    float_names = [s.name for s in model.specs if s.kind != "tokens"]
    from edgefuse.fusion.encoders import norm_shape

    specs = {s.name: s for s in model.specs}
    std = {  # per channel where the model normalises per channel
        k: np.asarray(model.norm.get(k, (0.0, float(split.inputs[k].std())))[1], np.float32).reshape(
            norm_shape(specs[k]) if np.ndim(model.norm.get(k, (0, 0))[1]) else ()
        )
        for k in float_names
    }
    n = len(split)
    out: dict[str, Any] = {}

    g: dict[str, Any] = {"levels": list(gaussian_levels), "accuracy": {}, "auc": {}}
    for target in float_names + (["all"] if len(float_names) > 1 else []):
        rng = np.random.default_rng(seed)
        hit = float_names if target == "all" else [target]
        accs = []
        for level in gaussian_levels:
            x = dict(split.inputs)
            for k in hit:
                x[k] = (x[k] + rng.normal(0, level * std[k], size=x[k].shape)).astype(x[k].dtype)
            accs.append(_accuracy(model, x, split.labels))
        g["accuracy"][target], g["auc"][target] = accs, auc(gaussian_levels, accs)
    out["gaussian"] = g

    d: dict[str, Any] = {"levels": list(drop_levels), "accuracy": {}, "auc": {}}
    for target in names + ["all"]:
        rng = np.random.default_rng(seed)
        accs = []
        for level in drop_levels:
            keep = np.ones((n, len(names)), dtype=bool)
            cols = range(len(names)) if target == "all" else [names.index(target)]
            for c in cols:
                keep[:, c] = rng.random(n) >= level
            empty = ~keep.any(1)
            keep[np.flatnonzero(empty), rng.integers(0, len(names), size=int(empty.sum()))] = True
            accs.append(_accuracy(model, split.inputs, split.labels, keep))
        d["accuracy"][target], d["auc"][target] = accs, auc(drop_levels, accs)
    out["drop"] = d
    return out


def evaluate(model, data: Dataset, split: str = "test", with_robustness: bool = True, seed: int = 0) -> dict[str, Any]:
    """The report ``edgefuse eval`` writes: every subset's accuracy (+ robustness sweeps)."""
    from edgefuse.inference import subset_accuracy

    part = data[split]
    report: dict[str, Any] = {
        "split": split,
        "n": len(part),
        "fusion": model.fusion_name,
        "subsets": subset_accuracy(model, part, all_subsets(model.names)),
    }
    if with_robustness:
        report["robustness"] = robustness(model, part, seed=seed)
    return report


def format_report(report: dict[str, Any]) -> str:
    """Plain-text tables of a report (what ``edgefuse eval`` prints)."""
    lines = [f"{report['fusion']} on {report['n']} {report['split']} samples", "", f"{'subset':<32}accuracy"]
    for k, v in report["subsets"].items():
        lines.append(f"{k:<32}{v:8.4f}")
    rob = report.get("robustness")
    if rob:
        for kind, title in (("gaussian", "gaussian noise (x train std)"), ("drop", "random drop (probability)")):
            r = rob[kind]
            lines += ["", f"{title}: levels " + " ".join(f"{x:g}" for x in r["levels"])]
            lines.append(f"{'target':<12}" + "".join(f"{x:>8g}" for x in r["levels"]) + f"{'AUC':>8}")
            for t, accs in r["accuracy"].items():
                lines.append(f"{t:<12}" + "".join(f"{a:8.3f}" for a in accs) + f"{r['auc'][t]:8.3f}")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG: subset accuracies (bars) and the two robustness sweeps (curves). Needs matplotlib."""
    from edgefuse._plot import pyplot

    plt = pyplot(required=True)
    rob = report.get("robustness")
    cols = 3 if rob else 1
    fig, axes = plt.subplots(1, cols, figsize=(5 * cols, 4), squeeze=False)
    ax = axes[0][0]
    subs = report["subsets"]
    ax.barh(list(subs), list(subs.values()), color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title(f"{report['fusion']}: accuracy per sensor subset")
    ax.invert_yaxis()
    if rob:
        for ax, kind, xlabel in (
            (axes[0][1], "gaussian", "noise std (x train std)"),
            (axes[0][2], "drop", "drop probability"),
        ):
            r = rob[kind]
            for t, accs in r["accuracy"].items():
                ax.plot(r["levels"], accs, marker="o", label=f"{t} (AUC {r['auc'][t]:.2f})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1)
            ax.set_title(f"robustness: {kind}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
