"""A live view in Foxglove: the runtime's results, per-sensor health and events over Foxglove's WebSocket.

``edgefuse run BUNDLE ... --foxglove [PORT]`` starts a ``foxglove-sdk`` WebSocket server (port
8765 by default) and logs, on JSON channels:

* ``/edgefuse/result`` after every inference: status, class, probabilities, engine, live and used
  sensors, latency;
* ``/edgefuse/health`` after every inference: each sensor's state, its reason and the age of its
  last frame, the live set and the engine;
* ``/edgefuse/events``: every health change and swap as it happens.

Open Foxglove, connect to ``ws://localhost:8765``, and add panels on those topics (a Plot of
``/edgefuse/result.probabilities``, a State Transitions panel of ``/edgefuse/health.sensors``).
A replay in simulated time runs far faster than real time; pass ``--realtime`` to watch one.
"""

from __future__ import annotations

import time
from typing import Any

from edgefuse.errors import EdgefuseError

_OBJECT = {"type": "object"}


class FoxgloveView:
    """Logs a runtime's results, health and events to Foxglove (see the module docstring)."""

    def __init__(self, runtime: Any, port: int = 8765, host: str = "127.0.0.1", name: str = "edgefuse") -> None:
        try:
            import foxglove
        except ImportError:
            raise EdgefuseError("--foxglove needs foxglove-sdk: pip install 'edgefuse[live]'") from None
        self.runtime = runtime
        self.server = foxglove.start_server(name=name, host=host, port=port)
        self.result = foxglove.Channel("/edgefuse/result", schema=_OBJECT)
        self.health = foxglove.Channel("/edgefuse/health", schema=_OBJECT)
        self.events = foxglove.Channel("/edgefuse/events", schema=_OBJECT)
        self._origin = time.time_ns() - int(runtime.clock() * 1e9)  # runtime clock -> wall nanoseconds
        runtime.add_listener(self._on_event)

    @property
    def port(self) -> int:
        return int(self.server.port)

    def _ns(self, t: float) -> int:
        return self._origin + int(t * 1e9)

    def _on_event(self, e: Any) -> None:  # under the runtime's lock: the channel only queues the message
        if e.kind != "reject":
            self.events.log(e.to_dict(), log_time=self._ns(e.t))

    def on_result(self, r: Any) -> None:
        """Log one inference's result and the sensors' health after it."""
        ns = self._ns(r.t)
        self.result.log(r.to_dict(), log_time=ns)
        st = self.runtime.status()
        self.health.log(
            {
                "t": st["t"],
                "live": st["live"],
                "engine": st["engine"],
                "sensors": {
                    n: {"state": s["state"], "reason": s["reason"], "last_frame_age_s": s["last_frame_age_s"]}
                    for n, s in st["sensors"].items()
                },
            },
            log_time=ns,
        )

    def close(self) -> None:
        self.runtime.remove_listener(self._on_event)
        for ch in (self.result, self.health, self.events):
            ch.close()
        self.server.stop()
