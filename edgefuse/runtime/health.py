"""Sensor health: frame validation and each sensor's LIVE / STALE / DROPPED / RECOVERING state, driven by the clock.

A sensor is LIVE while valid frames keep arriving within its timeout. It becomes STALE when
none arrived within the timeout, DROPPED when it stayed STALE for ``drop_after_s`` or sent an
invalid frame, and RECOVERING when valid frames arrive again; it is LIVE again only after
``recover_frames`` consecutive valid frames spanning at least ``recover_s`` (hysteresis).
Nothing here reads a clock or takes a lock: the runtime passes the time in and holds the lock.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import numpy as np

from edgefuse.specs import ModalitySpec


class HealthState(str, Enum):
    """A sensor's health. Only LIVE sensors' frames reach an engine."""

    LIVE = "LIVE"
    STALE = "STALE"
    DROPPED = "DROPPED"
    RECOVERING = "RECOVERING"

    def __str__(self) -> str:
        return self.value


LIVE, STALE, DROPPED, RECOVERING = HealthState.LIVE, HealthState.STALE, HealthState.DROPPED, HealthState.RECOVERING

#: why a frame was rejected (the keys of the runtime's rejection counters)
UNKNOWN_SENSOR = "unknown_sensor"
BAD_TYPE = "bad_type"
BAD_DTYPE = "bad_dtype"
BAD_SHAPE = "bad_shape"
NON_FINITE = "non_finite"
OUT_OF_RANGE = "out_of_range"
FROZEN = "frozen"
BAD_TIMESTAMP = "bad_timestamp"
TIME_BACKWARDS = "time_backwards"
TIME_FUTURE = "time_future"
LATE = "late"
REASONS = (
    UNKNOWN_SENSOR,
    BAD_TYPE,
    BAD_DTYPE,
    BAD_SHAPE,
    NON_FINITE,
    OUT_OF_RANGE,
    FROZEN,
    BAD_TIMESTAMP,
    TIME_BACKWARDS,
    TIME_FUTURE,
    LATE,
)


@dataclass(frozen=True)
class SensorParams:
    """One sensor's resolved health parameters (seconds); see ``edgefuse.runtime.Policy``."""

    timeout_s: float
    drop_after_s: float
    recover_frames: int
    recover_s: float
    frozen_s: float | None
    future_tolerance_s: float
    check_range: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: (old state, new state, reason, the clock time at which the change took effect)
Transition = tuple[HealthState, HealthState, str, float]
_NONE: tuple[Transition, ...] = ()  # what refresh/accept/fault return when no state changes


def check_content(
    spec: ModalitySpec, frame: Any, check_range: bool = True, dtype: np.dtype | None = None
) -> tuple[np.ndarray | None, str | None, str]:
    """Validate one frame's content against ``spec``: ``(frame, None, "")`` when valid, where
    ``frame`` has exactly ``spec.shape`` (a leading batch axis of 1 is dropped), else
    ``(None, reason, detail)``. The detail names what was expected and what was got.
    ``dtype``: ``np.dtype(spec.dtype)``, when the caller has it at hand."""
    if not isinstance(frame, np.ndarray):
        return None, BAD_TYPE, f"expected a numpy array, got {type(frame).__name__}"
    if frame.dtype != (dtype if dtype is not None else np.dtype(spec.dtype)):
        return None, BAD_DTYPE, f"expected dtype {spec.dtype}, got {frame.dtype}"
    if frame.shape != spec.shape:
        if frame.shape[:1] == (1,) and frame.shape[1:] == spec.shape:
            frame = frame[0]
        else:
            return None, BAD_SHAPE, f"expected shape {list(spec.shape)} (or [1, ...]), got {list(frame.shape)}"
    lo, hi = frame.min(), frame.max()  # NaN propagates through both; Inf shows in one
    if spec.kind != "tokens" and not (math.isfinite(lo) and math.isfinite(hi)):
        return None, NON_FINITE, "expected finite values, got NaN or Inf"
    vr = spec.value_range
    if check_range and vr is not None and (lo < vr[0] or hi > vr[1]):
        return None, OUT_OF_RANGE, f"expected values in [{vr[0]:g}, {vr[1]:g}], got [{float(lo):g}, {float(hi):g}]"
    return frame, None, ""


class SensorHealth:
    """One sensor's state machine and its latest accepted frame. Not thread-safe: the caller locks.

    ``refresh(now)`` applies timeouts; ``check_time(frame, t, now)`` checks a content-valid
    frame's timestamp and whether it is frozen; ``accept(frame, t)`` stores it; ``fault(now,
    reason, detail)`` records a rejected one. Each returns the transitions it caused.
    """

    def __init__(self, spec: ModalitySpec, params: SensorParams, now: float, admit_first_frame: bool = True) -> None:
        self.spec, self.p = spec, params
        self.dtype = np.dtype(spec.dtype)
        self.state, self.reason, self.since = STALE, "no frame received yet", now
        # three [1, *shape] slots: the latest accepted frame, the one an inference is reading, and one to
        # copy the next frame into, so that neither push nor infer ever copies a frame twice or waits
        self.slots = [np.zeros((1, *spec.shape), dtype=spec.dtype) for _ in range(3)]
        self._latest, self._reading = 0, -1
        self.last_t: float | None = None  # capture time of the latest accepted frame
        self.frozen_since: float | None = None  # capture time since which frames are bit-identical
        self.run_frames, self.run_start = 0, 0.0  # the current run of valid frames while RECOVERING
        self.admit_first = admit_first_frame
        self.ever_live = False
        self._same = False  # check_time's finding for the frame it just checked
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    @property
    def frame(self) -> np.ndarray:
        """The latest accepted frame (zeros before the first)."""
        return self.slots[self._latest][0]

    def take(self) -> np.ndarray:
        """The latest frame's ``[1, *shape]`` slot, kept from being overwritten until ``release``."""
        self._reading = self._latest
        return self.slots[self._latest]

    def release(self) -> None:
        self._reading = -1

    # ---- transitions -------------------------------------------------------------------
    def _to(self, new: HealthState, reason: str, at: float) -> Transition:
        old = self.state
        self.state, self.reason, self.since = new, reason, at
        if new is LIVE:
            self.ever_live = True
        if new is not RECOVERING:
            self.run_frames = 0
        return old, new, reason, at

    def refresh(self, now: float) -> Sequence[Transition]:
        """Apply the timeouts at time ``now`` (runs for every sensor on every push and inference: no allocation
        when nothing changes)."""
        p = self.p
        if self.state is DROPPED or (
            self.state is not STALE and (self.last_t is None or now - self.last_t <= p.timeout_s)
        ):
            return _NONE
        out: list[Transition] = []
        if self.state in (LIVE, RECOVERING) and self.last_t is not None and now - self.last_t > p.timeout_s:
            what = "no valid frame" if self.state is LIVE else "recovery interrupted: no valid frame"
            out.append(
                self._to(
                    STALE, f"{what} for more than its timeout of {p.timeout_s * 1e3:.0f} ms", self.last_t + p.timeout_s
                )
            )
        if self.state is STALE and now - self.since > p.drop_after_s:
            out.append(self._to(DROPPED, f"stale for more than {p.drop_after_s:g} s", self.since + p.drop_after_s))
        return out

    def check_time(self, frame: np.ndarray, t: float, now: float) -> tuple[str | None, str]:
        """``(reason, detail)`` when the timestamp or the frozen check rejects the frame, else ``(None, "")``."""
        p = self.p
        if not isinstance(t, (int, float)) or not math.isfinite(t):
            return BAD_TIMESTAMP, f"expected a finite timestamp in seconds, got {t!r}"
        if t > now + p.future_tolerance_s:
            return (
                TIME_FUTURE,
                f"timestamp {t:.6f} s is {(t - now) * 1e3:.3f} ms ahead of the runtime clock ({now:.6f} s)",
            )
        if self.last_t is not None and t <= self.last_t:
            return TIME_BACKWARDS, f"timestamp {t:.6f} s is not after the previous accepted frame's {self.last_t:.6f} s"
        if now - t > p.timeout_s:
            return (
                LATE,
                f"frame is {(now - t) * 1e3:.1f} ms old on arrival, past its timeout of {p.timeout_s * 1e3:.0f} ms",
            )
        self._same = p.frozen_s is not None and self.last_t is not None and np.array_equal(frame, self.frame)
        if self._same:
            since = self.frozen_since if self.frozen_since is not None else self.last_t
            if t - since > p.frozen_s:  # type: ignore[operator]
                return (
                    FROZEN,
                    f"bit-identical frames for {(t - since) * 1e3:.0f} ms, past its limit of {p.frozen_s * 1e3:.0f} ms",
                )
        return None, ""

    def fault(self, now: float, reason: str, detail: str) -> Sequence[Transition]:
        """Record a rejected frame: the sensor leaves LIVE (or restarts its recovery) as DROPPED."""
        self.rejected[reason] += 1
        if self.state is DROPPED:
            self.reason = f"{reason}: {detail}"
            return _NONE
        return [self._to(DROPPED, f"{reason}: {detail}", now)]

    def accept(self, frame: np.ndarray, t: float) -> Sequence[Transition]:
        """Store a frame that passed ``check_time`` just before; readmit the sensor when its run is long enough."""
        if self._same:  # bit-identical to the stored frame (found by check_time)
            if self.frozen_since is None:
                self.frozen_since = self.last_t
        else:
            self.frozen_since = None
        w = 0 if self._latest != 0 and self._reading != 0 else (1 if self._latest != 1 and self._reading != 1 else 2)
        np.copyto(self.slots[w][0], frame)
        self._latest = w
        self.last_t = t
        self.accepted += 1
        if self.state is LIVE:
            return _NONE
        p = self.p
        if self.admit_first and not self.ever_live:
            return [self._to(LIVE, "first valid frame", t)]
        out: list[Transition] = []
        if self.state is not RECOVERING:
            out.append(self._to(RECOVERING, "valid frames again", t))
            self.run_frames, self.run_start = 0, t
        self.run_frames += 1
        if self.run_frames >= p.recover_frames and t - self.run_start >= p.recover_s:
            out.append(
                self._to(
                    LIVE, f"{self.run_frames} consecutive valid frames over {(t - self.run_start) * 1e3:.0f} ms", t
                )
            )
        return out

    def status(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since": self.since,
            "reason": self.reason,
            "last_frame_age_s": None if self.last_t is None else now - self.last_t,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "recovery": {"frames": self.run_frames, "of": self.p.recover_frames} if self.state is RECOVERING else None,
            "params": self.p.to_dict(),
        }
