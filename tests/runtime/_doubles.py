"""An engine double that records every feed it is given (copies), for the runtime's tests."""

from __future__ import annotations

import numpy as np

from edgefuse import ModalitySpec
from edgefuse.engines import TensorSpec

SPECS = [
    ModalitySpec("cam", (2, 4, 4), "image", rate_hz=20.0, value_range=(0.0, 1.0)),  # timeout 0.1 s
    ModalitySpec("lid", (2, 8), "signal", rate_hz=10.0, value_range=(0.0, 2.0)),  # timeout 0.2 s
    ModalitySpec("rad", (6,), "vector", rate_hz=50.0),  # timeout 0.04 s, no range
]
NAMES = [s.name for s in SPECS]


class RecordingEngine:
    """Logits are a fixed vector (``logits``) or, by default, each input's mean times the class index."""

    backend = "double"

    def __init__(self, members, specs=SPECS, num_classes=3, logits=None):
        by = {s.name: s for s in specs}
        self.name = "+".join(members)
        self.inputs = [TensorSpec(m, (-1, *by[m].shape), by[m].dtype) for m in members]
        self.outputs = [TensorSpec("logits", (-1, num_classes), "float32")]
        self.c = num_classes
        self.fixed = None if logits is None else np.asarray(logits, np.float32)
        self.feeds: list[dict[str, np.ndarray]] = []
        self.closed = False

    def run(self, feeds):
        assert set(feeds) == {t.name for t in self.inputs}, (self.name, list(feeds))
        self.feeds.append({k: v.copy() for k, v in feeds.items()})
        if self.fixed is not None:
            return {"logits": self.fixed[None].copy()}
        m = float(sum(v.mean() for v in feeds.values()))
        return {"logits": (m * np.arange(self.c, dtype=np.float32))[None]}

    def warmup(self):
        pass

    def close(self):
        self.closed = True


def all_engines(specs=SPECS, subsets=None, **kw):
    from edgefuse.specs import all_subsets

    subs = subsets or all_subsets([s.name for s in specs])
    return {"+".join(s): RecordingEngine(s, specs, **kw) for s in subs}


def frame(name, value=0.5, specs=SPECS):
    s = {x.name: x for x in specs}[name]
    return np.full(s.shape, value, dtype=s.dtype)


def fed_arrays(engines):
    """Every array any engine was fed, with its sensor name."""
    return [(k, v) for e in engines.values() for f in e.feeds for k, v in f.items()]
