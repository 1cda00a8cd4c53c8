"""Fault scenarios: the TOML format, the replay's schedule, phases and checks, `edgefuse run`."""

import json
from pathlib import Path

import pytest

from edgefuse.cli import main
from edgefuse.data.sensorscenes import specs as scenes_specs
from edgefuse.runtime import PolicyError, Runtime
from edgefuse.runtime.scenario import (
    FAULT_KINDS,
    ReplayClock,
    Scenario,
    check_timeline,
    format_timeline,
    replay,
    schedule,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml"))
SPECS = scenes_specs()


def scenario(faults, duration=20.0, **kw):
    return Scenario.from_dict({"name": "t", "duration_s": duration, "faults": faults, **kw}, SPECS)


def test_at_least_five_scenarios_ship_and_all_parse_and_cover_the_fault_kinds():
    assert len(SHIPPED) >= 5
    kinds = set()
    for f in SHIPPED:
        sc = Scenario.from_toml(f, SPECS)
        assert sc.faults and sc.description
        kinds |= {x.kind for x in sc.faults}
    # sensor off and back, flapping, NaN burst, frozen, out of range, delayed, reordered, all lost
    assert {"off", "flap", "nan", "frozen", "out_of_range", "delay", "reorder"} <= kinds
    assert any(
        set(x.sensors) == {"camera", "lidar", "radar"} and x.kind == "off"
        for f in SHIPPED
        for x in Scenario.from_toml(f, SPECS).faults
    )


@pytest.mark.parametrize(
    "fault, msg",
    [
        ({"sensor": "sonar", "kind": "off"}, r"unknown sensor \['sonar'\]; the bundle's sensors are"),
        ({"sensor": "camera", "kind": "melt"}, "kind must be one of"),
        ({"sensor": "camera", "kind": "off", "start_s": 5.0, "end_s": 5.0}, "expected 0 <= start_s < end_s"),
        ({"sensor": "camera", "kind": "off", "period_s": 1.0}, r"unknown keys \['period_s'\]"),
        ({"sensor": "camera", "sensors": ["lidar"], "kind": "off"}, "exactly one of"),
        ({"sensor": "camera", "kind": "nan", "fraction": 2.0}, "fraction must be positive and at most 1"),
    ],
)
def test_bad_faults_are_refused_with_what_was_expected(fault, msg):
    with pytest.raises(PolicyError, match=msg):
        scenario([fault])


def test_bad_scenario_keys_and_durations_are_refused(tmp_path):
    with pytest.raises(PolicyError, match=r"unknown keys \['durations'\]"):
        Scenario.from_dict({"durations": 3}, SPECS)
    with pytest.raises(PolicyError, match="duration_s must be a positive number"):
        Scenario.from_dict({"duration_s": -1}, SPECS)
    f = tmp_path / "s.toml"
    f.write_text('duration_s = 10.0\n[[faults]]\nsensor = "camera"\nkind = "of"\n')
    with pytest.raises(PolicyError, match=f"{f}: scenario: faults\\[0\\]: kind must be one of"):
        Scenario.from_toml(f, SPECS)


def _frames(sc, sensor):
    frames, infer_at, sp = schedule(sc, SPECS, 100)
    return [f for f in frames if f.sensor == sensor], infer_at, sp


def test_schedule_streams_every_sensor_at_its_rate_and_infers_once_per_sample():
    frames, infer_at, sp = _frames(scenario([]), "camera")
    assert sp == pytest.approx(0.1) and len(infer_at) == 200 and infer_at[0] == pytest.approx(0.1, abs=1e-5)
    assert len(frames) == 600 and frames[3].ts == pytest.approx(0.1) and frames[3].sample == 1
    assert len(_frames(scenario([]), "lidar")[0]) == 200 and len(_frames(scenario([]), "radar")[0]) == 400


def test_schedule_applies_off_flap_delay_reorder_and_future():
    off = [
        f.ts for f in _frames(scenario([{"sensor": "lidar", "kind": "off", "start_s": 5.0, "end_s": 10.0}]), "lidar")[0]
    ]
    assert len(off) == 150 and not any(5.0 <= t < 10.0 for t in off)
    flap = _frames(
        scenario([{"sensor": "lidar", "kind": "flap", "period_s": 1.0, "start_s": 5.0, "end_s": 7.0}]), "lidar"
    )[0]
    inside = [round(f.ts, 3) for f in flap if 5.0 <= f.ts < 7.0]
    assert inside == [5.5, 5.6, 5.7, 5.8, 5.9, 6.5, 6.6, 6.7, 6.8, 6.9]
    delay = _frames(
        scenario([{"sensor": "radar", "kind": "delay", "delay_s": 0.3, "start_s": 1.0, "end_s": 2.0}]), "radar"
    )[0]
    d = [f for f in delay if 1.0 <= f.ts < 2.0]
    assert all(f.arrival == pytest.approx(f.ts + 0.3) for f in d) and len(d) == 20
    reo = _frames(scenario([{"sensor": "lidar", "kind": "reorder", "start_s": 1.0, "end_s": 2.0}]), "lidar")[0]
    order = [round(f.ts, 2) for f in reo if 0.95 <= f.ts < 2.05]
    assert order == [1.1, 1.0, 1.3, 1.2, 1.5, 1.4, 1.7, 1.6, 1.9, 1.8, 2.0]
    fut = _frames(
        scenario([{"sensor": "camera", "kind": "future", "ahead_s": 0.5, "start_s": 1.0, "end_s": 2.0}]), "camera"
    )[0]
    assert all(f.ts == pytest.approx(f.arrival + 0.5) for f in fut if 1.0 <= f.arrival < 2.0)


@pytest.fixture(scope="module")
def tiny_bundle(bundles):
    return bundles[("ort", "fp32")]


def test_replay_reports_each_phase(tiny_bundle, small_scenes):
    sc = scenario(
        [
            {"sensor": "camera", "kind": "off", "start_s": 6.0, "end_s": 12.0},
            {"sensor": "radar", "kind": "nan", "fraction": 0.5, "start_s": 12.0, "end_s": 18.0},
            {"sensor": "lidar", "kind": "frozen", "start_s": 18.0, "end_s": 24.0},
            {"sensor": "*", "kind": "off", "start_s": 24.0, "end_s": 30.0},
        ],
        duration=30.0,
    )
    test = small_scenes["test"]
    clock = ReplayClock()
    seen = []
    with Runtime.from_bundle(tiny_bundle, clock=clock) as rt:
        tl = replay(rt, sc, test.inputs, test.labels, clock, on_phase=seen.append)
    phases = tl["phases"]
    assert [p["name"] for p in phases] == [
        "nominal",
        "camera off",
        "radar nan",
        "lidar frozen",
        "camera+lidar+radar off",
    ]
    assert seen == phases and all(p["inferences"] == 60 for p in phases)
    assert next(iter(phases[0]["live"])) == "camera+lidar+radar" and phases[0]["engines"] == {"camera+lidar+radar": 60}
    assert next(iter(phases[1]["live"])) == "lidar+radar" and [s["to"] for s in phases[1]["swaps"]] == ["lidar+radar"]
    assert phases[2]["rejected"] == {"non_finite": 120} and phases[2]["accepted"]["radar"] == 0
    # camera is back after its hysteresis (5 frames over 0.25 s), radar is out: camera+lidar
    assert next(iter(phases[2]["live"])) == "camera+lidar"
    # frozen lidar: the frame of 18.0 s and its repeats up to 0.5 s later are accepted (6 frames), the rest rejected
    assert phases[3]["rejected"]["frozen"] == 60 - 6 and phases[3]["accepted"]["lidar"] == 6
    assert phases[4]["statuses"] == {"NO_SENSORS": 60} and phases[4]["answered"] == 0 and phases[4]["accuracy"] is None
    for p in phases[:4]:
        assert p["accuracy"] is not None and p["expected_accuracy"] is not None
    assert [e["kind"] for e in tl["events"]] and all(e["kind"] in ("state", "swap") for e in tl["events"])
    text = format_timeline(tl)
    assert "camera off" in text and "lidar+radar" in text and "swaps (time" in text
    json.dumps(tl)


def test_check_timeline_flags_phases_below_the_manifest():
    phases = [
        {"name": "a", "start_s": 0, "end_s": 1, "answered": 500, "accuracy": 0.80, "expected_accuracy": 0.84},
        {"name": "b", "start_s": 1, "end_s": 2, "answered": 500, "accuracy": 0.82, "expected_accuracy": 0.84},
        {"name": "c", "start_s": 2, "end_s": 3, "answered": 3, "accuracy": 0.0, "expected_accuracy": 0.84},
        {"name": "d", "start_s": 3, "end_s": 4, "answered": 0, "accuracy": None, "expected_accuracy": None},
    ]
    (bad,) = check_timeline({"phases": phases}, 0.03)
    assert bad.startswith("phase 1 (a, 0-1 s): accuracy 0.800 is below the manifest's 0.840 minus 0.03")


def test_replay_refuses_data_that_does_not_fit_the_bundle(tiny_bundle, small_scenes):
    clock = ReplayClock()
    test = small_scenes["test"]
    with Runtime.from_bundle(tiny_bundle, clock=clock) as rt:
        with pytest.raises(ValueError, match="modality 'radar' expected samples \\[64\\] float32"):
            replay(rt, scenario([]), {**test.inputs, "radar": test.inputs["radar"][:, :10]}, test.labels, clock)
        with pytest.raises(ValueError, match="the runtime must have been built with the replay's clock"):
            replay(rt, scenario([]), test.inputs, test.labels, ReplayClock())


def test_edgefuse_run_prints_the_timeline_and_writes_json(tiny_bundle, tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(
        'name = "quick"\nduration_s = 12.0\n[[faults]]\nsensor = "lidar"\nkind = "off"\nstart_s = 4.0\nend_s = 8.0\n'
        "[policy]\nrecover_frames = 2\n"
    )
    out = tmp_path / "t.json"
    rc = main(
        ["run", str(tiny_bundle), "--scenario", str(f), "--data", "sensorscenes", "--seed", "1", "--json", str(out)]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "scenario 'quick'" in text and "lidar off" in text
    tl = json.loads(out.read_text())
    assert [p["name"] for p in tl["phases"]] == ["nominal", "lidar off", "nominal"]
    assert tl["data"] == {"source": "sensorscenes", "seed": 1, "split": "test"}
    # without --data, a bundle built from explicit data says what to pass
    assert main(["run", str(tiny_bundle), "--scenario", str(f)]) == 2
    assert "pass --data sensorscenes" in capsys.readouterr().err
    # a scenario naming a sensor the bundle lacks
    f.write_text('duration_s = 5.0\n[[faults]]\nsensor = "sonar"\nkind = "off"\n')
    assert main(["run", str(tiny_bundle), "--scenario", str(f), "--data", "sensorscenes"]) == 2
    assert "unknown sensor ['sonar']" in capsys.readouterr().err


def test_every_fault_kind_is_documented():
    doc = (ROOT / "docs" / "runtime.md").read_text()
    for kind in FAULT_KINDS:
        assert f"`{kind}`" in doc, kind
