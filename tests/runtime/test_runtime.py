"""The runtime: engine selection (exact, best, late), results, DEGRADED / NO_SENSORS, observability, real bundles."""

import json
import logging

import numpy as np
import pytest
import torch

from edgefuse.runtime import ManualClock, Policy, PolicyError, Runtime, SensorPolicy, Status, combine
from edgefuse.runtime.select import softmax
from tests.runtime._doubles import NAMES, SPECS, RecordingEngine, all_engines, frame

SINGLES_AND_ALL = [("cam",), ("lid",), ("rad",), ("cam", "lid", "rad")]


def make(policy=None, subsets=None, accuracy=None, **kw):
    clock = ManualClock(0.0)
    engines = all_engines(subsets=subsets, **kw)
    rt = Runtime(SPECS, engines, accuracy=accuracy, class_names=["a", "b", "c"], policy=policy, clock=clock)
    return rt, engines, clock


def live(rt, clock, names, value=0.5):
    for n in names:
        assert rt.push(n, frame(n, value), clock())


def test_the_exact_live_subset_engine_answers_with_its_frames():
    rt, engines, clock = make()
    live(rt, clock, ["cam", "rad"], 0.5)
    r = rt.infer()
    assert r.status is Status.OK and r.engine == "cam+rad" and r.live == ("cam", "rad") and r.used == ("cam", "rad")
    feeds = engines["cam+rad"].feeds[-1]
    assert feeds["cam"].shape == (1, 2, 4, 4) and (feeds["cam"] == 0.5).all() and (feeds["rad"] == 0.5).all()
    # logits = mean sum * class index = 1.0 * [0, 1, 2]
    np.testing.assert_allclose(r.probabilities, softmax(np.array([0.0, 1.0, 2.0])), rtol=1e-6)
    assert r.class_index == 2 and r.class_name == "c" and r.ages == {"cam": 0.0, "rad": 0.0}
    assert r.latency_ms >= 0 and r.overhead_ms > 0
    json.dumps(r.to_dict())


def test_best_fallback_picks_the_most_accurate_engine_among_the_live_sensors():
    acc = {"cam": 0.5, "lid": 0.8, "rad": 0.6, "cam+lid+rad": 0.9}
    rt, _, clock = make(subsets=SINGLES_AND_ALL, accuracy=acc)
    live(rt, clock, ["cam", "rad"])
    r = rt.infer()
    assert r.engine == "rad" and r.live == ("cam", "rad") and r.used == ("rad",) and r.expected_accuracy == 0.6
    assert r.ages == {"rad": 0.0}  # only the frames the engine read
    live(rt, clock, ["lid"])
    assert rt.infer().engine == "cam+lid+rad"


def test_ties_in_accuracy_go_to_the_larger_subset_and_unknown_accuracy_loses():
    rt, _, clock = make(subsets=[("cam",), ("cam", "lid"), ("lid",)], accuracy={"cam": 0.7, "cam+lid": 0.7})
    live(rt, clock, NAMES)
    assert rt.infer().engine == "cam+lid"


@pytest.mark.parametrize("combiner", ["mean", "weighted", "poe", "max", "vote"])
def test_late_fallback_combines_the_single_sensor_engines(combiner):
    logits = {"cam": [2.0, 0.0, 0.0], "lid": [0.0, 1.0, 0.0], "rad": [0.0, 0.0, 3.0]}
    clock = ManualClock(0.0)
    engines = {m: RecordingEngine([m], logits=logits[m]) for m in NAMES}
    engines["cam+lid"] = RecordingEngine(["cam", "lid"])
    acc = {"cam": 0.5, "lid": 0.8, "rad": 0.6, "cam+lid": 0.85}
    quick = SensorPolicy(recover_frames=1, recover_s=0.0)  # readmit on the first frame (the exact engine below)
    rt = Runtime(
        SPECS, engines, accuracy=acc, policy=Policy(fallback="late", combiner=combiner, default=quick), clock=clock
    )
    live(rt, clock, NAMES)
    r = rt.infer()
    assert (
        r.engine == f"late:{combiner}(cam,lid,rad)" and r.used == ("cam", "lid", "rad") and r.expected_accuracy is None
    )
    stacked = np.array([logits[m] for m in NAMES])[:, None, :]
    weights = np.array([0.5, 0.8, 0.6]) if combiner == "weighted" else None  # default weights: manifest accuracies
    np.testing.assert_allclose(r.probabilities, combine(stacked, combiner, weights)[0])
    assert all(len(e.feeds) == 1 for k, e in engines.items() if k in NAMES)
    # the exact engine still wins where there is one
    clock.advance(0.5)
    live(rt, clock, ["cam", "lid"])
    assert rt.infer().engine == "cam+lid"


def test_late_fusion_weights_come_from_the_policy_when_given():
    clock = ManualClock(0.0)
    logits = {"cam": [3.0, 0.0, 0.0], "lid": [0.0, 3.0, 0.0]}
    engines = {m: RecordingEngine([m], logits=logits[m]) for m in ("cam", "lid")}
    pol = Policy(fallback="late", combiner="weighted", weights={"cam": 1.0, "lid": 3.0})
    rt = Runtime(SPECS, engines, policy=pol, clock=clock)
    live(rt, clock, ["cam", "lid"])
    assert rt.infer().class_index == 1


@pytest.mark.parametrize("combiner", ["mean", "weighted", "poe", "max", "vote"])
def test_numpy_combiners_match_the_fusion_librarys_late_fusion(combiner):
    """The runtime's numpy combiners give LateFusion's output for the heads of the present modalities."""
    from edgefuse.fusion import LateFusion
    from tests.conftest import random_batch, specs_n

    specs = specs_n(3)
    weights = [0.2, 0.5, 0.3] if combiner == "weighted" else None
    model = LateFusion(specs, 5, dim=8, combiner=combiner, weights=weights).eval()
    x = random_batch(specs, b=7, seed=3)
    for present in ([0, 1, 2], [0, 2], [1]):
        mask = torch.zeros(7, 3, dtype=torch.bool)
        mask[:, present] = True
        with torch.no_grad():
            want = model(x, present=mask).exp().numpy()
            feats = model._encode(model.encoders, x)
            heads = np.stack([model.heads[i](feats[i]).numpy() for i in present])
        w = np.array(weights)[present] if weights else None
        np.testing.assert_allclose(combine(heads, combiner, w), want, rtol=1e-5, atol=1e-6)


def test_combine_rejects_bad_input():
    with pytest.raises(ValueError, match="combiner must be one of"):
        combine(np.zeros((2, 1, 3)), "median")
    with pytest.raises(ValueError, match=r"expected logits \[N >= 1, B, C\], got shape \[2, 3\]"):
        combine(np.zeros((2, 3)), "mean")
    with pytest.raises(ValueError, match="needs one weight per engine"):
        combine(np.zeros((2, 1, 3)), "weighted", np.ones(3))


def test_no_live_sensor_gives_no_sensors_never_a_stale_answer_and_no_engine_runs():
    rt, engines, clock = make()
    r = rt.infer()
    assert r.status is Status.NO_SENSORS and not r.answered and r.reason == "no sensor is live"
    live(rt, clock, NAMES)
    assert rt.infer().answered
    clock.advance(10.0)
    runs = sum(len(e.feeds) for e in engines.values())
    r = rt.infer()
    assert r.status is Status.NO_SENSORS and r.class_index is None and r.live == ()
    assert sum(len(e.feeds) for e in engines.values()) == runs


def test_a_live_set_no_engine_serves_is_no_sensors_with_the_reason():
    rt, _, clock = make(subsets=[("cam", "lid")])
    live(rt, clock, ["rad"])
    r = rt.infer()
    assert r.status is Status.NO_SENSORS and "no engine of the bundle serves the live sensors ['rad']" in r.reason


def test_min_accuracy_flags_degraded_results():
    acc = {
        k: v
        for k, v in zip(
            ["cam", "lid", "rad", "cam+lid", "cam+rad", "lid+rad", "cam+lid+rad"], [0.4, 0.8, 0.5, 0.85, 0.6, 0.85, 0.9]
        )
    }
    rt, _, clock = make(policy=Policy(min_accuracy=0.7, sensors={"cam": SensorPolicy(timeout_s=5.0)}), accuracy=acc)
    live(rt, clock, NAMES)
    assert rt.infer().status is Status.OK
    clock.advance(0.045)  # rad (40 ms) times out
    r = rt.infer()
    assert r.engine == "cam+lid" and r.status is Status.OK
    clock.advance(0.2)  # lid (200 ms) times out too
    r = rt.infer()
    assert r.engine == "cam" and r.status is Status.DEGRADED and r.answered
    assert "0.400 is below the policy's 0.700" in r.reason
    assert rt.counters()["results"] == {"OK": 2, "DEGRADED": 1}


def test_swaps_are_logged_with_old_and_new_engine_and_timing(caplog):
    rt, _, clock = make()
    live(rt, clock, NAMES)
    rt.infer()
    clock.advance(0.01)
    with caplog.at_level(logging.INFO, logger="edgefuse.runtime"):
        assert not rt.push("rad", np.full((6,), np.nan, np.float32))
        r = rt.infer()
    assert r.engine == "cam+lid"
    (swap,) = rt.events("swap")
    assert (swap.old, swap.new) == ("cam+lid+rad", "cam+lid") and swap.t == clock()
    assert swap.data["since_change_ms"] == 0.0 and swap.data["first_latency_ms"] >= 0 and swap.data["select_ms"] >= 0
    assert rt.counters()["swaps"] == 1
    text = caplog.text
    assert "rad: LIVE -> DROPPED (non_finite" in text and "swap cam+lid+rad -> cam+lid" in text
    assert any(r.levelno == logging.WARNING for r in caplog.records)  # leaving LIVE is a warning


def test_status_is_a_json_snapshot_of_health_and_counters():
    rt, _, clock = make()
    live(rt, clock, NAMES)
    rt.infer()
    rt.push("sonar", frame("rad"))
    rt.push("cam", frame("cam", 9.0))
    clock.advance(0.05)
    st = json.loads(json.dumps(rt.status()))
    assert st["live"] == ["lid"] and st["engine"] == "cam+lid+rad"
    assert st["sensors"]["cam"]["state"] == "DROPPED" and "out_of_range" in st["sensors"]["cam"]["reason"]
    assert st["sensors"]["rad"]["state"] == "STALE" and st["sensors"]["rad"]["last_frame_age_s"] == pytest.approx(0.05)
    c = st["counters"]
    assert c["accepted"] == {"cam": 1, "lid": 1, "rad": 1}
    assert c["rejected_by_reason"] == {"out_of_range": 1, "unknown_sensor": 1}
    assert c["inferences"] == {"cam+lid+rad": 1}


def test_step_pushes_then_infers():
    rt, _, clock = make()
    r = rt.step({n: frame(n, 0.2) for n in NAMES})
    assert r.engine == "cam+lid+rad" and r.ages == {n: 0.0 for n in NAMES}


def test_frames_are_copied_on_push():
    rt, engines, clock = make()
    buf = frame("cam", 0.25)
    rt.push("cam", buf)
    buf[:] = 0.75  # the caller reuses its buffer
    rt.infer()
    assert (engines["cam"].feeds[-1]["cam"] == 0.25).all()


def test_batched_frame_of_one_is_accepted():
    rt, engines, clock = make()
    assert rt.push("rad", frame("rad", 0.3)[None])
    assert rt.infer().engine == "rad"


def test_close_closes_every_engine_and_stops_inference():
    rt, engines, _ = make()
    with rt:
        pass
    assert all(e.closed for e in engines.values())
    with pytest.raises(RuntimeError, match="closed"):
        rt.infer()


def test_event_log_is_bounded_but_listeners_see_everything():
    rt, _, clock = make(policy=Policy(event_log_size=5))
    seen = []
    rt.add_listener(seen.append)
    for i in range(20):
        rt.push("cam", frame("cam", 2.0))
    assert len(rt.events()) == 5 and len([e for e in seen if e.kind == "reject"]) == 20
    rt.remove_listener(seen.append)


def test_construction_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="at least one engine"):
        Runtime(SPECS, {})
    with pytest.raises(ValueError, match=r"engine key 'lid\+cam': expected the canonical subset name 'cam\+lid'"):
        Runtime(SPECS, {"lid+cam": RecordingEngine(["cam", "lid"])})
    with pytest.raises(ValueError, match=r"engine 'cam': expected inputs \['cam'\], got \['lid'\]"):
        Runtime(SPECS, {"cam": RecordingEngine(["lid"])})
    with pytest.raises(ValueError, match="unknown modality"):
        Runtime(SPECS, {"sonar": RecordingEngine(["cam"])})
    with pytest.raises(PolicyError, match=r"policy.sensors names unknown sensor \['sonar'\]; the bundle's sensors are"):
        Runtime(SPECS, all_engines(), policy=Policy(sensors={"sonar": SensorPolicy(timeout_s=1.0)}))


def test_policy_from_dict_and_toml(tmp_path):
    p = Policy.from_dict(
        {
            "fallback": "late",
            "combiner": "poe",
            "min_accuracy": 0.8,
            "recover_frames": 3,
            "sensors": {"cam": {"timeout_s": 0.1, "frozen_s": 1.0}},
        }
    )
    assert p.fallback == "late" and p.default.recover_frames == 3 and p.sensors["cam"].timeout_s == 0.1
    params = p.params(SPECS)
    assert params["cam"].timeout_s == 0.1 and params["cam"].recover_frames == 3 and params["lid"].timeout_s == 0.2
    assert Policy.from_dict(p.to_dict()) == p
    f = tmp_path / "p.toml"
    f.write_text('[policy]\nfallback = "late"\n[policy.sensors.lid]\nrecover_s = 0.5\n')
    assert Policy.from_toml(f).sensors["lid"].recover_s == 0.5
    for doc, msg in [
        ({"fallbak": "late"}, r"unknown keys \['fallbak'\]"),
        ({"fallback": "worst"}, "fallback must be one of"),
        ({"combiner": "median"}, "combiner must be one of"),
        ({"timeout_s": -1}, "timeout_s must be a positive number"),
        ({"recover_frames": 0}, "recover_frames must be an integer >= 1"),
        ({"min_accuracy": 1.5}, r"min_accuracy must be in \[0, 1\]"),
        ({"sensors": {"cam": {"timeout": 1}}}, r"policy.sensors.cam: unknown keys \['timeout'\]"),
    ]:
        with pytest.raises(PolicyError, match=msg):
            Policy.from_dict(doc)
    bad = tmp_path / "bad.toml"
    bad.write_text("fallback = \n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.from_toml(bad)
    with pytest.raises(PolicyError, match="expected a TOML file"):
        Policy.from_toml(tmp_path / "missing.toml")


# ---- real bundles: ONNX Runtime INT8 and FP32, torch ------------------------------------------


@pytest.mark.parametrize("kind", [("ort", "int8"), ("ort", "fp32"), ("torch", "fp32")])
def test_runtime_over_real_bundles_answers_like_the_engines_and_swaps(bundles, small_scenes, kind):
    from edgefuse.bundle import load_bundle

    clock = ManualClock(0.0)
    test = small_scenes["test"]
    with Runtime.from_bundle(bundles[kind], clock=clock, threads=1) as rt:
        assert sorted(rt.engines) == [
            "camera",
            "camera+lidar",
            "camera+lidar+radar",
            "camera+radar",
            "lidar",
            "lidar+radar",
            "radar",
        ]
        manifest = load_bundle(bundles[kind]).manifest
        assert rt.accuracy["camera+lidar+radar"] == manifest["subsets"]["camera+lidar+radar"]["accuracy"][kind[1]]
        direct = rt.engines["camera+lidar+radar"].run({k: v[:5] for k, v in test.inputs.items()})["logits"]
        for i in range(5):
            clock.advance(0.01)
            r = rt.step({k: v[i] for k, v in test.inputs.items()})
            assert r.engine == "camera+lidar+radar" and r.class_name == rt.class_names[int(direct[i].argmax())]
            np.testing.assert_allclose(r.probabilities, softmax(direct[i].astype(np.float64)), rtol=1e-5, atol=1e-7)
        clock.advance(0.01)
        rt.push("radar", test.inputs["radar"][9] * np.float32(np.nan))
        rt.push("camera", test.inputs["camera"][9])
        rt.push("lidar", test.inputs["lidar"][9])
        r = rt.infer()
        assert r.engine == "camera+lidar" and r.status is Status.OK
        want = rt.engines["camera+lidar"].run({k: test.inputs[k][9:10] for k in ("camera", "lidar")})["logits"][0]
        assert r.class_index == int(want.argmax())
        assert [(e.old, e.new) for e in rt.events("swap")] == [("camera+lidar+radar", "camera+lidar")]


def test_from_bundle_refuses_a_bad_bundle(tmp_path):
    from edgefuse.bundle import BundleError

    with pytest.raises(BundleError, match="not a bundle"):
        Runtime.from_bundle(tmp_path)


def test_four_threads_push_about_1khz_while_one_infers(bundles, small_scenes):
    """About 10 s on the real clock: 4 pusher threads (camera, lidar, radar, and one sending bad
    frames) at about 250 Hz each, one thread inferring. No deadlock, no exception, and every
    pushed frame is counted as accepted or rejected."""
    import threading
    import time

    test = small_scenes["test"]
    duration = 10.0
    stop = threading.Event()
    errors: list[BaseException] = []
    pushed = {"camera": 0, "lidar": 0, "radar": 0, "bad": 0}
    accepted = {"camera": 0, "lidar": 0, "radar": 0}
    results = []

    with Runtime.from_bundle(bundles[("ort", "int8")], threads=1) as rt:

        def pusher(name):
            try:
                i = 0
                while not stop.is_set():
                    i += 1
                    if name == "bad":
                        frame_ = np.full((64,), np.nan, np.float32) if i % 2 else test.inputs["lidar"][0]
                        rt.push("radar" if i % 2 else "sonar", frame_)
                    elif rt.push(name, test.inputs[name][i % len(test)]):
                        accepted[name] += 1
                    pushed[name] += 1
                    time.sleep(0.004)
            except BaseException as e:  # pragma: no cover - the assertion below reports it
                errors.append(e)

        def inferrer():
            try:
                while not stop.is_set():
                    results.append(rt.infer())
                    rt.status()
                    time.sleep(0.001)
            except BaseException as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=pusher, args=(n,)) for n in pushed] + [threading.Thread(target=inferrer)]
        for th in threads:
            th.start()
        time.sleep(duration)
        stop.set()
        for th in threads:
            th.join(timeout=10)
        assert not any(th.is_alive() for th in threads), "a thread is stuck: deadlock"
        assert errors == []
        c = rt.counters()
    total = sum(pushed.values())
    assert total > 0.6 * duration * 1000, total  # about 1 kHz in all
    counted = sum(c["accepted"].values()) + sum(c["rejected_by_reason"].values())
    assert counted == total, (counted, total, c)
    assert c["accepted"] == accepted
    assert c["rejected_by_reason"]["unknown_sensor"] == pushed["bad"] // 2
    assert len(results) > 500 and sum(c["inferences"].values()) == len(results)
    assert any(r.answered for r in results)
    for r in results:
        if r.answered:
            assert all(age <= 2.0 / {"camera": 30, "lidar": 10, "radar": 20}[n] for n, age in r.ages.items())


def test_a_push_during_an_inference_never_changes_the_frames_the_engine_reads():
    """Frames live in three slots per sensor: a push while an engine runs writes a free one."""
    clock = ManualClock(0.0)
    seen = []

    class PushingEngine(RecordingEngine):
        def run(self, feeds):
            before = {k: v.copy() for k, v in feeds.items()}
            for i in range(4):  # pushes arriving mid-inference, from "another thread"
                clock.advance(0.001)
                assert rt.push("cam", frame("cam", 0.1 * (i + 2)), clock())
            seen.append(all(np.array_equal(before[k], feeds[k]) for k in feeds))
            return super().run(feeds)

    rt = Runtime(SPECS, {"cam": PushingEngine(["cam"])}, clock=clock)
    rt.push("cam", frame("cam", 0.1), 0.0)
    for _ in range(5):
        rt.infer()
    assert seen == [True] * 5
    assert rt.infer().ages == {"cam": 0.0}
