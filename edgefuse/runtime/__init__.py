"""edgefuse.runtime: keeps a bundle answering while its sensors come and go (numpy and the engines' libraries only).

.. code-block:: python

    from edgefuse.runtime import Runtime

    with Runtime.from_bundle("runs/demo/bundle") as rt:
        rt.push("camera", frame, t)        # from any thread, as frames arrive
        result = rt.infer()                # the engine of the live sensors, or NO_SENSORS
        print(result.status, result.class_name, result.engine, result.ages)
"""

from edgefuse.runtime.clock import ManualClock
from edgefuse.runtime.health import REASONS, HealthState, SensorParams
from edgefuse.runtime.policy import COMBINERS, FALLBACKS, Policy, PolicyError, SensorPolicy
from edgefuse.runtime.runtime import Event, Result, Runtime, Status
from edgefuse.runtime.select import combine

__all__ = [
    "COMBINERS",
    "FALLBACKS",
    "REASONS",
    "Event",
    "HealthState",
    "ManualClock",
    "Policy",
    "PolicyError",
    "Result",
    "Runtime",
    "SensorParams",
    "SensorPolicy",
    "Status",
    "combine",
]
