"""Clocks for the runtime: a manual clock for tests and simulated replays (the default is ``time.monotonic``)."""

from __future__ import annotations

import math

from edgefuse.errors import EdgefuseError


class ManualClock:
    """A clock that moves only when told: ``clock()`` returns ``clock.t``; ``set`` and ``advance`` move it forward."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def set(self, t: float) -> float:
        if not math.isfinite(t) or t < self.t:
            raise EdgefuseError(f"a clock only moves forward: at {self.t} s, asked to go to {t} s")
        self.t = float(t)
        return self.t

    def advance(self, dt: float) -> float:
        if not dt >= 0:
            raise EdgefuseError(f"a clock only moves forward: asked to advance by {dt} s")
        return self.set(self.t + dt)

    def __repr__(self) -> str:
        return f"ManualClock(t={self.t})"
