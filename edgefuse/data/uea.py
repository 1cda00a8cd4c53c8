"""Multivariate time-series datasets of the UEA archive, in the ``.ts`` format, as edgefuse datasets.

The archive's small sensor datasets ship inside PyPI packages: ``aeon`` and ``sktime`` both carry
``BasicMotions`` (a smart watch's 3-axis accelerometer and 3-axis gyroscope sampled at 10 Hz for
10 s; standing, running, walking, badminton; 40 training and 40 test recordings). ``basicmotions``
finds it in an installed ``aeon`` or ``sktime``, or in one of their wheels (``pip download
--no-deps aeon``), without importing either, and returns it as two sensors, ``accel [3, 100]``
and ``gyro [3, 100]``, with a stratified validation share of the training recordings.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from edgefuse.data.dataset import Dataset, Split
from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec

#: where the two packages keep the UEA archive's bundled datasets
_PACKAGES = {"aeon": "aeon/datasets/data", "sktime": "sktime/datasets/data"}


def read_ts(text: str, where: str = ".ts") -> tuple[np.ndarray, list[str], list[str]]:
    """``(x [N, D, L] float32, labels [N] as text, class names)`` of an equal-length ``.ts`` file."""
    header: dict[str, str] = {}
    rows: list[list[str]] = []
    in_data = False
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower() == "@data":
                in_data = True
            elif line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
            continue
        rows.append(line.split(":"))
    if header.get("equallength", "true").lower() != "true" or header.get("timestamps", "false").lower() != "false":
        raise EdgefuseError(f"{where}: expected equal-length series without timestamps, got {header}")
    label_spec = header.get("classlabel", "").split()
    if not label_spec or label_spec[0].lower() != "true":
        raise EdgefuseError(f"{where}: expected @classLabel true <classes...>, got {header.get('classlabel')!r}")
    classes = label_spec[1:]
    dims = {len(r) - 1 for r in rows}
    if len(dims) != 1:
        raise EdgefuseError(f"{where}: expected the same number of dimensions on every line, got {sorted(dims)}")
    try:
        x = np.array([[np.array(d.split(","), dtype=np.float32) for d in r[:-1]] for r in rows], dtype=np.float32)
    except ValueError as e:
        raise EdgefuseError(f"{where}: a series that is not comma-separated numbers of one length ({e})") from None
    labels = [r[-1].strip() for r in rows]
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise EdgefuseError(f"{where}: labels {unknown} are not among @classLabel's {classes}")
    return x, labels, classes


def _find(name: str, wheel: str | Path | None) -> dict[str, str]:
    """The TRAIN and TEST ``.ts`` texts of dataset ``name``, from a wheel or an installed package."""
    files = {part: f"{name}/{name}_{part}.ts" for part in ("TRAIN", "TEST")}
    if wheel is not None:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for prefix in _PACKAGES.values():
                if all(f"{prefix}/{f}" in names for f in files.values()):
                    return {p: z.read(f"{prefix}/{f}").decode() for p, f in files.items()}
        raise EdgefuseError(f"{wheel}: no {name} dataset inside (expected {list(_PACKAGES.values())}/{name}/)")
    for pkg, prefix in _PACKAGES.items():
        spec = importlib.util.find_spec(pkg)  # locates the package without importing it (or its dependencies)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations))).parent / prefix
        if all((root / f).is_file() for f in files.values()):
            return {p: (root / f).read_text() for p, f in files.items()}
    raise EdgefuseError(
        f"the {name} dataset ships with aeon and sktime: pip install aeon (or sktime), or pass the wheel of "
        "either (pip download --no-deps aeon -d wheels/)"
    )


def basicmotions(wheel: str | Path | None = None, val_per_class: int = 2, seed: int = 0) -> Dataset:
    """BasicMotions as two sensors (see the module docstring): train (the archive's TRAIN less
    ``val_per_class`` recordings of each class, drawn with ``seed``), val, and test (the archive's TEST)."""
    texts = _find("BasicMotions", wheel)
    (xtr, ytr, classes), (xte, yte, _) = (read_ts(texts[p], f"BasicMotions_{p}.ts") for p in ("TRAIN", "TEST"))
    index = {c: i for i, c in enumerate(classes)}
    ytr_i, yte_i = np.array([index[y] for y in ytr]), np.array([index[y] for y in yte])
    rng = np.random.default_rng(seed)
    val = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(ytr_i == c), val_per_class, replace=False) for c in range(len(classes))]
        )
    )
    train = np.setdiff1d(np.arange(len(ytr_i)), val)
    # one frame is a 10 s window: 0.1 Hz
    specs = [ModalitySpec(n, (3, xtr.shape[2]), "signal", rate_hz=0.1) for n in ("accel", "gyro")]

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(
            {"accel": np.ascontiguousarray(x[:, :3]), "gyro": np.ascontiguousarray(x[:, 3:])}, y.astype(np.int64)
        )

    return Dataset(
        specs,
        {"train": split(xtr[train], ytr_i[train]), "val": split(xtr[val], ytr_i[val]), "test": split(xte, yte_i)},
        classes,
        name="basicmotions",
        description=f"UEA BasicMotions (accelerometer + gyroscope, 10 Hz x 10 s), {len(val)} val seed={seed}",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m edgefuse.data.uea --out basicmotions.npz [--wheel aeon-*.whl]``: BasicMotions as a user .npz."""
    import argparse

    from edgefuse.data.npz import save_npz

    p = argparse.ArgumentParser(description="write UEA BasicMotions (from aeon or sktime) as an edgefuse .npz")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wheel", type=Path, default=None, help="an aeon or sktime wheel (default: the installed package)")
    p.add_argument("--val-per-class", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        data = basicmotions(args.wheel, args.val_per_class, args.seed)
    except EdgefuseError as e:
        print(f"edgefuse.data.uea: error: {e}")
        return 2
    save_npz(data, args.out)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    print(f"wrote {args.out}: BasicMotions, sensors accel [3, 100] and gyro [3, 100], {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
