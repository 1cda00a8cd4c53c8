"""The Engine interface every backend implements: named numpy arrays in, named numpy arrays out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError


class BackendUnavailable(EdgefuseError):
    """The backend's library (onnxruntime, tensorrt, torch) or device is not installed or visible."""


@dataclass(frozen=True)
class TensorSpec:
    """One engine input or output. ``shape`` uses -1 for the dynamic batch axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(d["name"], tuple(int(s) for s in d["shape"]), d["dtype"])


class Engine:
    """Base class. Subclasses set ``backend``, ``inputs``, ``outputs`` and implement ``_run``.

    ``run(feeds)`` validates the feeds (names, dtypes, per-sample shapes, equal batch) and
    records its own wall time in ``last_latency_ms``.
    """

    backend: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    name: str = ""

    def __init__(self) -> None:
        self.last_latency_ms = float("nan")
        self._closed = False

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        want = [t.name for t in self.inputs]
        missing = [n for n in want if n not in feeds]
        extra = [n for n in feeds if n not in want]
        if missing or extra:
            raise EdgefuseError(
                f"engine {self.name!r}: expected inputs {want}, got {list(feeds)} (missing {missing}, unexpected "
                f"{extra})"
            )
        batch = None
        for t in self.inputs:
            x = feeds[t.name]
            if not isinstance(x, np.ndarray):
                raise EdgefuseError(
                    f"engine {self.name!r}: input {t.name!r} must be a numpy array, got {type(x).__name__}"
                )
            if x.dtype != np.dtype(t.dtype):
                raise EdgefuseError(f"engine {self.name!r}: input {t.name!r} expected dtype {t.dtype}, got {x.dtype}")
            if x.ndim != len(t.shape) or any(w not in (-1, g) for w, g in zip(t.shape, x.shape)):
                raise EdgefuseError(
                    f"engine {self.name!r}: input {t.name!r} expected shape {list(t.shape)} (-1: any batch), got "
                    f"{list(x.shape)}"
                )
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise EdgefuseError(
                    f"engine {self.name!r}: input {t.name!r} has batch {x.shape[0]}, expected {batch} like the others"
                )

    def run(self, feeds: Mapping[str, np.ndarray], check: bool = True) -> dict[str, np.ndarray]:
        """``check=False`` skips the feeds' validation, for a caller that built them to the engine's
        inputs itself (the runtime's preallocated buffers); the checks cost about 10 µs a call."""
        if self._closed:
            raise EdgefuseError(f"engine {self.name!r} is closed")
        if check:
            self.check_feeds(feeds)
        start = time.perf_counter()
        out = self._run(feeds)
        self.last_latency_ms = (time.perf_counter() - start) * 1e3
        return out

    def dummy_feeds(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {t.name: np.zeros((batch, *t.shape[1:]), dtype=t.dtype) for t in self.inputs}

    def warmup(self, iterations: int = 3, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run ``iterations`` times per batch size so the first real call pays no first-run cost."""
        for b in batch_sizes:
            feeds = self.dummy_feeds(b)
            for _ in range(iterations):
                self.run(feeds)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} inputs={[t.name for t in self.inputs]}>"
