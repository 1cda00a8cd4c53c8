"""Shared fixtures: small modality specs for N = 2, 3, 5 and random batches for them."""

from __future__ import annotations

import contextlib
import fcntl
import os

import torch

# Triton kernels run compiled where CUDA is and through Triton's interpreter elsewhere. The
# interpreter is chosen when a kernel is decorated, so this must precede any kernel import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# pytest-xdist workers share the cores: each takes its share of torch's CPU threads. By default
# every worker takes all of them, and on 2 cores two workers' thread pools (4 threads) ran the
# training tests 30 times slower than one process does (tests/test_train.py, -n 2: 109 s
# against 3 s).
if _workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(_workers)))
import pytest  # noqa: E402 (after TRITON_INTERPRET is set)

from edgefuse import ModalitySpec  # noqa: E402

SPECS5 = [
    ModalitySpec("cam", (3, 8, 8), "image"),
    ModalitySpec("lid", (2, 16), "signal"),
    ModalitySpec("rad", (10,), "vector"),
    ModalitySpec("txt", (5,), "tokens", dtype="int64", value_range=(0, 20)),
    ModalitySpec("imu", (6,), "vector"),
]


def specs_n(n: int) -> list[ModalitySpec]:
    return SPECS5[:n]


def random_batch(specs, b: int = 3, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in specs:
        if s.kind == "tokens":
            out[s.name] = torch.randint(0, s.vocab_size, (b, *s.shape), generator=g)
        else:
            out[s.name] = torch.randn((b, *s.shape), generator=g)
    return out


@pytest.fixture(scope="session", autouse=True)
def _guarded_interpreter():
    """Interpreted Triton kernels fail on an out-of-bounds load or store, a race between the
    programs of a launch, or a tl.dot the GPU would reject or the interpreter gets wrong, as on
    a GPU they would fault, race or not compile (tests/kernels/_guard.py)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        yield
        return
    from tests.kernels._guard import guard

    with guard():
        yield


#: the files that take longest on 2 cores, collected first: pytest-xdist hands whole files to the workers
#: (--dist loadfile) in collection order, and a long file collected last (tools/test_aot.py, over 2 minutes)
#: ran alone while the other worker idled. Longest first keeps the two busy to the end.
SLOW_FIRST = (
    "tests/tools/test_aot.py",
    "tests/test_demo_cli.py",
    "tests/test_demo.py",
    "tests/test_latency.py",
    "tests/engines/test_trt.py",
    "tests/runtime/test_runtime.py",
    "tests/test_compare.py",
    "tests/test_bench_cli.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {f: i for i, f in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def small_scenes():
    """A small SensorScenes (fast to train on) shared by the training tests."""
    from edgefuse.data import load_sensorscenes

    return load_sensorscenes(seed=1, sizes={"train": 600, "val": 200, "test": 300})


@contextlib.contextmanager
def shared(tmp_path_factory, name: str):
    """A folder that the pytest-xdist workers of one run share, under a lock: the first to get
    the lock finds it missing and makes it (an expensive fixture built once per run, not once
    per worker); the others wait for it, then find it made."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root / name
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_checkpoint(small_scenes, tmp_path_factory):
    """A small gated model trained for two epochs, saved as a checkpoint (source: sensorscenes)."""
    from edgefuse.train import TrainConfig, train

    with shared(tmp_path_factory, "tiny-checkpoint") as path:
        if not (path / "config.json").is_file():
            train(
                small_scenes,
                TrainConfig(fusion="gated", epochs=2, min_steps=0, dim=16),
                out=path,
                progress=False,
                source="sensorscenes",
            )
    return path


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """The model `make demo` trains: gated fusion, SensorScenes, default settings (about a minute on 2 cores)."""
    from edgefuse.data import load_sensorscenes
    from edgefuse.train import TrainConfig, train

    with shared(tmp_path_factory, "demo-checkpoint") as path:
        if not (path / "config.json").is_file():
            train(load_sensorscenes(), TrainConfig(fusion="gated"), out=path, progress=False, source="sensorscenes")
    return path


@pytest.fixture(scope="session")
def demo_bundle(demo_checkpoint, tmp_path_factory):
    """`make demo`'s build: ort, int8 (minmax on 512 samples), --max-drop 1, --int8-fallback fp32."""
    from edgefuse.build import build_bundle

    with shared(tmp_path_factory, "demo-bundle") as path:
        if not (path / "manifest.json").is_file():
            build_bundle(  # fewer timing rounds than make demo's 200: the tests read what the manifest records
                demo_checkpoint,
                path,
                backend="ort",
                precision="int8",
                gate_fail="fp32",
                progress=False,
                latency_iters=50,
            )
    return path


@pytest.fixture(scope="session")
def exported(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported per subset (all 7)."""
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.export import export_model

    model, _ = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("export") / "graphs"
    export_model(model, out, progress=False)
    return out


@pytest.fixture(scope="session")
def calibrated(exported, small_scenes, tmp_path_factory):
    from edgefuse.calibration import calibrate_export

    out = tmp_path_factory.mktemp("calib") / "int8"
    calibrate_export(exported, small_scenes, out, method="minmax", size=128, max_drop=100.0, progress=False)
    return out


#: the IR version torch's exporter writes (and the bundles carry); onnx's default, newer, is more
#: than an older onnxruntime loads (onnx 1.23 writes 14; onnxruntime 1.30 loads up to 13, 1.23 up to 11)
IR_VERSION = 10


def save_onnx(graph, path, opset: int = 17) -> None:
    """Save a hand-built ONNX graph as exported ones are: default-domain ``opset``, IR_VERSION."""
    import onnx
    from onnx import helper

    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION), str(path)
    )
