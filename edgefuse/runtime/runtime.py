"""The runtime: sensor frames in from any thread, the engine of the live sensors run, a Result out.

``push`` validates a frame and updates its sensor's health; ``infer`` applies the timeouts,
takes the live set, picks its engine (``edgefuse.runtime.select``) and runs it on copies of
the live sensors' latest frames. Every engine is loaded and warmed at start-up, so a swap
only changes which engine is called. The clock is injected: with a manual clock every
behaviour is reproducible to the microsecond. One lock guards the sensors' state and is held
only to validate timestamps and copy frames; engines run outside it, one at a time.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from edgefuse.engines.base import Engine
from edgefuse.errors import EdgefuseError
from edgefuse.runtime.health import LIVE, UNKNOWN_SENSOR, SensorHealth, Transition, check_content
from edgefuse.runtime.policy import Policy
from edgefuse.runtime.select import Plan, combine, make_plan, softmax
from edgefuse.specs import SUBSET_SEP, ModalitySpec, all_subsets, check_specs, parse_subset

log = logging.getLogger("edgefuse.runtime")

Clock = Callable[[], float]


class Status(str, Enum):
    """OK: answered by an engine that meets the policy. DEGRADED: answered, but the engine's
    manifest accuracy is below the policy's ``min_accuracy``. NO_SENSORS: no answer, because
    no sensor is live (or no engine of the bundle serves the live ones)."""

    OK = "OK"
    DEGRADED = "DEGRADED"
    NO_SENSORS = "NO_SENSORS"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Result:
    """One inference.

    Attributes:
        status: OK, DEGRADED or NO_SENSORS.
        t: the runtime clock's time of the inference (s).
        live: the live sensors, in spec order.
        engine: the engine that answered (a subset name, or ``late:<combiner>(...)``); None
            with NO_SENSORS.
        class_index, class_name: the decision (None with NO_SENSORS).
        logits: ``[C]``, the engine's output row (log-probabilities for late fusion; None with
            NO_SENSORS). ``probabilities`` is their softmax, computed when read.
        ages: for each sensor the engine read (``used``, in spec order), the age of its frame at ``t`` (s).
        latency_ms: the engine's wall time.
        overhead_ms: the runtime's own wall time in ``infer`` (everything but the engine).
        expected_accuracy: the engine's manifest accuracy (None for late fusion and NO_SENSORS).
        reason: why the status is not OK ("" when it is).
    """

    status: Status
    t: float
    live: tuple[str, ...]
    engine: str | None
    class_index: int | None
    class_name: str | None
    logits: np.ndarray | None
    ages: dict[str, float]
    latency_ms: float
    overhead_ms: float
    expected_accuracy: float | None
    reason: str = ""

    @property
    def used(self) -> tuple[str, ...]:
        """The sensors whose frames the engine read, in spec order."""
        return tuple(self.ages)

    @property
    def answered(self) -> bool:
        return self.status is not Status.NO_SENSORS

    @property
    def probabilities(self) -> np.ndarray | None:
        """``[C]`` class probabilities (None with NO_SENSORS)."""
        return None if self.logits is None else softmax(self.logits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "t": self.t,
            "live": list(self.live),
            "engine": self.engine,
            "used": list(self.used),
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probabilities": None if self.logits is None else self.probabilities.tolist(),
            "ages": dict(self.ages),
            "latency_ms": self.latency_ms,
            "overhead_ms": self.overhead_ms,
            "expected_accuracy": self.expected_accuracy,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Event:
    """One entry of the event log.

    ``kind``: ``state`` (a sensor's health changed: ``old`` -> ``new`` because of ``reason``),
    ``reject`` (a frame was rejected: ``reason`` is the counter's key, ``data['detail']`` says
    what was expected and got) or ``swap`` (the answering engine changed from ``old`` to
    ``new``; ``data`` has the selection time, the new engine's first latency and the time
    since the health change that caused it).
    """

    t: float
    kind: str
    sensor: str | None
    old: str | None
    new: str | None
    reason: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "kind": self.kind,
            "sensor": self.sensor,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            **({"data": dict(self.data)} if self.data else {}),
        }


class Runtime:
    """Keeps a fusion model answering while its sensors come and go.

    Args:
        specs: the sensors, in the bundle's order.
        engines: subset name (``camera+lidar``) -> an Engine whose inputs are those sensors,
            already loaded (and warmed: ``from_bundle`` does both).
        accuracy: subset name -> the engine's manifest accuracy (selection and DEGRADED use it).
        class_names: names of the output classes.
        policy: see ``Policy`` (default: ``Policy()``).
        clock: a callable returning seconds (default ``time.monotonic``); every timestamp given
            to ``push`` must be on this clock.
        source: where the engines came from (shown by ``status()``).
    """

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        engines: Mapping[str, Any] | None = None,
        accuracy: Mapping[str, float | None] | None = None,
        class_names: Sequence[str] | None = None,
        policy: Policy | None = None,
        clock: Clock | None = None,
        source: str = "",
        encoders: Mapping[str, Any] | None = None,
        head: Any = None,
        exclusive_engines: bool = False,
    ) -> None:
        self.specs = check_specs(specs)
        self.names = [s.name for s in self.specs]
        self.policy = policy or Policy()
        self.clock: Clock = clock or time.monotonic
        self.source = source
        by_name = {s.name: s for s in self.specs}
        self.split = encoders is not None or head is not None
        self.engines: dict[str, Any] = {}
        if self.split:
            if engines:
                raise EdgefuseError("a runtime runs either per-subset engines or encoders + a head, got both")
            if head is None or encoders is None or sorted(encoders) != sorted(self.names):
                raise EdgefuseError(
                    f"a split runtime needs one encoder per sensor {self.names} and a head, got encoders "
                    f"{sorted(encoders or {})} and {'a' if head is not None else 'no'} head"
                )
            for n, e in encoders.items():
                _check_engine_inputs(f"encoder_{n}", e, (n,), by_name)
            self.encoders, self.head = dict(encoders), head
            self.engines = {f"encoder_{n}": e for n, e in encoders.items()} | {"head": head}
            dim = int(head.inputs[0].shape[-1])
            self._embedding_rows = np.zeros((len(self.names), dim), dtype=np.float32)  # one row per sensor
            self._embeddings = {n: self._embedding_rows[i] for i, n in enumerate(self.names)}
            self._embedding_t: dict[str, float | None] = dict.fromkeys(self.names)
            self._encoder_locks = {n: threading.Lock() for n in self.names}
            self._head_feeds = {
                "embeddings": np.zeros((1, len(self.names), dim), dtype=np.float32),
                "present": np.zeros((1, len(self.names)), dtype=bool),
            }
        else:
            if not engines:
                raise EdgefuseError("the runtime needs at least one engine, got none")
            for key, engine in engines.items():
                members = parse_subset(key, self.names)
                if SUBSET_SEP.join(members) != key:
                    raise EdgefuseError(
                        f"engine key {key!r}: expected the canonical subset name {SUBSET_SEP.join(members)!r}"
                    )
                _check_engine_inputs(key, engine, members, by_name)
                self.engines[key] = engine
        # edgefuse's own engines skip re-validating the runtime's buffers, which match their inputs by construction
        self._runner = {
            k: (functools.partial(e.run, check=False) if isinstance(e, Engine) else e.run)
            for k, e in self.engines.items()
        }
        # engines that may not run at the same time (TensorRT's share one device-memory block): one lock for all
        self._exclusive = threading.Lock() if exclusive_engines else None
        self.accuracy = dict(accuracy or {})
        n_out = _num_classes(self.head if self.split else next(iter(self.engines.values())))
        self.class_names = list(class_names) if class_names else [str(i) for i in range(n_out or 0)]
        params = self.policy.params(self.specs)
        now = self.clock()
        self._started = now
        self._health = {s.name: SensorHealth(s, params[s.name], now, self.policy.admit_first_frame) for s in self.specs}
        self._plans: dict[tuple[str, ...], Plan | None] = {}
        if len(self.names) <= 12:  # every live set's plan now, so that a swap only looks one up
            for live in all_subsets(self.names):
                self._plan(live)
        self._lock = threading.Lock()  # sensors' state, counters, event log
        self._infer_lock = threading.Lock()  # one inference at a time (TensorRT engines share memory)
        self._events: deque[Event] = deque(maxlen=self.policy.event_log_size)
        self._listeners: list[Callable[[Event], None]] = []
        self._unknown_rejected = 0
        self._inferences: Counter[str] = Counter()
        self._statuses: Counter[Status] = Counter()
        self._swaps = 0
        self._engine: str | None = None  # the engine of the last inference (None: NO_SENSORS, or none yet)
        self._change_t: float | None = None  # clock time of the last health change of the live set
        self._change_wall: float | None = None  # perf_counter of the same
        self._closed = False

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls, path: str | Path, policy: Policy | None = None, clock: Clock | None = None, **engine_kwargs: Any
    ) -> "Runtime":
        """Verify the bundle at ``path``, load and warm every engine in it, and return a runtime
        over them. ``engine_kwargs`` go to each engine (ONNX Runtime: ``threads``, ``providers``,
        ``optimized_cache``; torch: ``device``, ``cuda_graph``)."""
        from edgefuse.bundle import load_bundle
        from edgefuse.manifest import engine_accuracy

        bundle = load_bundle(path)
        accuracy = {k: engine_accuracy(v) for k, v in bundle.subsets.items()}
        exclusive = bundle.manifest.get("backend") == "trt"
        if bundle.kind == "split":
            encoders, head = bundle.load_split_engines(warmup=True, **engine_kwargs)
            parts: dict[str, Any] = {"encoders": encoders, "head": head}
            owned = [*encoders.values(), head]
        else:  # the manifest allows no other kind
            parts = {"engines": bundle.load_engines(warmup=True, **engine_kwargs)}
            owned = list(parts["engines"].values())
        try:
            return cls(
                bundle.specs,
                accuracy=accuracy,
                class_names=bundle.class_names,
                policy=policy,
                clock=clock,
                source=str(bundle.root),
                exclusive_engines=exclusive,
                **parts,
            )
        except BaseException:
            for e in owned:
                e.close()
            raise

    # ---- input --------------------------------------------------------------------------
    def push(self, name: str, frame: Any, t: float | None = None) -> bool:
        """Offer one frame of sensor ``name`` captured at ``t`` (the runtime clock's seconds;
        default: now). Returns whether it was accepted; a rejected frame is counted and logged
        with its reason and never reaches an engine. Safe from any thread."""
        h = self._health.get(name)
        if h is None:
            with self._lock:
                self._unknown_rejected += 1
                self._event(
                    Event(
                        self.clock(),
                        "reject",
                        str(name),
                        None,
                        None,
                        UNKNOWN_SENSOR,
                        {"detail": f"unknown sensor {name!r}; expected one of {self.names}"},
                    )
                )
            return False
        frame, reason, detail = check_content(h.spec, frame, h.p.check_range, h.dtype)
        with self._lock:
            now = self.clock()
            if t is None:
                t = now
            self._apply(name, h.refresh(now))
            if reason is None:
                reason, detail = h.check_time(frame, t, now)
            if reason is not None:
                self._event(Event(now, "reject", name, None, None, reason, {"detail": detail}))
                self._apply(name, h.fault(now, reason, detail))
                return False
            self._apply(name, h.accept(frame, t))
        if self.split:
            self._encode(name, h, t)
        return True

    def fault(self, name: str, reason: str, detail: str = "", t: float | None = None) -> None:
        """Report a frame of sensor ``name`` that never became an array (a message that did not decode, a
        driver error): it is counted as rejected with ``reason`` and the sensor leaves LIVE, as for an
        invalid frame. ``t``: when (default: now). Safe from any thread."""
        h = self._health.get(name)
        if h is None:
            raise EdgefuseError(f"unknown sensor {name!r}; expected one of {self.names}")
        with self._lock:
            now = self.clock()
            self._apply(name, h.refresh(now))
            self._event(Event(now if t is None else t, "reject", name, None, None, reason, {"detail": detail}))
            self._apply(name, h.fault(now if t is None else t, reason, detail))

    def _encode(self, name: str, h: SensorHealth, t: float) -> None:
        """Split bundles: the sensor's encoder on its newest frame, here on the pushing thread, and the
        embedding cached with the frame's timestamp (one encoder run at a time per sensor)."""
        with self._encoder_locks[name]:
            with self._lock:
                if h.last_t != t:  # a newer frame of this sensor came in meanwhile: its own push encodes it
                    return
                slot = h.take()  # kept from being overwritten while the encoder reads it
            try:
                if self._exclusive is not None:
                    with self._exclusive:
                        out = self._runner[f"encoder_{name}"]({name: slot})
                else:
                    out = self._runner[f"encoder_{name}"]({name: slot})
            finally:
                with self._lock:
                    h.release()
            emb = _logits(out)[0]
            with self._lock:
                if self._embedding_t[name] is None or t > self._embedding_t[name]:
                    np.copyto(self._embeddings[name], emb)
                    self._embedding_t[name] = t

    # ---- inference ----------------------------------------------------------------------
    def infer(self) -> Result:
        """Run the engine of the live sensors on their latest frames, or answer NO_SENSORS."""
        start = time.perf_counter()
        with self._infer_lock:
            if self._closed:
                raise RuntimeError("the runtime is closed")
            with self._lock:
                now = self.clock()
                for name, h in self._health.items():
                    self._apply(name, h.refresh(now))
                live = tuple(n for n in self.names if self._health[n].state is LIVE)
                if self.split:  # the live sensors whose embedding is within their timeout
                    emb_t = self._embedding_t
                    use = tuple(
                        n for n in live if emb_t[n] is not None and now - emb_t[n] <= self._health[n].p.timeout_s
                    )
                    plan = self._plans[use] if use in self._plans else self._plan(use)
                else:
                    plan = self._plans[live] if live in self._plans else self._plan(live)
                if plan is not None:
                    ages = {}
                    if self.split:
                        # the live rows, the others zeroed, in one pass; the mask swapped in, not copied
                        np.multiply(self._embedding_rows, plan.rows, out=self._head_feeds["embeddings"][0])
                        self._head_feeds["present"] = plan.present
                        for n in plan.members:
                            ages[n] = now - emb_t[n]  # type: ignore[operator]
                    else:
                        for _, _, feeds in plan.steps:
                            for m in feeds:
                                feeds[m] = self._health[m].take()
                        for m in plan.members:
                            ages[m] = now - self._health[m].last_t  # type: ignore[operator]
                change_t, change_wall = self._change_t, self._change_wall
            name = plan.name if plan is not None else None
            swapped = bool(self._statuses) and name != self._engine  # not on the first inference
            if plan is None:
                reason = (
                    "no sensor is live" if not live else f"no engine of the bundle serves the live sensors {list(live)}"
                )
                result = Result(Status.NO_SENSORS, now, live, None, None, None, None, {}, 0.0, 0.0, None, reason)
                engine_s = 0.0
            else:
                e0 = time.perf_counter()
                if plan.combiner is None:
                    key, _, feeds = plan.steps[0]
                    if self._exclusive is not None:
                        with self._exclusive:
                            out = self._runner[key](feeds)
                    else:
                        out = self._runner[key](feeds)
                    engine_s = time.perf_counter() - e0
                    logits = _logits(out)[0]
                else:
                    outs = [_logits(self._runner[k](f)) for k, _, f in plan.steps]
                    engine_s = time.perf_counter() - e0
                    logits = np.log(np.maximum(combine(np.stack(outs), plan.combiner, plan.weights)[0], 1e-30))
                # argmax through Python floats: right after an engine run numpy's ufuncs start cold (several
                # microseconds each on the demo bundle), and a class count is small
                values = logits.tolist()
                k = values.index(max(values))
                acc, min_acc = plan.accuracy, self.policy.min_accuracy
                status, reason = Status.OK, ""
                if min_acc is not None and (acc is None or acc < min_acc):
                    status = Status.DEGRADED
                    reason = (
                        f"engine {name}'s manifest accuracy {acc:.3f} is below the policy's {min_acc:.3f}"
                        if acc is not None
                        else f"engine {name} has no manifest accuracy to hold to the policy's {min_acc:.3f}"
                    )
                cname = self.class_names[k] if k < len(self.class_names) else str(k)
                result = Result(status, now, live, name, k, cname, logits, ages, engine_s * 1e3, 0.0, acc, reason)
            with self._lock:
                if plan is not None and not self.split:
                    for m in plan.members:
                        self._health[m].release()
                self._inferences[name or "(none)"] += 1
                self._statuses[result.status] += 1
                if swapped:
                    self._swaps += 1
                    data = {
                        "select_ms": (e0 - start) * 1e3 if plan is not None else 0.0,
                        "first_latency_ms": engine_s * 1e3,
                        "since_change_ms": None if change_t is None else (now - change_t) * 1e3,
                        "since_change_wall_ms": None
                        if change_wall is None
                        else (time.perf_counter() - change_wall) * 1e3,
                    }
                    self._event(
                        Event(
                            now,
                            "swap",
                            None,
                            self._engine or "(none)",
                            name or "(none)",
                            f"live sensors {list(live) or '(none)'}",
                            data,
                        )
                    )
                self._engine = name
            result.overhead_ms = (time.perf_counter() - start - engine_s) * 1e3
            return result

    def step(self, frames: Mapping[str, Any], t: float | None = None) -> Result:
        """Push every frame of ``frames`` (sensor name -> frame) captured at ``t``, then infer."""
        for name, frame in frames.items():
            self.push(name, frame, t)
        return self.infer()

    # ---- observability --------------------------------------------------------------------
    def events(self, kind: str | None = None) -> list[Event]:
        """The event log, oldest first (only events of ``kind`` when given)."""
        with self._lock:
            return [e for e in self._events if kind is None or e.kind == kind]

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        """Call ``fn(event)`` for every event as it happens (with the runtime's lock held: keep it short,
        and call nothing of the runtime's from it). The event log keeps only the latest events; a
        listener sees them all."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        with self._lock:
            self._listeners.remove(fn)

    def counters(self) -> dict[str, Any]:
        """Frames accepted and rejected (per sensor and reason), inferences per engine, results per status, swaps."""
        with self._lock:
            return self._counters()

    def _counters(self) -> dict[str, Any]:
        rejected: Counter[str] = Counter()
        for h in self._health.values():
            rejected.update(h.rejected)
        if self._unknown_rejected:
            rejected[UNKNOWN_SENSOR] += self._unknown_rejected
        return {
            "accepted": {n: h.accepted for n, h in self._health.items()},
            "rejected": {n: dict(h.rejected) for n, h in self._health.items()},
            "rejected_by_reason": dict(rejected),
            "rejected_unknown_sensor": self._unknown_rejected,
            "inferences": dict(self._inferences),
            "results": {k.value: v for k, v in self._statuses.items()},
            "swaps": self._swaps,
        }

    def state(self, name: str) -> str:
        """The health state of sensor ``name`` as of its last update (``infer``/``status`` apply timeouts)."""
        return self._health[name].state.value

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: each sensor's health, the live set, the last engine, counters."""
        with self._lock:
            now = self.clock()
            for name, h in self._health.items():
                self._apply(name, h.refresh(now))
            return {
                "t": now,
                "uptime_s": now - self._started,
                "source": self.source,
                "live": [n for n in self.names if self._health[n].state is LIVE],
                "engine": self._engine,
                "engines": sorted(self.engines),
                "sensors": {n: h.status(now) for n, h in self._health.items()},
                "policy": self.policy.to_dict(),
                "counters": self._counters(),
            }

    # ---- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every engine; later calls to infer raise."""
        with self._infer_lock:
            if self._closed:
                return
            self._closed = True
            for e in self.engines.values():
                e.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Runtime sensors={self.names} engines={len(self.engines)} source={self.source!r}>"

    # ---- internals (called with self._lock held) ---------------------------------------------
    def _plan(self, live: tuple[str, ...]) -> Plan | None:
        if not self.split:  # each plan's feeds are refilled with the sensors' latest frame slots before a run
            buffers = {n: h.slots[0] for n, h in self._health.items()}
            plan = make_plan(live, self.engines, self.accuracy, self.policy, buffers)
        elif not live:
            plan = None
        else:  # the head serves every subset: the mask changes, the engine does not
            key = SUBSET_SEP.join(live)
            on = np.array([n in live for n in self.names])
            steps = (("head", self.head, self._head_feeds),)
            plan = Plan(
                f"head[{key}]",
                live,
                steps,
                None,
                None,
                self.accuracy.get(key),
                True,
                on[None],
                on[:, None].astype(np.float32),
            )
        self._plans[live] = plan
        return plan

    def _apply(self, sensor: str, transitions: Iterable[Transition]) -> None:
        for old, new, reason, at in transitions:
            self._event(Event(at, "state", sensor, old.value, new.value, reason))
            if (old is LIVE) != (new is LIVE):
                self._change_t, self._change_wall = at, time.perf_counter()

    def _event(self, e: Event) -> None:
        self._events.append(e)
        for fn in self._listeners:
            fn(e)
        if e.kind == "state":
            log.log(
                logging.WARNING if e.old == "LIVE" else logging.INFO,
                "t=%.3f %s: %s -> %s (%s)",
                e.t,
                e.sensor,
                e.old,
                e.new,
                e.reason,
            )
        elif e.kind == "swap":
            log.info("t=%.3f swap %s -> %s (%s)", e.t, e.old, e.new, e.reason)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("t=%.3f %s: frame rejected, %s (%s)", e.t, e.sensor, e.reason, e.data.get("detail", ""))


def _logits(out: Mapping[str, np.ndarray]) -> np.ndarray:
    return out["logits"] if "logits" in out else next(iter(out.values()))


def _num_classes(engine: Any) -> int | None:
    outs = getattr(engine, "outputs", None)
    if outs:
        shape = outs[0].shape
        return int(shape[-1]) if shape and shape[-1] > 0 else None
    return None


def _check_engine_inputs(key: str, engine: Any, members: tuple[str, ...], specs: Mapping[str, ModalitySpec]) -> None:
    got = [t.name for t in engine.inputs]
    if sorted(got) != sorted(members):
        raise EdgefuseError(f"engine {key!r}: expected inputs {list(members)}, got {got}")
    for t in engine.inputs:
        s = specs[t.name]
        if tuple(t.shape[1:]) != s.shape or str(t.dtype) != s.dtype:
            raise EdgefuseError(
                f"engine {key!r}: input {t.name!r} expected [-1, {', '.join(map(str, s.shape))}] {s.dtype}, "
                f"got {list(t.shape)} {t.dtype}"
            )
