"""Replaying the shipped fault scenarios through a bundle, with the checks every bundle kind must pass."""

from __future__ import annotations

from pathlib import Path

from edgefuse.data.sensorscenes import specs
from edgefuse.runtime import Runtime
from edgefuse.runtime.scenario import ReplayClock, Scenario, check_timeline, replay

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))


def replay_and_check(bundle: Path, data, path: Path) -> dict:
    """Replay scenario ``path`` on ``data``'s test split through ``bundle``; check every phase is within 3
    points of the manifest accuracy of the engines it used, NO_SENSORS while every sensor is off (bar the
    first inference, on a frame still within its timeout), and answered otherwise (bar the readmission
    after all sensors were lost: 0.25 s of hysteresis). Returns the timeline."""
    test_split = data["test"]
    clock = ReplayClock()
    scenario = Scenario.from_toml(path, specs())
    with Runtime.from_bundle(bundle, policy=scenario.policy, clock=clock, threads=1) as rt:
        timeline = replay(rt, scenario, test_split.inputs, test_split.labels, clock)
    assert check_timeline(timeline, max_drop=0.03) == []
    for p in timeline["phases"]:
        if "camera+lidar+radar off" in p["faults"]:
            assert p["statuses"].get("NO_SENSORS", 0) >= p["inferences"] - 1, p
        else:
            assert p["answered"] >= p["inferences"] - 3 and p["answered"] >= 1900, p
    return timeline
