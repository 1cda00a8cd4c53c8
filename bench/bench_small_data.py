"""Training with the default settings on small data, beside the baselines: what `docs/benchmarks.md`'s
small-data tables quote.

SensorScenes cut to 60 training and 18 validation samples (10 and 3 per class) with gated, concat
and late_mean fusion, and UEA BasicMotions (32 training recordings; from an aeon or sktime wheel
or install) with gated fusion; each model's test accuracy per subset beside a logistic
regression and an MLP trained on the same samples (``edgefuse.baselines``). Writes
``small_data.json``.

    python bench/bench_small_data.py --out bench/results/local [--wheel .cache/wheels/aeon-1.6.0-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import machine, write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wheel", type=Path, default=None, help="an aeon or sktime wheel holding BasicMotions")
    args = p.parse_args(argv)
    import torch

    from edgefuse import __version__
    from edgefuse.baselines import baselines
    from edgefuse.data import load_dataset
    from edgefuse.data.uea import basicmotions
    from edgefuse.inference import subset_accuracy
    from edgefuse.train import TrainConfig, train

    torch.set_num_threads(1)
    wheel = args.wheel or next(iter(sorted(Path(".cache/wheels").glob("aeon-*.whl"))), None)
    runs = {
        "sensorscenes_60": (load_dataset("sensorscenes", train_size=60, val_size=18), ("gated", "concat", "late_mean")),
        "basicmotions": (basicmotions(wheel), ("gated",)),
    }
    report: dict = {"machine": machine(), "versions": {"edgefuse": __version__, "torch": torch.__version__}}
    for name, (data, fusions) in runs.items():
        row: dict = {"train": len(data["train"]), "val": len(data["val"]), "test": len(data["test"])}
        row["baselines"] = baselines(data)
        for fusion in fusions:
            t0 = time.perf_counter()
            r = train(data, TrainConfig(fusion=fusion), progress=False)
            row[fusion] = {"accuracy": subset_accuracy(r.model, data["test"]), "seconds": time.perf_counter() - t0}
            worst = min(row[fusion]["accuracy"][k] - row["baselines"]["mlp"][k] for k in row["baselines"]["mlp"])
            row[fusion]["worst_margin_over_mlp_points"] = worst * 100
            print(f"{name:<16} {fusion:<10} {row[fusion]['accuracy']}  worst margin over the MLP {worst * 100:+.1f}")
        report[name] = row
    report["targets"] = {
        "every subset >= the MLP baseline - 2 points (small SensorScenes, 3 fusions)": all(
            report["sensorscenes_60"][f]["worst_margin_over_mlp_points"] >= -2 for f in ("gated", "concat", "late_mean")
        )
    }
    write_report(report, args.out / "small_data.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
