"""The runtime's policy: per-sensor health parameters, the fallback when no engine fits the live set, DEGRADED.

A policy is built in Python or read from a TOML table (``Policy.from_dict`` / ``Policy.from_toml``):

.. code-block:: toml

    fallback = "late"          # "best" (default) or "late"
    combiner = "poe"           # late fusion: mean | weighted | poe | max | vote
    min_accuracy = 0.80        # flag results whose engine's manifest accuracy is lower as DEGRADED
    recover_frames = 5         # sensor parameters here apply to every sensor ...
    [sensors.camera]           # ... and these to one sensor only
    timeout_s = 0.1
    frozen_s = 1.0
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgefuse.errors import EdgefuseError
from edgefuse.runtime.health import SensorParams
from edgefuse.specs import ModalitySpec

FALLBACKS = ("best", "late")
COMBINERS = ("mean", "weighted", "poe", "max", "vote")


class PolicyError(EdgefuseError):
    """A policy (or a scenario) names something that does not exist or a value out of range."""


@dataclass(frozen=True)
class SensorPolicy:
    """Health parameters of one sensor (``None``: the default).

    Attributes:
        timeout_s: a sensor with no valid frame for this long leaves LIVE, and no frame older
            than this ever reaches an engine (default: 2 periods of its spec's ``rate_hz``).
        drop_after_s: a STALE sensor becomes DROPPED after this long (default 1 s).
        recover_frames: consecutive valid frames needed to readmit a sensor (default 5) ...
        recover_s: ... spanning at least this long (default 0.25 s).
        frozen_s: bit-identical frames for longer than this are rejected as frozen (default
            0.5 s; ``math.inf`` disables the check).
        future_tolerance_s: how far a frame's timestamp may lie ahead of the runtime's clock
            (default 5 ms).
        check_range: reject frames outside the spec's ``value_range`` (default true).
    """

    timeout_s: float | None = None
    drop_after_s: float | None = None
    recover_frames: int | None = None
    recover_s: float | None = None
    frozen_s: float | None = None
    future_tolerance_s: float | None = None
    check_range: bool | None = None

    def merged(self, over: "SensorPolicy") -> "SensorPolicy":
        """This policy with every field that ``over`` sets replaced."""
        return replace(
            self, **{f.name: getattr(over, f.name) for f in fields(over) if getattr(over, f.name) is not None}
        )

    def resolve(self, spec: ModalitySpec) -> SensorParams:
        timeout = self.timeout_s if self.timeout_s is not None else 2.0 * spec.period_s
        frozen = 0.5 if self.frozen_s is None else self.frozen_s
        return SensorParams(
            timeout_s=float(timeout),
            drop_after_s=float(1.0 if self.drop_after_s is None else self.drop_after_s),
            recover_frames=int(5 if self.recover_frames is None else self.recover_frames),
            recover_s=float(0.25 if self.recover_s is None else self.recover_s),
            frozen_s=None if math.isinf(frozen) else float(frozen),
            future_tolerance_s=float(0.005 if self.future_tolerance_s is None else self.future_tolerance_s),
            check_range=True if self.check_range is None else bool(self.check_range),
        )

    def check(self, where: str) -> None:
        for name in ("timeout_s", "drop_after_s", "frozen_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise PolicyError(f"{where}: {name} must be a positive number of seconds, got {v!r}")
        for name in ("recover_s", "future_tolerance_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
                raise PolicyError(f"{where}: {name} must be a number of seconds >= 0, got {v!r}")
        if self.recover_frames is not None and not (isinstance(self.recover_frames, int) and self.recover_frames >= 1):
            raise PolicyError(f"{where}: recover_frames must be an integer >= 1, got {self.recover_frames!r}")
        if self.check_range is not None and not isinstance(self.check_range, bool):
            raise PolicyError(f"{where}: check_range must be true or false, got {self.check_range!r}")


_SENSOR_FIELDS = tuple(f.name for f in fields(SensorPolicy))


@dataclass(frozen=True)
class Policy:
    """How the runtime judges sensors and picks engines.

    Attributes:
        default: health parameters of every sensor.
        sensors: per-sensor overrides of ``default``, by modality name.
        fallback: when the bundle has no engine for the exact live set: ``"best"`` runs the
            engine of a live subset with the best manifest accuracy; ``"late"`` combines the
            live sensors' single-sensor engines with ``combiner``.
        combiner: late fusion's combiner: mean | weighted | poe (product of experts) | max | vote.
        weights: the ``weighted`` combiner's weight per sensor (default: each single-sensor
            engine's manifest accuracy).
        min_accuracy: a result whose engine's manifest accuracy is below this is DEGRADED
            (late fusion has no manifest accuracy: with ``min_accuracy`` set it is DEGRADED).
        admit_first_frame: a sensor that was never LIVE is admitted on its first valid frame;
            hysteresis applies from its first loss on.
        event_log_size: events kept (the oldest are discarded first).
    """

    default: SensorPolicy = field(default_factory=SensorPolicy)
    sensors: Mapping[str, SensorPolicy] = field(default_factory=dict)
    fallback: str = "best"
    combiner: str = "mean"
    weights: Mapping[str, float] | None = None
    min_accuracy: float | None = None
    admit_first_frame: bool = True
    event_log_size: int = 10_000

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise PolicyError(f"policy: fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if self.combiner not in COMBINERS:
            raise PolicyError(f"policy: combiner must be one of {COMBINERS}, got {self.combiner!r}")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise PolicyError(f"policy: min_accuracy must be in [0, 1], got {self.min_accuracy!r}")
        if self.weights is not None and any(
            not (isinstance(w, (int, float)) and w >= 0) for w in self.weights.values()
        ):
            raise PolicyError(f"policy: weights must be numbers >= 0, got {dict(self.weights)}")
        if not (isinstance(self.event_log_size, int) and self.event_log_size >= 1):
            raise PolicyError(f"policy: event_log_size must be an integer >= 1, got {self.event_log_size!r}")
        self.default.check("policy")
        for name, sp in self.sensors.items():
            sp.check(f"policy.sensors.{name}")

    def params(self, specs: Sequence[ModalitySpec]) -> dict[str, SensorParams]:
        """Each sensor's resolved parameters. Raises PolicyError for a policy naming an unknown sensor."""
        names = [s.name for s in specs]
        for group, keys in (("sensors", self.sensors), ("weights", self.weights or {})):
            unknown = sorted(set(keys) - set(names))
            if unknown:
                raise PolicyError(f"policy.{group} names unknown sensor {unknown}; the bundle's sensors are {names}")
        return {s.name: self.default.merged(self.sensors.get(s.name, SensorPolicy())).resolve(s) for s in specs}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Policy":
        """A policy from a parsed TOML/JSON table (see the module docstring)."""
        top = {"fallback", "combiner", "weights", "min_accuracy", "admit_first_frame", "event_log_size", "sensors"}
        unknown = sorted(set(doc) - top - set(_SENSOR_FIELDS))
        if unknown:
            raise PolicyError(f"policy: unknown keys {unknown}; expected some of {sorted(top | set(_SENSOR_FIELDS))}")
        sensors = doc.get("sensors", {})
        if not isinstance(sensors, Mapping):
            raise PolicyError(
                f"policy.sensors must be a table of sensor name -> parameters, got {type(sensors).__name__}"
            )
        per = {}
        for name, table in sensors.items():
            if not isinstance(table, Mapping):
                raise PolicyError(f"policy.sensors.{name} must be a table of parameters, got {table!r}")
            bad = sorted(set(table) - set(_SENSOR_FIELDS))
            if bad:
                raise PolicyError(f"policy.sensors.{name}: unknown keys {bad}; expected some of {list(_SENSOR_FIELDS)}")
            per[name] = SensorPolicy(**table)
        kwargs = {k: doc[k] for k in top - {"sensors"} if k in doc}
        return cls(default=SensorPolicy(**{k: doc[k] for k in _SENSOR_FIELDS if k in doc}), sensors=per, **kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Policy":
        """A policy from a TOML file: its top level, or its ``[policy]`` table when it has one."""
        doc = read_toml(path)
        return cls.from_dict(doc.get("policy", doc))

    def to_dict(self) -> dict[str, Any]:
        def sp(p: SensorPolicy) -> dict[str, Any]:
            return {k: getattr(p, k) for k in _SENSOR_FIELDS if getattr(p, k) is not None}

        return {
            **sp(self.default),
            "fallback": self.fallback,
            "combiner": self.combiner,
            "weights": dict(self.weights) if self.weights is not None else None,
            "min_accuracy": self.min_accuracy,
            "admit_first_frame": self.admit_first_frame,
            "event_log_size": self.event_log_size,
            "sensors": {k: sp(v) for k, v in self.sensors.items()},
        }


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib`` on Python 3.11+, ``tomli`` on 3.10); errors name the file."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 (JetPack 6)
        try:
            import tomli as tomllib
        except ImportError as e:
            raise PolicyError("reading TOML on Python 3.10 needs tomli: pip install tomli") from e
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"expected a TOML file, got {str(path)!r} (missing)")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not valid TOML ({e})") from e
