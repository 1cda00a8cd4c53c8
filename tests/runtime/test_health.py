"""Sensor health on an injected clock: every invalid input rejected with its reason, timeouts, hysteresis, flapping."""

import numpy as np
import pytest

from edgefuse.runtime import ManualClock, Policy, Runtime, SensorPolicy
from tests.runtime._doubles import NAMES, SPECS, all_engines, fed_arrays, frame


def make(policy=None, **kw):
    clock = ManualClock(0.0)
    engines = all_engines(**kw)
    rt = Runtime(SPECS, engines, policy=policy, clock=clock)
    return rt, engines, clock


def push_all(rt, clock, value=0.5):
    for n in NAMES:
        assert rt.push(n, frame(n, value), clock())


# each invalid input: (sensor, what is pushed, timestamp relative to now or None, reason)
INVALID = {
    "unknown sensor": ("sonar", lambda: frame("rad"), 0.0, "unknown_sensor"),
    "not an array": ("cam", lambda: frame("cam").tolist(), 0.0, "bad_type"),
    "wrong dtype": ("cam", lambda: frame("cam").astype(np.float64), 0.0, "bad_dtype"),
    "wrong shape": ("lid", lambda: np.zeros((2, 7), np.float32), 0.0, "bad_shape"),
    "wrong rank": ("lid", lambda: np.zeros((16,), np.float32), 0.0, "bad_shape"),
    "NaN": ("rad", lambda: np.array([0, 1, np.nan, 0, 0, 0], np.float32), 0.0, "non_finite"),
    "+Inf": ("rad", lambda: np.array([0, np.inf, 0, 0, 0, 0], np.float32), 0.0, "non_finite"),
    "-Inf": (
        "cam",
        lambda: np.where(np.arange(32).reshape(2, 4, 4) == 3, -np.inf, 0.5).astype(np.float32),
        0.0,
        "non_finite",
    ),
    "above range": ("cam", lambda: frame("cam", 1.5), 0.0, "out_of_range"),
    "below range": ("lid", lambda: frame("lid", -0.1), 0.0, "out_of_range"),
    "timestamp backwards": ("lid", lambda: frame("lid", 0.7), -0.05, "time_backwards"),
    "timestamp from the future": ("lid", lambda: frame("lid", 0.7), +0.5, "time_future"),
    "timestamp NaN": ("lid", lambda: frame("lid", 0.7), float("nan"), "bad_timestamp"),
    "late on arrival": ("lid", lambda: frame("lid", 0.7), -0.25, "late"),  # at 1.3 s, stamped 1.05 s
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_every_invalid_input_is_rejected_with_its_reason_and_never_reaches_an_engine(case):
    sensor, make_frame, dt, reason = INVALID[case]
    rt, engines, clock = make()
    clock.set(1.0)
    push_all(rt, clock)
    assert rt.infer().engine == "cam+lid+rad"
    clock.advance(0.01)
    t = clock() + dt
    if reason == "time_backwards":  # a newer frame first, so that this one goes backwards
        assert rt.push(sensor, frame(sensor, 0.6), clock())
        t = clock() - 0.005
    if (
        reason == "late"
    ):  # newer than the last accepted frame but older than the timeout (so the sensor is stale by then)
        clock.set(1.3)
        for n in ("cam", "rad"):
            rt.push(n, frame(n, 0.4), clock())
        t = 1.05
    bad = make_frame()
    assert rt.push(sensor, bad, t) is False
    rejects = rt.events("reject")
    assert [e.reason for e in rejects] == [reason], rejects
    assert rejects[0].sensor == sensor and rejects[0].data["detail"]
    counters = rt.counters()
    assert counters["rejected_by_reason"] == {reason: 1}
    if sensor in NAMES:
        assert counters["rejected"][sensor] == {reason: 1}
        assert rt.state(sensor) == "DROPPED"  # an invalid frame takes its sensor out of the live set
        state = [e for e in rt.events("state") if e.sensor == sensor][-1]
        assert state.old == ("STALE" if reason == "late" else "LIVE") and state.new == "DROPPED"
        assert state.reason.startswith(reason)
    r = rt.infer()
    assert sensor not in r.live and sensor not in r.used
    if reason != "late":  # (there, the others are recovering from their own silence)
        assert r.engine == "+".join(n for n in NAMES if n != sensor)
    # the rejected frame reached no engine: no fed array equals it, and nothing non-finite or out of range was fed
    for name, arr in fed_arrays(engines):
        assert np.isfinite(arr).all()
        if isinstance(bad, np.ndarray) and bad.shape == arr.shape[1:] and bad.dtype == arr.dtype and name == sensor:
            assert not np.array_equal(arr[0], bad)


def test_frozen_frames_are_accepted_until_the_limit_then_rejected():
    rt, engines, clock = make(Policy(default=SensorPolicy(frozen_s=0.31)))
    clock.set(1.0)
    push_all(rt, clock)
    same = frame("rad", 0.25)
    for i in range(1, 20):  # rad at 50 Hz sends the same frame; others keep changing
        clock.set(1.0 + 0.02 * i)
        ok = rt.push("rad", same, clock())
        rt.push("cam", frame("cam", 0.01 * i), clock())
        rt.push("lid", frame("lid", 0.01 * i), clock())
        # the first identical frame is at 1.02; frames up to 0.31 s after it pass
        assert ok == (clock() - 1.02 <= 0.31), (i, clock())
        r = rt.infer()
        assert ("rad" in r.used) == ok
    assert rt.counters()["rejected"]["rad"]["frozen"] == 19 - 16
    assert rt.state("rad") == "DROPPED"
    # a changed frame starts its recovery
    clock.advance(0.02)
    assert rt.push("rad", frame("rad", 0.3), clock())
    assert rt.state("rad") == "RECOVERING"


def test_frozen_check_can_be_disabled():
    rt, _, clock = make(Policy(default=SensorPolicy(frozen_s=float("inf"))))
    for i in range(100):
        clock.set(0.02 * i)
        assert rt.push("rad", frame("rad", 0.25), clock())
    assert rt.state("rad") == "LIVE"


def test_timeout_makes_a_sensor_stale_and_no_result_uses_an_older_frame():
    rt, engines, clock = make()
    clock.set(1.0)
    push_all(rt, clock)
    clock.set(1.0 + 0.0399)  # rad's timeout (2 periods at 50 Hz) is 40 ms: just inside it, still live
    assert "rad" in rt.infer().used
    clock.set(1.0 + 0.0401)
    r = rt.infer()
    assert "rad" not in r.live and r.engine == "cam+lid"
    assert rt.state("rad") == "STALE"
    ev = [e for e in rt.events("state") if e.sensor == "rad"][-1]
    assert ev.old == "LIVE" and ev.new == "STALE" and ev.t == pytest.approx(1.04) and "40 ms" in ev.reason
    clock.set(1.2001)  # lid (10 Hz, 200 ms) times out too; cam (100 ms) long since
    r = rt.infer()
    assert r.status.value == "NO_SENSORS" and r.engine is None and r.class_index is None and r.probabilities is None
    assert r.reason == "no sensor is live"
    clock.set(1.0 + 0.04 + 1.0 + 0.001)  # STALE for more than drop_after_s (1 s)
    rt.infer()
    assert rt.state("rad") == "DROPPED"


def test_random_push_infer_sequences_never_use_a_frame_older_than_its_timeout():
    rng = np.random.default_rng(0)
    rt, engines, clock = make()
    timeouts = {s.name: 2.0 / s.rate_hz for s in SPECS}
    last = {}
    for step in range(3000):
        clock.advance(float(rng.exponential(0.02)))
        if rng.random() < 0.6:
            n = NAMES[rng.integers(3)]
            v = float(rng.random())
            t = clock() - float(rng.uniform(0, 0.05))
            if rt.push(n, frame(n, v), t):
                last[n] = (t, v)
        else:
            r = rt.infer()
            for n, age in r.ages.items():
                assert 0 <= age <= timeouts[n] + 1e-12, (n, age)
                t, v = last[n]
                assert age == pytest.approx(clock() - t)
            if r.answered:  # the engine was fed exactly the latest accepted frames
                feeds = engines[r.engine].feeds[-1]
                for n in r.used:
                    np.testing.assert_array_equal(feeds[n][0], frame(n, last[n][1]))
    assert rt.counters()["results"].get("OK", 0) > 100 and rt.counters()["swaps"] > 10


def test_readmission_needs_k_frames_over_t_seconds():
    steady = SensorPolicy(timeout_s=5.0)  # cam and rad stay live throughout
    rt, _, clock = make(
        Policy(default=SensorPolicy(recover_frames=4, recover_s=0.3), sensors={"cam": steady, "rad": steady})
    )
    clock.set(1.0)
    push_all(rt, clock)
    clock.set(1.5)  # lid silent past its timeout
    assert "lid" not in rt.infer().live
    # 4 frames at 10 Hz span 0.3 s: the 4th (at 2.0 + 0.3) readmits; 3 frames do not
    for i in range(4):
        clock.set(2.0 + 0.1 * i + 1e-9 * (i == 3))  # (2.0 + 0.3 - 2.0 < 0.3 in floating point)
        for n in ("cam", "rad"):
            rt.push(n, frame(n, 0.1 + 0.01 * i), clock())
        rt.push("lid", frame("lid", 0.2 + 0.01 * i), clock())
        r = rt.infer()
        assert ("lid" in r.live) == (i == 3), i
        assert rt.state("lid") == ("LIVE" if i == 3 else "RECOVERING")
    # fast frames: 4 of them in 30 ms are not enough, T is
    rt2, _, c2 = make(Policy(default=SensorPolicy(recover_frames=4, recover_s=0.3)))
    rt2.push("rad", frame("rad"), 0.0)
    c2.set(1.0)
    rt2.infer()
    for i in range(20):
        c2.set(1.0 + 0.01 * i)
        rt2.push("rad", frame("rad", 0.01 * i), c2())
        assert rt2.state("rad") == ("LIVE" if 0.01 * i >= 0.3 else "RECOVERING")
        if i > 0:  # the gap limit: rad's timeout is 40 ms, these come every 10 ms
            assert rt2.state("rad") != "STALE"


def test_an_invalid_frame_restarts_a_recovery_and_a_gap_interrupts_it():
    rt, _, clock = make(Policy(default=SensorPolicy(recover_frames=3, recover_s=0.0)))
    rt.push("lid", frame("lid"), 0.0)
    clock.set(1.0)
    rt.infer()
    assert rt.state("lid") == "STALE"
    for i, t in enumerate((1.0, 1.1)):
        clock.set(t)
        rt.push("lid", frame("lid", 0.1 * (i + 1)), t)
    assert rt.state("lid") == "RECOVERING"
    clock.set(1.15)
    assert not rt.push("lid", frame("lid", 5.0), 1.15)  # out of range
    assert rt.state("lid") == "DROPPED"
    clock.set(1.2)
    rt.push("lid", frame("lid", 0.9), 1.2)
    clock.set(1.3)
    rt.push("lid", frame("lid", 0.8), 1.3)
    assert rt.state("lid") == "RECOVERING"  # the run restarted: 2 of 3
    clock.set(1.6)  # more than lid's 200 ms timeout without a frame
    rt.infer()
    assert rt.state("lid") == "STALE"
    assert "recovery interrupted" in [e for e in rt.events("state") if e.sensor == "lid"][-1].reason


@pytest.mark.parametrize("period", [6, 20, 50, 130])
def test_hysteresis_bounds_the_swaps_of_a_flapping_sensor(period):
    """lid flaps (off for the first half of every ``period`` 10-ms steps, its 10 Hz frames sent
    while on) for 30 s while cam and rad stay healthy. A readmission needs 5 valid frames over
    0.25 s, so readmissions come at least 0.25 s apart, every swap is one admission or one loss
    of lid (at most two per admission), and a sensor that is never on for 5 frames never comes back."""
    rt, _, clock = make()
    recover_s, steps = 0.25, 3000
    for i in range(steps):
        t = i / 100
        clock.set(t)
        v = (i % 50) / 50
        rt.push("cam", frame("cam", v), t)
        rt.push("rad", frame("rad", v), t)
        if i % 10 == 0 and i % period >= period // 2:
            rt.push("lid", frame("lid", v), t)
        rt.infer()
    admitted = [e.t for e in rt.events("state") if e.sensor == "lid" and e.new == "LIVE"]
    readmitted = admitted[1:]  # the first admission is the first frame's
    swaps = rt.counters()["swaps"]
    assert all(b - a >= recover_s for a, b in zip(readmitted, readmitted[1:])), readmitted
    assert swaps <= 2 * len(admitted)
    for t0 in np.arange(0, 30, 0.05):  # at most one readmission in any window of recover_s
        assert sum(t0 <= t < t0 + recover_s for t in readmitted) <= 1
    if period in (6, 50):  # frames every 0.3 s (past the timeout), or 2 per on-window: never readmitted
        assert readmitted == [] and swaps == 2
    else:
        assert len(readmitted) >= 5


def test_admit_first_frame_false_applies_hysteresis_at_start_up():
    rt, _, clock = make(Policy(admit_first_frame=False, default=SensorPolicy(recover_frames=2, recover_s=0.0)))
    rt.push("lid", frame("lid", 0.1), 0.0)
    assert rt.state("lid") == "RECOVERING"
    clock.set(0.1)
    rt.push("lid", frame("lid", 0.2), 0.1)
    assert rt.state("lid") == "LIVE"


def test_per_sensor_policy_overrides_the_default():
    rt, _, clock = make(Policy.from_dict({"timeout_s": 0.5, "sensors": {"rad": {"timeout_s": 0.01}}}))
    push_all(rt, clock)
    clock.set(0.3)
    assert rt.infer().live == ("cam", "lid")
    st = rt.status()["sensors"]
    assert st["cam"]["params"]["timeout_s"] == 0.5 and st["rad"]["params"]["timeout_s"] == 0.01
