"""Datasets: the built-in SensorScenes generator and user .npz files (numpy only)."""

from edgefuse.data.dataset import SPLITS, Dataset, Split
from edgefuse.data.npz import load_npz
from edgefuse.data.sensorscenes import load_sensorscenes


def load_dataset(source: str, seed: int = 0) -> Dataset:
    """``'sensorscenes'`` or a path to a user ``.npz``."""
    if source == "sensorscenes":
        return load_sensorscenes(seed=seed)
    return load_npz(source, seed=seed)


__all__ = ["SPLITS", "Dataset", "Split", "load_dataset", "load_npz", "load_sensorscenes"]
