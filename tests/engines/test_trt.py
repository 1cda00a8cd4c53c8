"""The TensorRT path with the fake ``tensorrt`` and ``cuda.bindings.runtime`` of ``tests/fakes`` (no machine
here runs TensorRT): portable bundles (ONNX graphs, no plans) built on this CPU host, ``edgefuse compile``
writing plans keyed by GPU and TensorRT version, the runtime picking them, and one test per bug the
engine-lifetime review found. The fakes run each plan's graph with ONNX Runtime on host memory and enforce
what a GPU would: freed memory is poisoned, a graph replayed after its context's shapes changed or
captured without a plain enqueue after a shape change raises, two contexts on one scratch block at once
are counted, and a global-mode capture breaks other threads' CUDA calls."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgefuse.bundle import load_bundle
from edgefuse.manifest import BundleError
from tests.conftest import shared

FAKES = Path(__file__).resolve().parents[1] / "fakes"


def _purge() -> None:
    for name in list(sys.modules):
        if name == "tensorrt" or name == "cuda" or name.startswith(("cuda.", "tensorrt.")):
            del sys.modules[name]


@pytest.fixture
def fake_trt(monkeypatch):
    """``(tensorrt, cuda runtime)`` fakes importable for the test; a fresh fake GPU (Orin, sm 8.7)."""
    _purge()
    monkeypatch.syspath_prepend(str(FAKES))
    import tensorrt
    from cuda.bindings import runtime

    runtime.STATE.reset()
    tensorrt.BUILT.clear()
    yield tensorrt, runtime
    _purge()


@pytest.fixture(scope="session")
def trt_bundle(tiny_checkpoint, tmp_path_factory):
    """A TensorRT INT8 bundle built on this CPU-only host (no tensorrt installed): ONNX graphs, no plans."""
    with shared(tmp_path_factory, "trt-bundle") as path:
        if not (path / "manifest.json").is_file():
            _trt(  # every sensor, and each one missing: what the runtime swaps between
                tiny_checkpoint,
                path,
                precision="int8",
                calib_size=64,
                max_drop=100.0,
                trt_max_batch=8,
                subsets=[("camera", "lidar", "radar"), ("lidar", "radar"), ("camera", "radar"), ("camera", "lidar")],
            )
    return path


@pytest.fixture
def compiled(trt_bundle, tmp_path, fake_trt):
    """A copy of the bundle, compiled for the fake Orin with the fake TensorRT 10.3.0."""
    import shutil

    from edgefuse.engines.trt.compile import compile_bundle

    root = tmp_path / "bundle"
    shutil.copytree(trt_bundle, root)
    compile_bundle(root, progress=False)
    return root


def _trt(checkpoint, out, **kw):
    """A TensorRT bundle of ``checkpoint`` built on this host (no TensorRT here)."""
    from edgefuse.build import build_bundle

    return build_bundle(checkpoint, out, backend="trt", progress=False, **kw)


def _feeds(bundle, subset, batch, seed=0):
    rng = np.random.default_rng(seed)
    specs = {s.name: s for s in bundle.specs}
    return {
        m: rng.normal(size=(batch, *specs[m].shape)).astype(np.float32) for m in bundle.subsets[subset]["modalities"]
    }


def _ort(bundle, subset, feeds):
    from edgefuse.engines.ort import OrtEngine

    return OrtEngine(bundle.root / bundle.subsets[subset]["engine"]).run(feeds)["logits"]


# --- portable bundles, compile, pick ------------------------------------------------------------------


def test_a_tensorrt_bundle_built_on_a_cpu_host_carries_graphs_not_plans(trt_bundle):
    import importlib.util

    assert importlib.util.find_spec("tensorrt") is None  # this host has no TensorRT
    bundle = load_bundle(trt_bundle)  # validates: schema, checksums
    files = bundle.manifest["files"]
    assert not any(f.endswith(".plan") for f in files)
    for key, e in bundle.subsets.items():
        assert e["backend"] == "trt" and e["engine"].endswith(".int8.onnx") and e["engine"] in files, key
        assert e["calibration"]["trt_cache"] in files  # TensorRT 10.3 (the default target) can read it
    assert bundle.manifest["trt"]["target_version"] == "10.3.0" and bundle.manifest["trt"]["max_batch"] == 8


def test_no_calibration_cache_for_tensorrt_11(tiny_checkpoint, tmp_path):
    """TensorRT 11 removed implicit INT8 and its calibrator: nothing of it would read a cache."""
    b = _trt(
        tiny_checkpoint,
        tmp_path / "b",
        precision="int8",
        calib_size=32,
        max_drop=100.0,
        subsets=[("lidar",)],
        trt_version="11.1.0",
    )
    assert "trt_cache" not in b.subsets["lidar"]["calibration"]
    assert not any(f.endswith(".trtcache") for f in b.manifest["files"])


def test_compile_writes_plans_keyed_by_gpu_and_version_and_the_runtime_picks_them(compiled, fake_trt):
    from edgefuse.engines.trt.compile import PLANS_JSON, compiled_targets
    from edgefuse.runtime import Runtime

    trt, rt = fake_trt
    assert compiled_targets(compiled) == ["sm87-orin-nvgpu-trt10.3.0"]
    doc = json.loads((compiled / "plans" / "sm87-orin-nvgpu-trt10.3.0" / PLANS_JSON).read_text())
    assert doc["gpu"] == {"name": "Orin (nvgpu)", "compute_capability": "8.7"} and doc["tensorrt"] == "10.3.0"
    assert len(doc["plans"]) == 4 and all(b["tf32"] and b["hardware_compatible"] == 0 for b in trt.BUILT)
    assert (compiled / "plans" / "sm87-orin-nvgpu-trt10.3.0.timing-cache").read_bytes() == b"fake-timing-cache:4"
    bundle = load_bundle(compiled)  # the plans beside it leave the bundle valid
    # the same TensorRT on a different GPU: the plans do not fit, and the error says what to do
    rt.STATE.reset(name=b"NVIDIA H100", major=9, minor=0)
    with pytest.raises(BundleError, match=r"no TensorRT plans for this device \(NVIDIA H100.*edgefuse compile"):
        bundle.load_engines()
    rt.STATE.reset()
    runtime = Runtime.from_bundle(compiled)
    try:
        feeds = _feeds(bundle, "camera+lidar+radar", 1, seed=3)
        got = runtime.engines["camera+lidar+radar"].run(feeds)["logits"]
        np.testing.assert_allclose(got, _ort(bundle, "camera+lidar+radar", feeds), atol=1e-5)
    finally:
        runtime.close()


def test_plans_of_another_tensorrt_or_a_changed_graph_are_refused(compiled, fake_trt, monkeypatch):
    trt, _ = fake_trt
    monkeypatch.setattr(trt, "__version__", "10.7.0")
    with pytest.raises(
        BundleError, match=r"TensorRT 10\.7\.0\); it has sm87-orin-nvgpu-trt10\.3\.0\. Run `edgefuse compile"
    ):
        load_bundle(compiled).load_engines()
    monkeypatch.setattr(trt, "__version__", "10.3.0")
    plans = compiled / "plans" / "sm87-orin-nvgpu-trt10.3.0"
    doc = json.loads((plans / "plans.json").read_text())
    doc["plans"]["engines/lidar+radar.int8.onnx"]["onnx_sha256"] = "0" * 64
    (plans / "plans.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="compiled from another graph"):
        load_bundle(compiled).load_engine("lidar+radar")


def test_compile_options_reach_the_builder(trt_bundle, tmp_path, fake_trt):
    import shutil

    from edgefuse.cli import main

    trt, rt = fake_trt
    root = tmp_path / "b"
    shutil.copytree(trt_bundle, root)
    assert main(["compile", str(root), "--no-tf32", "--hardware-compatible", "--max-batch", "4"]) == 0
    assert trt.BUILT and all(not b["tf32"] and b["hardware_compatible"] == 1 for b in trt.BUILT)
    camera_max = [b["profile"]["camera"][2][0] for b in trt.BUILT if "camera" in b["profile"]]
    assert camera_max == [4, 4, 4]  # the three plans that take the camera, profiled up to --max-batch
    # hardware-compatible plans serve another Ampere-or-newer GPU with the same TensorRT
    rt.STATE.reset(name=b"NVIDIA H100", major=9, minor=0)
    engine = load_bundle(root).load_engine("lidar+radar")
    assert engine.run(_feeds(load_bundle(root), "lidar+radar", 2))["logits"].shape[0] == 2
    engine.close()


def test_compile_refuses_a_non_tensorrt_bundle(tiny_checkpoint, tmp_path, fake_trt):
    from edgefuse.build import build_bundle
    from edgefuse.engines.trt.compile import compile_bundle

    b = build_bundle(
        tiny_checkpoint, tmp_path / "o", backend="ort", precision="fp32", subsets=[("radar",)], progress=False
    )
    with pytest.raises(BundleError, match=r"backend 'ort'; only TensorRT bundles are compiled"):
        compile_bundle(b.root, progress=False)


def test_tensorrt_fp16_bundles_gate_the_fp16_graph(tiny_checkpoint, tmp_path):
    from edgefuse.gate import AccuracyGateError

    b = _trt(
        tiny_checkpoint,
        tmp_path / "b",
        precision="fp16",
        subsets=[("radar",), ("camera", "radar")],
    )
    for key, e in b.subsets.items():
        acc = e["accuracy"]
        assert {"fp32", "fp16", "agreement", "drop_points"} <= set(acc) and acc["agreement"] > 0.9, key
        assert e["engine"].endswith(".fp16.onnx") and e["precision"] == "fp16"
    assert b.manifest["fp16_gate"]["rejected"] == []
    with pytest.raises(AccuracyGateError):  # a drop of more than -1 points: every subset fails
        _trt(
            tiny_checkpoint,
            tmp_path / "c",
            precision="fp16",
            subsets=[("radar",)],
            max_drop=-1.0,
        )
    assert not (tmp_path / "c").exists()
    c = _trt(
        tiny_checkpoint,
        tmp_path / "c",
        precision="fp16",
        subsets=[("radar",)],
        max_drop=-1.0,
        gate_fail="fp32",
    )
    assert c.subsets["radar"]["precision"] == "fp32" and c.subsets["radar"]["engine"].endswith(".fp32.onnx")


# --- one test per engine-lifetime bug -------------------------------------------------------------------


def test_the_shared_scratch_block_outlives_loading(compiled, fake_trt):
    """Bug: Bundle.load_engines made a SharedDeviceMemory only its kwargs held; once loading returned it was
    freed (poisoned here) while every context pointed at it. Now every engine holds the block."""
    _, rt = fake_trt
    bundle = load_bundle(compiled)
    engines = bundle.load_engines()
    gc.collect()
    assert not rt.STATE.freed or all(p not in rt.STATE.freed for p in (e._memory[0] for e in engines.values()))
    feeds = _feeds(bundle, "camera+lidar", 2)
    np.testing.assert_allclose(
        engines["camera+lidar"].run(feeds)["logits"], _ort(bundle, "camera+lidar", feeds), atol=1e-5
    )
    for e in engines.values():
        e.close()


def test_changing_batch_never_replays_a_graph_captured_under_other_shapes(compiled, fake_trt):
    """Bug: one context and one graph per batch size; switching batch re-set the shapes and replayed a graph
    captured under the old ones (the fake raises on such a replay). Now each batch has its own context."""
    bundle = load_bundle(compiled)
    engine = bundle.load_engine("camera+lidar+radar")
    try:
        for batch in (1, 4, 1, 4, 8, 1):
            for _ in range(3):  # the first run enqueues, the second captures, the third replays
                feeds = _feeds(bundle, "camera+lidar+radar", batch, seed=batch)
                np.testing.assert_allclose(
                    engine.run(feeds)["logits"], _ort(bundle, "camera+lidar+radar", feeds), atol=1e-5
                )
        assert engine.graph_failures == {}
        assert all(s.graph is not None for s in engine._slots.values())
        for slot in engine._slots.values():  # each context was shaped once and never again
            assert sum(1 for e in slot.context.log if e[0] == "shape") == len(engine.inputs)
            kinds = [e for e in slot.context.log if e[0] == "enqueue"]
            assert kinds[0] == ("enqueue", False) and ("enqueue", True) in kinds  # plain enqueue before capture
    finally:
        engine.close()


def test_a_batch_outside_the_profile_is_a_value_error_naming_the_range(compiled, fake_trt):
    """Bug: set_input_shape's result was unchecked and the batch never compared with the profile."""
    bundle = load_bundle(compiled)
    engine = bundle.load_engine("lidar+radar")
    try:
        with pytest.raises(ValueError, match=r"batch 9 is outside its optimisation profile \(1\.\.8\)"):
            engine.run(_feeds(bundle, "lidar+radar", 9))
        engine.batch_range = (1, 64)  # past the check, TensorRT itself refuses the shape: also a ValueError
        with pytest.raises(ValueError, match=r"shape \(9, .*outside the profile"):
            engine.run(_feeds(bundle, "lidar+radar", 9))
        engine.batch_range = (1, 8)
        assert engine.run(_feeds(bundle, "lidar+radar", 8))["logits"].shape[0] == 8  # the engine still works
    finally:
        engine.close()


def test_engines_sharing_a_block_never_run_at_once(compiled, fake_trt):
    """Bug: no lock on the shared block across engines run from different threads (the fake counts two
    contexts' work on one block at once). Now the block's lock serialises them."""
    _, rt = fake_trt
    bundle = load_bundle(compiled)
    engines = bundle.load_engines()
    errors = []

    def hammer(key):
        try:
            feeds = _feeds(bundle, key, 1)
            for _ in range(30):
                engines[key].run(feeds)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and rt.STATE.collisions == 0
    for e in engines.values():
        e.close()


def test_capture_is_thread_local_so_other_threads_keep_working(compiled, fake_trt):
    """Bug: torch.cuda.graph's default capture_error_mode="global" makes CUDA calls from other threads fail
    during a capture. The fake fails them likewise; captures must use the thread-local mode."""
    _, rt = fake_trt
    bundle = load_bundle(compiled)
    a, b = bundle.load_engine("camera+lidar"), bundle.load_engine("lidar+radar")  # separate blocks: may run together
    errors = []

    def run(engine, key):
        try:
            for batch in (1, 2, 3, 4, 5, 6):
                for _ in range(3):
                    engine.run(_feeds(bundle, key, batch))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(a, "camera+lidar")),
        threading.Thread(target=run, args=(b, "lidar+radar")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and a.graph_failures == {} and b.graph_failures == {}
    assert set(rt.STATE.capture_modes) == {rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal}
    a.close()
    b.close()


def test_a_closed_engine_is_detached_from_the_shared_block(compiled, fake_trt):
    """Bug: close() left the engine attached, so a later, larger engine re-pointed a closed context."""
    from edgefuse.engines.trt import SharedDeviceMemory

    bundle = load_bundle(compiled)
    shared_memory = SharedDeviceMemory()
    small = bundle.load_engine("lidar+radar", shared_memory=shared_memory)
    small.warmup()
    small.close()
    assert shared_memory.users == 0
    big = bundle.load_engine("camera+lidar+radar", shared_memory=shared_memory)  # grows the block
    big.warmup()
    with pytest.raises(Exception, match="closed"):
        small.run(_feeds(bundle, "lidar+radar", 1))
    big.close()


def test_growing_the_block_moves_running_engines_and_frees_the_old_one_after(compiled, fake_trt):
    """A larger engine attached after others have run: they move to the new block (their graphs, which
    hold the old address, dropped and re-captured) and the old block is freed (poisoned) only after."""
    _, rt = fake_trt
    from edgefuse.engines.trt import SharedDeviceMemory

    bundle = load_bundle(compiled)
    shared_memory = SharedDeviceMemory()
    small = bundle.load_engine("lidar+radar", shared_memory=shared_memory)
    feeds = _feeds(bundle, "lidar+radar", 1)
    for _ in range(3):
        small.run(feeds)
    old = small._memory[0]
    big = bundle.load_engine("camera+lidar+radar", shared_memory=shared_memory)
    assert old in rt.STATE.freed and small._memory[0] != old and shared_memory.users == 2
    for _ in range(3):  # would read poisoned memory if anything still pointed at the old block
        np.testing.assert_allclose(small.run(feeds)["logits"], _ort(bundle, "lidar+radar", feeds), atol=1e-5)
    small.close()
    big.close()


# --- the device install: tensorrt + cuda-python, no torch ---------------------------------------------------


def test_the_device_install_compiles_and_runs_without_torch(trt_bundle, tmp_path):
    """A fresh virtualenv with the device install (numpy + onnxruntime) and the fake tensorrt/cuda-python,
    no torch: `edgefuse compile` and `edgefuse run` work. Python 3.11 (no 3.10 interpreter here)."""
    import shutil

    root = tmp_path / "bundle"
    shutil.copytree(trt_bundle, root)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    repo = Path(__file__).resolve().parents[2]
    # edgefuse as a wheel installs it (no source tree), beside this environment's numpy and onnxruntime
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(repo)], check=True)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), *map(str, wheels.glob("*.whl"))], check=True)
    import numpy
    import onnxruntime

    deps = {str(Path(m.__file__).parents[1]) for m in (numpy, onnxruntime)}
    # only the device's packages: torch, onnx, tqdm and triton cannot be imported even where deps has them
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript', 'tqdm', 'triton'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (the device install has none)', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    path = ":".join([str(blocker), str(FAKES), str(target), *sorted(deps)])
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": path, "HOME": str(tmp_path)}
    out = subprocess.run(
        [str(py), "-m", "edgefuse", "compile", str(root)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "4 plans for Orin (nvgpu) (compute capability 8.7), TensorRT 10.3.0" in out.stdout
    code = (
        "import sys, numpy as np\n"
        "from edgefuse.bundle import load_bundle\n"
        "from edgefuse.runtime import Runtime\n"
        f"rt = Runtime.from_bundle({str(root)!r})\n"
        f"b = load_bundle({str(root)!r})\n"
        "x = {s.name: np.zeros(s.shape, np.float32) for s in b.specs}\n"
        "r = rt.step(x)\n"
        "print(r.status.name, r.engine, r.logits.shape)\n"
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules\n"
    )
    out = subprocess.run([str(py), "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["OK", "camera+lidar+radar"]


def _real_tensorrt_gpu() -> str:
    """Why the real TensorRT path cannot run here ('' when it can)."""
    import importlib.util

    for module, what in (("tensorrt", "the tensorrt package"), ("cuda", "cuda-python")):
        if importlib.util.find_spec(module) is None:
            return f"needs {what} and a CUDA GPU (CI has neither)"
    try:
        from edgefuse.engines.trt.cuda import Cuda

        Cuda()
    except Exception as e:  # no driver, no device
        return f"needs a CUDA GPU: {e}"
    return ""


@pytest.mark.skipif(bool(_real_tensorrt_gpu()), reason=_real_tensorrt_gpu() or "runs")
def test_real_tensorrt_compiles_a_portable_bundle_and_matches_onnxruntime(trt_bundle, tmp_path):  # pragma: no cover
    """bench/gpu_check.sh runs this wherever TensorRT is importable: the device path for real."""
    import shutil

    from edgefuse.engines.trt.compile import compile_bundle
    from edgefuse.runtime import Runtime

    root = tmp_path / "bundle"
    shutil.copytree(trt_bundle, root)
    compile_bundle(root, progress=False)
    bundle = load_bundle(root)
    runtime = Runtime.from_bundle(root)
    try:
        for key in ("camera+lidar+radar", "lidar+radar"):
            for batch in (1, 8, 1):
                feeds = _feeds(bundle, key, batch, seed=batch)
                got = runtime.engines[key].run(feeds)["logits"]
                assert (got.argmax(1) == _ort(bundle, key, feeds).argmax(1)).mean() >= 0.75, (key, batch)
    finally:
        runtime.close()
