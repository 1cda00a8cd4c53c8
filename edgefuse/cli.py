"""The ``edgefuse`` command line: train, eval, fusions (each stage runs alone from its inputs on disk)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_fusions(args: argparse.Namespace) -> int:
    from edgefuse.fusion import FAMILIES

    for name, family in FAMILIES.items():
        print(f"{name:<16}{family}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from edgefuse.data import load_dataset
    from edgefuse.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.data, seed=args.seed)
    cfg = TrainConfig(
        fusion=args.fusion, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, dim=args.dim,
        modality_dropout=args.modality_dropout, patience=args.patience, seed=args.seed,
    )
    result = train(data, cfg, out=args.out, source=args.data)
    full = "+".join(data.modality_names)
    print(
        f"trained {args.fusion} in {result.seconds:.1f} s ({len(result.history)} epochs, best {result.best_epoch}); "
        f"val accuracy all sensors {result.val_subsets[full]:.4f}; checkpoint {args.out}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.data import load_dataset
    from edgefuse.evaluate import evaluate, format_report, plot_report, write_json

    model, doc = load_checkpoint(args.checkpoint)
    ds = doc["info"].get("dataset", {})
    source = args.data or ds.get("source")
    if not source:
        raise ValueError(f"{args.checkpoint}: the checkpoint does not record its data source; pass --data")
    seed = args.seed if args.seed is not None else doc["info"].get("train_config", {}).get("seed", 0)
    data = load_dataset(source, seed=seed)
    if data.modality_names != model.names:
        raise ValueError(f"data has modalities {data.modality_names}, the model expects {model.names}")
    report = evaluate(model, data, split=args.split, with_robustness=not args.no_robustness)
    report["checkpoint"] = str(args.checkpoint)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefuse", description="Multimodal sensor fusion from PyTorch to edge engines.")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fusions", help="list the fusion strategies")
    f.set_defaults(func=_cmd_fusions)

    t = sub.add_parser("train", help="train a fusion model with modality dropout")
    t.add_argument("--data", default="sensorscenes", help="'sensorscenes' or a .npz file (default: sensorscenes)")
    t.add_argument("--fusion", default="gated", help="fusion strategy (see 'edgefuse fusions'; default: gated)")
    t.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--dim", type=int, default=64, help="shared embedding width")
    t.add_argument("--modality-dropout", type=float, default=0.5, help="per-modality drop probability while training")
    t.add_argument("--patience", type=int, default=6, help="early-stopping patience in epochs")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="accuracy of every sensor subset and robustness sweeps")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--data", default=None, help="data source (default: the one the checkpoint was trained on)")
    e.add_argument("--seed", type=int, default=None, help="data seed (default: the training seed)")
    e.add_argument("--split", default="test")
    e.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    e.add_argument("--plot", type=Path, default=None, help="write a PNG of the report (needs matplotlib)")
    e.add_argument("--no-robustness", action="store_true", help="subset accuracies only")
    e.set_defaults(func=_cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        print(f"edgefuse {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
