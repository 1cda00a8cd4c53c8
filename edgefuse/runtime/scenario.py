"""Fault scenarios: a dataset split replayed as timed sensor streams with scripted faults through a runtime.

A scenario is a TOML file (format in ``docs/runtime.md``; examples in ``scenarios/``):

.. code-block:: toml

    name = "camera unplugged"
    duration_s = 600.0
    [[faults]]
    sensor = "camera"          # or sensors = ["camera", "lidar"], or sensor = "*" for every sensor
    kind = "off"               # see FAULT_KINDS
    start_s = 200.0
    end_s = 400.0

The world shows one sample of the split for ``sample_period_s`` (default: the slowest
sensor's period), going through the split in order and starting over. Every sensor captures
at its spec rate, phase-aligned at t = 0, so each frame shows the sample in view when it
was captured; the runtime infers at ``infer_rate_hz`` (default once per sample, just before
it changes) and each answer is scored against that sample's label. Fault boundaries cut
the replay into phases; for each, the timeline gives the live set, the engines used, the
accuracy against the labels beside the manifest accuracy of the engines used, swaps and
rejected frames. With ``duration`` a multiple of the split's length in samples, every phase
of that length scores each sample once, so its accuracy is comparable with the manifest's.

Simulated time (a ManualClock) is the default: fast and deterministic. ``realtime=True``
paces the same events on the monotonic clock.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError
from edgefuse.runtime.clock import ManualClock
from edgefuse.runtime.policy import Policy, PolicyError, read_toml
from edgefuse.specs import ModalitySpec

#: kind -> (what it does, its parameters with their defaults)
FAULT_KINDS: dict[str, tuple[str, dict[str, float]]] = {
    "off": ("the sensor sends nothing", {}),
    "flap": (
        "off for the first `off_fraction` of every `period_s`, on for the rest",
        {"period_s": 0.3, "off_fraction": 0.5},
    ),
    "nan": ("a `fraction` of each frame's values are NaN", {"fraction": 0.1}),
    "inf": ("a `fraction` of each frame's values are +Inf", {"fraction": 0.1}),
    "out_of_range": ("a `fraction` of each frame's values lie past the spec's value_range", {"fraction": 0.1}),
    "frozen": ("every frame repeats the one captured at start_s, bit for bit", {}),
    "delay": ("frames arrive `delay_s` after their capture", {"delay_s": 0.3}),
    "reorder": ("frames arrive in swapped pairs: each even frame just after the odd one that follows it", {}),
    "wrong_shape": ("frames lose their last element along the last axis", {}),
    "wrong_dtype": ("frames arrive as float64 (int32 for tokens)", {}),
    "future": ("frames carry a timestamp `ahead_s` later than their capture", {"ahead_s": 0.5}),
}


@dataclass(frozen=True)
class Fault:
    """One scripted fault on some sensors over ``[start_s, end_s)``."""

    sensors: tuple[str, ...]
    kind: str
    start_s: float
    end_s: float
    params: Mapping[str, float] = field(default_factory=dict)

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    @property
    def label(self) -> str:
        return f"{'+'.join(self.sensors)} {self.kind.replace('_', ' ')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensors": list(self.sensors),
            "kind": self.kind,
            "start_s": self.start_s,
            "end_s": self.end_s,
            **self.params,
        }


@dataclass(frozen=True)
class Scenario:
    """A timed replay with faults; see the module docstring."""

    name: str
    duration_s: float
    faults: tuple[Fault, ...] = ()
    description: str = ""
    sample_period_s: float | None = None
    infer_rate_hz: float | None = None
    seed: int = 0
    policy: Policy | None = None
    source: str = ""

    @classmethod
    def from_toml(cls, path: str | Path, specs: Sequence[ModalitySpec]) -> "Scenario":
        doc = read_toml(path)
        try:
            return cls.from_dict(doc, specs, source=str(path))
        except PolicyError as e:
            raise PolicyError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], specs: Sequence[ModalitySpec], source: str = "") -> "Scenario":
        names = [s.name for s in specs]
        known = {"name", "description", "duration_s", "sample_period_s", "infer_rate_hz", "seed", "policy", "faults"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise PolicyError(f"scenario: unknown keys {unknown}; expected some of {sorted(known)}")
        duration = _positive(doc.get("duration_s"), "duration_s")
        faults = []
        for i, f in enumerate(doc.get("faults", [])):
            faults.append(_fault(f, i, names, duration))
        sp = doc.get("sample_period_s")
        rate = doc.get("infer_rate_hz")
        return cls(
            name=str(doc.get("name", Path(source).stem if source else "scenario")),
            description=str(doc.get("description", "")),
            duration_s=duration,
            faults=tuple(faults),
            sample_period_s=None if sp is None else _positive(sp, "sample_period_s"),
            infer_rate_hz=None if rate is None else _positive(rate, "infer_rate_hz"),
            seed=int(doc.get("seed", 0)),
            policy=Policy.from_dict(doc["policy"]) if "policy" in doc else None,
            source=source,
        )

    def boundaries(self) -> list[float]:
        cuts = {0.0, self.duration_s}
        for f in self.faults:
            cuts.update(t for t in (f.start_s, min(f.end_s, self.duration_s)) if 0.0 <= t <= self.duration_s)
        return sorted(cuts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "duration_s": self.duration_s,
            "sample_period_s": self.sample_period_s,
            "infer_rate_hz": self.infer_rate_hz,
            "seed": self.seed,
            "faults": [f.to_dict() for f in self.faults],
            "source": self.source,
        }


def _positive(v: Any, what: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
        raise PolicyError(f"scenario: {what} must be a positive number, got {v!r}")
    return float(v)


def _fault(f: Any, i: int, names: Sequence[str], duration: float) -> Fault:
    where = f"scenario: faults[{i}]"
    if not isinstance(f, Mapping):
        raise PolicyError(f"{where}: expected a table, got {f!r}")
    kind = f.get("kind")
    if kind not in FAULT_KINDS:
        raise PolicyError(f"{where}: kind must be one of {sorted(FAULT_KINDS)}, got {kind!r}")
    defaults = FAULT_KINDS[kind][1]
    allowed = {"sensor", "sensors", "kind", "start_s", "end_s", *defaults}
    unknown = sorted(set(f) - allowed)
    if unknown:
        raise PolicyError(f"{where} ({kind}): unknown keys {unknown}; expected some of {sorted(allowed)}")
    if ("sensor" in f) == ("sensors" in f):
        raise PolicyError(f'{where}: give exactly one of sensor = "name" (or "*") and sensors = [...]')
    sensors = f["sensors"] if "sensors" in f else ([*names] if f["sensor"] == "*" else [f["sensor"]])
    bad = [s for s in sensors if s not in names]
    if bad or not sensors:
        raise PolicyError(f"{where}: unknown sensor {bad or sensors}; the bundle's sensors are {list(names)}")
    start, end = f.get("start_s", 0.0), f.get("end_s", duration)
    if not all(isinstance(v, (int, float)) for v in (start, end)) or not 0 <= start < end:
        raise PolicyError(f"{where}: expected 0 <= start_s < end_s, got start_s={start!r} end_s={end!r}")
    params = {k: float(f.get(k, v)) for k, v in defaults.items()}
    for k, v in params.items():
        if not (v > 0 and math.isfinite(v)) or (k in ("fraction", "off_fraction") and v > 1):
            raise PolicyError(f"{where}: {k} must be positive{' and at most 1' if 'fraction' in k else ''}, got {v}")
    return Fault(tuple(n for n in names if n in sensors), kind, float(start), float(end), params)


class ReplayClock(ManualClock):
    """Scenario time in seconds: simulated (``wait_until`` jumps) or real (``wait_until`` sleeps)."""

    def __init__(self, realtime: bool = False) -> None:
        super().__init__(0.0)
        self.realtime = realtime
        self._origin = time.monotonic()

    def start(self) -> None:
        self._origin = time.monotonic()
        self.t = 0.0

    def __call__(self) -> float:
        return time.monotonic() - self._origin if self.realtime else self.t

    def wait_until(self, t: float) -> None:
        if self.realtime:
            ahead = t - self()
            if ahead > 0:
                time.sleep(ahead)
        elif t > self.t:
            self.t = t


@dataclass
class _Frame:
    arrival: float
    order: int  # pushes before inferences at the same time, then by sensor
    sensor: str
    ts: float  # the timestamp pushed with the frame
    sample: int
    faults: tuple[Fault, ...]


def sample_period(scenario: Scenario, specs: Sequence[ModalitySpec]) -> float:
    """How long each sample is in view: the scenario's ``sample_period_s``, else the slowest sensor's period."""
    return scenario.sample_period_s or max(s.period_s for s in specs)


def schedule(
    scenario: Scenario, specs: Sequence[ModalitySpec], n_samples: int
) -> tuple[list[_Frame], list[float], float]:
    """The replay's frames (sorted by arrival), its inference times, and the sample period."""
    sp = sample_period(scenario, specs)
    frames: list[_Frame] = []
    for order, spec in enumerate(specs):
        n = int(math.ceil(scenario.duration_s * spec.rate_hz - 1e-9))
        mine = [f for f in scenario.faults if spec.name in f.sensors]
        window_index: dict[int, int] = {}  # id(fault) -> index of this sensor's frame within the fault's window
        for k in range(n):
            c = k / spec.rate_hz
            active = tuple(f for f in mine if f.active(c))
            arrival, ts, skip = c, c, False
            for f in active:
                j = window_index[id(f)] = window_index.get(id(f), -1) + 1
                if f.kind == "off":
                    skip = True
                elif f.kind == "flap":
                    skip = ((c - f.start_s) % f.params["period_s"]) < f.params["off_fraction"] * f.params["period_s"]
                elif f.kind == "delay":
                    arrival = c + f.params["delay_s"]
                elif f.kind == "future":
                    ts = c + f.params["ahead_s"]
                elif f.kind == "reorder" and j % 2 == 0 and f.active((k + 1) / spec.rate_hz):
                    arrival = (k + 1) / spec.rate_hz + 1e-6
            if not skip:
                frames.append(_Frame(arrival, order, spec.name, ts, int(c / sp + 1e-9), active))
    frames.sort(key=lambda f: (f.arrival, f.order))
    rate = scenario.infer_rate_hz or 1.0 / sp
    n_inf = int(math.floor(scenario.duration_s * rate + 1e-9))
    infer_at = [(j + 1) / rate - 1e-6 for j in range(n_inf)]
    return frames, infer_at, sp


def _content(
    spec: ModalitySpec, fr: _Frame, data: Mapping[str, np.ndarray], n: int, frozen: dict, rng: np.random.Generator
) -> Any:
    x = data[spec.name][fr.sample % n]
    for f in fr.faults:
        kind = f.kind
        if kind == "frozen":
            x = frozen.setdefault((id(f), spec.name), x)
        elif kind in ("nan", "inf", "out_of_range"):
            x = x.copy()
            flat = x.reshape(-1)
            idx = rng.choice(flat.size, size=max(1, int(round(f.params["fraction"] * flat.size))), replace=False)
            if kind == "out_of_range":
                lo, hi = spec.value_range or (float(flat.min()), float(flat.max()))
                flat[idx] = hi + max(1.0, hi - lo)
            else:
                flat[idx] = np.nan if kind == "nan" else np.inf
        elif kind == "wrong_shape":
            x = x[..., :-1]
        elif kind == "wrong_dtype":
            x = x.astype(np.int32 if spec.kind == "tokens" else np.float64)
    return x


#: what one step of a replay does: open a phase, push a frame, infer
PHASE, PUSH, INFER = 0, 1, 2


@dataclass(frozen=True)
class Step:
    """One step of a replay at time ``t`` (the replay clock's seconds). ``PHASE``: a phase starts
    (``payload``: its fault labels); ``PUSH``: ``payload`` is ``(sensor, frame, timestamp)``, or a
    ``(sensor, reason, detail)`` fault when ``frame_ok`` is False (a message that could not be decoded);
    ``INFER``: the runtime infers (``payload``: the label in view, or None)."""

    t: float
    what: int
    payload: Any
    frame_ok: bool = True


def scenario_steps(
    scenario: Scenario, specs: Sequence[ModalitySpec], inputs: Mapping[str, np.ndarray], labels: np.ndarray
) -> Iterator[Step]:
    """The scenario's steps in time order (frames' contents made as they are reached, so the fault RNG
    draws in arrival order). At one instant a phase starts first (frames at its start belong to it), then
    frames arrive, then the runtime infers."""
    n = int(labels.shape[0])
    frames, infer_at, sp = schedule(scenario, specs, n)
    bounds = scenario.boundaries()
    todo = sorted(
        [(b, PHASE, 0) for b in bounds[:-1]]
        + [(fr.arrival, PUSH, i) for i, fr in enumerate(frames) if fr.arrival < scenario.duration_s]
        + [(t, INFER, 0) for t in infer_at]
    )
    rng = np.random.default_rng(scenario.seed)
    by_name = {s.name: s for s in specs}
    frozen: dict = {}
    for t, what, i in todo:
        if what == PUSH:
            fr = frames[i]
            yield Step(t, PUSH, (fr.sensor, _content(by_name[fr.sensor], fr, inputs, n, frozen, rng), fr.ts))
        elif what == INFER:
            yield Step(t, INFER, int(labels[int(t / sp + 1e-9) % n]))
        else:
            yield Step(t, PHASE, [f.label for f in scenario.faults if f.start_s <= t < f.end_s])


def check_inputs(specs: Sequence[ModalitySpec], inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> None:
    """Raise EdgefuseError unless ``inputs`` has a ``[S, *shape]`` array of each spec's dtype and S > 0."""
    if int(labels.shape[0]) == 0:
        raise EdgefuseError("replay: the split has no samples")
    for s in specs:
        if s.name not in inputs:
            raise EdgefuseError(f"replay: the data has no modality {s.name!r}; it has {sorted(inputs)}")
        arr = inputs[s.name]
        if arr.shape[1:] != s.shape or arr.dtype != np.dtype(s.dtype):
            raise EdgefuseError(
                f"replay: modality {s.name!r} expected samples {list(s.shape)} {s.dtype} as the bundle's "
                f"spec says, got {list(arr.shape[1:])} {arr.dtype}"
            )


def replay(
    runtime,
    scenario: Scenario,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    clock: ReplayClock,
    on_phase: Callable[[dict[str, Any]], None] | None = None,
    on_infer: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Replay ``scenario`` over ``inputs``/``labels`` (one split) through ``runtime``, whose clock
    must be ``clock``. Returns the timeline (see ``format_timeline``); ``on_phase`` is called
    with each phase's record as it completes, ``on_infer`` with each Result."""
    check_clock(runtime, clock)
    check_inputs(runtime.specs, inputs, labels)
    sp = sample_period(scenario, runtime.specs)
    steps = scenario_steps(scenario, runtime.specs, inputs, labels)
    timeline = drive(runtime, steps, clock, scenario.duration_s, on_phase, on_infer)
    return {
        "scenario": scenario.to_dict(),
        "source": runtime.source,
        "realtime": clock.realtime,
        "samples": int(labels.shape[0]),
        "sample_period_s": sp,
        **timeline,
    }


def check_clock(runtime, clock: ReplayClock) -> None:
    if runtime.clock is not clock:
        raise EdgefuseError("replay: the runtime must have been built with the replay's clock (clock=ReplayClock(...))")


def drive(
    runtime,
    steps: Iterable[Step],
    clock: ReplayClock,
    end_s: float,
    on_phase: Callable[[dict[str, Any]], None] | None = None,
    on_infer: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run ``steps`` (in time order) through ``runtime`` on ``clock``; the last phase ends at ``end_s``.
    ``on_phase`` gets each phase's record as it ends, ``on_infer`` each Result.
    A replay whose first step is not a PHASE starts with a phase with no faults. Returns the timeline's
    ``wall_seconds``, ``phases``, ``events`` (no frame rejections: those are counted) and ``counters``."""
    events: list[Any] = []
    listen = events.append
    runtime.add_listener(listen)
    phases: list[dict[str, Any]] = []
    inferences: list[tuple[float, Any, int | None]] = []
    wall = time.perf_counter()
    clock.start()
    opened: tuple[float, list[str]] | None = None
    ev0, inf0, counters0 = 0, 0, runtime.counters()

    def close(t: float) -> None:
        nonlocal ev0, inf0, counters0
        counters1 = runtime.counters()
        rec = _phase(opened[0], t, opened[1], inferences[inf0:], events[ev0:], counters0, counters1)
        phases.append(rec)
        if on_phase is not None:
            on_phase(rec)
        ev0, inf0, counters0 = len(events), len(inferences), counters1

    try:
        for step in steps:
            if step.t >= end_s:
                break
            clock.wait_until(step.t)
            if step.what == PHASE or opened is None:
                if opened is not None:
                    close(step.t)
                opened = (step.t if step.what == PHASE else 0.0, list(step.payload) if step.what == PHASE else [])
            if step.what == PUSH:
                if step.frame_ok:
                    runtime.push(*step.payload)
                else:
                    runtime.fault(*step.payload)
            elif step.what == INFER:
                result = runtime.infer()
                inferences.append((step.t, result, step.payload))
                if on_infer is not None:
                    on_infer(result)
        clock.wait_until(end_s)
        if opened is None:
            opened = (0.0, [])
        close(end_s)
    finally:
        runtime.remove_listener(listen)
    return {
        "wall_seconds": time.perf_counter() - wall,
        "phases": phases,
        "events": [e.to_dict() for e in events if e.kind != "reject"],
        "counters": runtime.counters(),
    }


def _phase(a: float, b: float, faults: list[str], infs: list, events: list, c0: dict, c1: dict) -> dict[str, Any]:
    answered = [(r, y) for _, r, y in infs if r.answered]
    labelled = [(r, y) for r, y in answered if y is not None]
    engines = Counter(r.engine or "(none)" for _, r, _ in infs)
    lives = Counter("+".join(r.live) or "(none)" for _, r, _ in infs)
    known = [(r.expected_accuracy, r.class_index == y) for r, y in labelled if r.expected_accuracy is not None]
    correct = sum(int(r.class_index == y) for r, y in labelled)
    per_engine = {}
    for name in engines:
        rows = [(r, y) for r, y in answered if r.engine == name]
        scored = [(r, y) for r, y in rows if y is not None]
        if rows:
            per_engine[name] = {
                "inferences": len(rows),
                "accuracy": sum(int(r.class_index == y) for r, y in scored) / len(scored) if scored else None,
                "manifest_accuracy": rows[0][0].expected_accuracy,
            }
    rejected: Counter[str] = Counter()
    for reason, k in c1["rejected_by_reason"].items():
        if k - c0["rejected_by_reason"].get(reason, 0):
            rejected[reason] = k - c0["rejected_by_reason"].get(reason, 0)
    return {
        "start_s": a,
        "end_s": b,
        "faults": faults,
        "name": ", ".join(faults) or "nominal",
        "inferences": len(infs),
        "answered": len(answered),
        "statuses": dict(Counter(r.status.value for _, r, _ in infs)),
        "live": dict(lives.most_common()),
        "engines": dict(engines.most_common()),
        "per_engine": per_engine,
        "accuracy": correct / len(labelled) if labelled else None,
        "expected_accuracy": sum(a for a, _ in known) / len(known) if known else None,
        "classes": dict(Counter(r.class_name for r, _ in answered).most_common()),
        "swaps": [{"t": e.t, "from": e.old, "to": e.new, **dict(e.data)} for e in events if e.kind == "swap"],
        "state_changes": [
            {"t": e.t, "sensor": e.sensor, "from": e.old, "to": e.new, "reason": e.reason}
            for e in events
            if e.kind == "state"
        ],
        "accepted": {s: c1["accepted"][s] - c0["accepted"].get(s, 0) for s in c1["accepted"]},
        "rejected": dict(rejected.most_common()),
        "overhead_ms_p50": float(np.median([r.overhead_ms for _, r, _ in infs])) if infs else None,
        "latency_ms_p50": float(np.median([r.latency_ms for r, _ in answered])) if answered else None,
    }


def check_timeline(timeline: Mapping[str, Any], max_drop: float = 0.03, min_answers: int = 100) -> list[str]:
    """Phases whose accuracy is below the manifest accuracy of the engines they used minus ``max_drop``.

    A phase with fewer than ``min_answers`` answers is not judged: those are the transients of
    a phase with no live sensor (one answer from a frame still within its timeout is a
    coin toss, not an accuracy)."""
    bad = []
    for i, p in enumerate(timeline["phases"]):
        if p["answered"] < min_answers:
            continue
        if (
            p["accuracy"] is not None
            and p["expected_accuracy"] is not None
            and p["accuracy"] < p["expected_accuracy"] - max_drop
        ):
            bad.append(
                f"phase {i + 1} ({p['name']}, {p['start_s']:g}-{p['end_s']:g} s): accuracy {p['accuracy']:.3f} is "
                "below "
                f"the manifest's {p['expected_accuracy']:.3f} minus {max_drop:g}"
            )
    return bad


def format_timeline(timeline: Mapping[str, Any]) -> str:
    """The timeline as a table, one row per phase, then the swaps."""
    sc = timeline["scenario"]
    mode = "real time" if timeline["realtime"] else "simulated time"
    what = (
        f"{timeline['samples']} samples, one every {timeline['sample_period_s'] * 1e3:g} ms"
        if timeline.get("samples")
        else f"{timeline.get('labels', 0)} labels"
    )
    lines = [
        f"{timeline.get('kind', 'scenario')} {sc['name']!r}: {sc['duration_s']:g} s in {mode} "
        f"({timeline['wall_seconds']:.1f} s wall), {what}; bundle {timeline['source']}"
    ]
    if sc.get("description"):
        lines.append(f"  {sc['description']}")
    head = (
        f"{'#':>2}  {'time (s)':<13} {'faults':<26} {'live (most)':<20} {'engine (inferences)':<34} "
        f"{'acc':>6} {'manif':>6}  {'swaps':<5} rejected"
    )
    lines += ["", head, "-" * len(head)]
    for i, p in enumerate(timeline["phases"]):
        live = next(iter(p["live"]), "-")
        eng = ", ".join(f"{k} ({v})" for k, v in p["engines"].items())
        acc = "-" if p["accuracy"] is None else f"{p['accuracy']:.3f}"
        exp = "-" if p["expected_accuracy"] is None else f"{p['expected_accuracy']:.3f}"
        rej = ", ".join(f"{k} {v}" for k, v in p["rejected"].items()) or "-"
        lines.append(
            f"{i + 1:>2}  {p['start_s']:>5.1f}-{p['end_s']:<7.1f} {p['name'][:26]:<26} {live[:20]:<20} {eng[:34]:<34} "
            f"{acc:>6} {exp:>6}  {len(p['swaps']):<5} {rej}"
        )
    swaps = [(i, s) for i, p in enumerate(timeline["phases"]) for s in p["swaps"]]
    if swaps:
        lines += [
            "",
            "swaps (time, old -> new engine, first inference of the new engine, time since the health change):",
        ]
        for i, s in swaps[:40]:
            since = "-" if s.get("since_change_ms") is None else f"{s['since_change_ms']:.1f} ms"
            lines.append(
                f"  {s['t']:9.3f} s  phase {i + 1}: {s['from']} -> {s['to']}  first {s['first_latency_ms']:.3f} ms, "
                f"since change {since}"
            )
        if len(swaps) > 40:
            lines.append(f"  ... {len(swaps) - 40} more in the JSON")
    return "\n".join(lines)
