"""``edgefuse kernels``' options and default shapes, with no torch import (the CLI's parser must stay light)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: shapes when none are given: the GPU benchmark's on a GPU; tiny under the interpreter, which
#: runs each program in Python
KERNEL_SHAPES = {
    "gpu": {"batches": (1, 8, 32, 256), "dim": 256, "widths": (2048, 1024, 128)},
    "interpret": {"batches": (1, 3, 67), "dim": 24, "widths": (40, 24, 8)},
}


def kernels_arguments(p: argparse.ArgumentParser) -> None:
    """``edgefuse kernels``' options (``edgefuse.kernels.selfcheck`` runs it; ``tools/kernel_bench.py`` adds timing)."""
    p.add_argument("--check", action="store_true", help="run every op's Triton path against its float64 reference")
    p.add_argument(
        "--interpret",
        action="store_true",
        help="--check on the CPU through Triton's interpreter (no GPU needed; slow: tiny shapes by default)",
    )
    p.add_argument("--device", default=None, help="CUDA device, e.g. cuda:1 (default: the current one)")
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help=f"batch sizes (default: {' '.join(map(str, KERNEL_SHAPES['gpu']['batches']))} on a GPU, "
        f"{' '.join(map(str, KERNEL_SHAPES['interpret']['batches']))} interpreted)",
    )
    p.add_argument(
        "--dim",
        type=int,
        default=None,
        help=f"fused width D (default: {KERNEL_SHAPES['gpu']['dim']} on a GPU, {KERNEL_SHAPES['interpret']['dim']} "
        "interpreted)",
    )
    p.add_argument(
        "--widths",
        type=_widths,
        default=None,
        help=f"input widths K_i, one per modality (default: {','.join(map(str, KERNEL_SHAPES['gpu']['widths']))} on a "
        "GPU, "
        f"{','.join(map(str, KERNEL_SHAPES['interpret']['widths']))} interpreted)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="--check: only this dtype (default: float32, float16, and bfloat16 where the GPU has it); "
        "with --checkpoint: the dtype the model is cast to, as the torch engine's --precision fp16 "
        "casts it (default: float32)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="--check a trained model (an `edgefuse train` folder) on every default sensor subset, "
        "instead of the ops at synthetic shapes",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report and cases as JSON")


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 2048,1024,128, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected widths >= 1, got {text!r}")
    return widths
