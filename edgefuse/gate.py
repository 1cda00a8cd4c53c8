"""The accuracy gate: FP32 vs reduced-precision (INT8, FP16) accuracy and top-1 agreement per subset on held-out data.

Needs numpy only (and onnxruntime, any release, to score ONNX graphs): the torch backend's
FP16 gate runs where calibration cannot (an onnxruntime older than it needs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from edgefuse.errors import EdgefuseError

#: what a subset that fails the accuracy gate does: stop the build (or calibration), or stay FP32
GATE_FAIL = ("error", "fp32")


def check_gate_fail(gate_fail: str) -> None:
    """Raise ValueError unless ``gate_fail`` is one of GATE_FAIL."""
    if gate_fail not in GATE_FAIL:
        raise EdgefuseError(f"gate_fail must be one of {GATE_FAIL}, got {gate_fail!r}")


@dataclass
class GateResult:
    """One subset's FP32 accuracy against its reduced-precision engine's (``precision``: int8,
    or fp16 for the torch backend), and how often their top-1 agree."""

    subset: str
    fp32_acc: float
    reduced_acc: float
    agreement: float
    n: int
    precision: str = "int8"

    @property
    def drop_points(self) -> float:
        return (self.fp32_acc - self.reduced_acc) * 100.0

    def fails(self, max_drop: float) -> bool:
        """More than ``max_drop`` points lost. The accuracies are float means, so a drop of
        exactly the limit (20 of 2 000 samples = 1 point) computes as 1.0000000000000009:
        that rounding must not fail the gate."""
        return self.drop_points > max_drop + 1e-9

    def to_dict(self) -> dict:
        return {
            "fp32": self.fp32_acc,
            self.precision: self.reduced_acc,
            "agreement": self.agreement,
            "drop_points": self.drop_points,
            "n": self.n,
        }


def run_batched(path: Path, inputs: Mapping[str, np.ndarray], output: str = "logits", batch: int = 512) -> np.ndarray:
    """Output ``output`` of the ONNX graph at ``path`` over every row of ``inputs`` (its input names ->
    ``[S, ...]`` arrays), run ``batch`` rows at a time on every core."""
    from edgefuse.engines.ort import OrtEngine

    with OrtEngine(path, threads=os.cpu_count() or 1) as engine:  # throughput here, not latency
        names = [t.name for t in engine.inputs]
        n = len(inputs[names[0]])
        out = [engine.run({k: inputs[k][s : s + batch] for k in names})[output] for s in range(0, n, batch)]
    return np.concatenate(out)


def predict(path: Path, inputs: Mapping[str, np.ndarray], batch: int = 512) -> np.ndarray:
    """Class predictions ``[S]`` of the graph at ``path``."""
    return run_batched(path, inputs, "logits", batch).argmax(1)


def accuracy(path: Path, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    return float((predict(path, inputs) == labels).mean())


def compare(
    subset: str, fp32_path: Path, int8_path: Path, inputs: Mapping[str, np.ndarray], labels: np.ndarray
) -> GateResult:
    a, b = predict(fp32_path, inputs), predict(int8_path, inputs)
    return GateResult(
        subset, float((a == labels).mean()), float((b == labels).mean()), float((a == b).mean()), int(len(labels))
    )


class AccuracyGateError(EdgefuseError):
    """An INT8 (or FP16) subset lost more accuracy than allowed; nothing was written."""


#: what to try when a subset fails the gate, per precision
_REMEDY = {
    "int8": "Try --calib-method entropy or percentile, a larger --calib-size, or --precision fp16/fp32 for them.",
    "fp16": "Build with --precision fp32, or --gate-fallback fp32 to give those subsets FP32 and keep the rest FP16.",
}


def enforce(results: list[GateResult], max_drop: float) -> None:
    bad = [r for r in results if r.fails(max_drop)]
    if bad:
        precision = bad[0].precision
        rows = ", ".join(
            f"{r.subset}: {r.fp32_acc:.4f} -> {r.reduced_acc:.4f} ({r.drop_points:.2f} points)" for r in bad
        )
        raise AccuracyGateError(
            f"{precision.upper()} accuracy gate failed: {len(bad)} subset(s) dropped more than --max-drop {max_drop} "
            "points: "
            f"{rows}. {_REMEDY.get(precision, '')}".rstrip()
        )
