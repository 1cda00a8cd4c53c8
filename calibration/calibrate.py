"""Calibration ranges: a class-stratified reader over a dataset, and onnxruntime's calibrators.

Ranges come from ``onnxruntime.quantization``'s MinMax, Entropy and Percentile calibrators
(decision 1 of DESIGN.md: do not re-implement them). edgefuse adds what they lack: the
stratified sample, a progress bar, and per-tensor statistics for the report.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

from edgefuse.errors import EdgefuseError

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class StratifiedReader(CalibrationDataReader):
    """Feeds ``inputs`` (``{name: [N, ...]}``) in batches, with a tqdm bar; ``rewind()`` restarts.

    Build it from a class-stratified sample (``Dataset.stratified_sample``) so every class
    shapes the ranges.
    """

    def __init__(
        self, inputs: Mapping[str, np.ndarray], batch_size: int = 32, desc: str = "calibrate", progress: bool = True
    ) -> None:
        if not inputs:
            raise EdgefuseError("calibration reader: expected at least one input array, got none")
        sizes = {k: len(v) for k, v in inputs.items()}
        if len(set(sizes.values())) != 1:
            raise EdgefuseError(f"calibration reader: inputs have different sample counts {sizes}")
        self.inputs, self.batch_size, self.desc, self.progress = dict(inputs), batch_size, desc, progress
        self.n = next(iter(sizes.values()))
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        self._bar = None

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        from tqdm.auto import tqdm

        with tqdm(total=self.n, desc=self.desc, unit="sample", disable=not self.progress, leave=False) as bar:
            for start in range(0, self.n, self.batch_size):
                batch = {k: np.ascontiguousarray(v[start : start + self.batch_size]) for k, v in self.inputs.items()}
                bar.update(len(next(iter(batch.values()))))
                yield batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._gen()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


@dataclass
class TensorRange:
    """One activation tensor's calibration result (symmetric INT8: ``scale = amax / 127``)."""

    name: str
    lowest: float
    highest: float
    amax: float
    scale: float
    saturated_pct: float
    hist: tuple[np.ndarray, np.ndarray] | None = None

    def to_dict(self) -> dict:
        return {
            "lowest": self.lowest,
            "highest": self.highest,
            "amax": self.amax,
            "scale": self.scale,
            "saturated_pct": self.saturated_pct,
        }


def compute_ranges(
    onnx_path: str | Path,
    reader: StratifiedReader,
    method: str = "minmax",
    percentile: float = 99.999,
    num_bins: int = 2048,
    op_types: Sequence[str] | None = None,
):
    """Run ``method`` over ``reader``; return onnxruntime's ``TensorsData`` (for ``quantize_static``)."""
    if method not in METHODS:
        raise EdgefuseError(f"calibration method must be one of {sorted(METHODS)}, got {method!r}")
    extra = {"symmetric": True}
    if method == "percentile":
        extra.update(percentile=percentile, num_bins=num_bins)
    elif method == "entropy":
        # onnxruntime's entropy search is quadratic in the bins, in Python: 512 bins keep it to
        # seconds per graph (2048 took 195 s for SensorScenes' 7 graphs on 2 cores)
        extra.update(num_bins=min(num_bins, 512), num_quantized_bins=128)
    # onnxruntime prints its own progress to stdout; ours is the tqdm bar
    with tempfile.TemporaryDirectory(prefix="edgefuse-calib.") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            Path(onnx_path),
            list(op_types) if op_types else None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            extra_options=extra,
        )
        reader.rewind()
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        hists = getattr(getattr(calibrator, "collector", None), "histogram_dict", None) or {}
        del calibrator
    return ranges, hists


def tensor_ranges(ranges, hists: Mapping[str, tuple] | None = None) -> dict[str, TensorRange]:
    """Per-tensor amax, scale and % of calibration values beyond amax (clipped).

    With a histogram (entropy, percentile) the saturation is the histogram mass beyond
    ``amax``. MinMax ranges cover every calibration value, so nothing saturates (0 %).
    """
    out = {}
    for name in ranges:
        td = ranges[name]
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in td.range_value)
        amax = max(abs(lo), abs(hi))
        scale = amax / 127.0 if amax > 0 else 1.0 / 127.0
        sat = 0.0
        h = (hists or {}).get(name)
        if h is not None and len(h) >= 2:
            counts, edges = np.asarray(h[0], dtype=float), np.asarray(h[1], dtype=float)
            if len(edges) == len(counts) + 1 and amax > 0:  # amax 0: every value is 0, none clipped
                # bins starting at or beyond +-amax are clipped (a bin straddling amax is not counted)
                beyond = (edges[:-1] >= amax) | (edges[1:] <= -amax)
                total = counts.sum()
                sat = float(counts[beyond].sum() / total * 100) if total else 0.0
        out[name] = TensorRange(name, lo, hi, amax, scale, sat)
    return out
