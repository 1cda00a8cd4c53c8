"""Datasets: the built-in SensorScenes generator and user .npz files (numpy only)."""

from edgefuse.data.dataset import SPLITS, Dataset, Split
from edgefuse.data.npz import load_npz
from edgefuse.data.sensorscenes import load_sensorscenes


def load_dataset(source: str, seed: int = 0, train_size: int | None = None, val_size: int | None = None) -> Dataset:
    """``'sensorscenes'`` or a path to a user ``.npz``. ``train_size``/``val_size``: keep only a
    stratified sample of that many training/validation samples (every class in proportion), as a
    user with a small dataset has; the test split stays whole."""
    data = load_sensorscenes(seed=seed) if source == "sensorscenes" else load_npz(source, seed=seed)
    return data.reduced(train_size, val_size, seed)


__all__ = ["SPLITS", "Dataset", "Split", "load_dataset", "load_npz", "load_sensorscenes"]
