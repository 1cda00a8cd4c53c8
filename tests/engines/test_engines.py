"""Engine backends: ONNX Runtime (run here), torch (run here), TensorRT (needs tensorrt + a GPU), FP16 cast pass."""

import contextlib
import importlib.util

import numpy as np
import onnx
import pytest
import torch

from edgefuse.checkpoint import load_checkpoint
from edgefuse.engines import BackendUnavailable, load_engine
from edgefuse.engines.ort import OrtEngine, cache_path_for, write_optimized_cache
from edgefuse.export import sample_inputs
from tests.conftest import save_onnx

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()


def _feeds(model, names, batch=3):
    return sample_inputs([s for s in model.specs if s.name in names], batch, model.norm, seed=11)


def test_ort_engine_runs_the_graph(exported, tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    eng = OrtEngine(exported / "camera+radar.onnx", threads=1)
    assert [t.name for t in eng.inputs] == ["camera", "radar"]
    assert eng.inputs[0].shape == (-1, 3, 16, 16) and eng.outputs[0].name == "logits"
    feeds = _feeds(model, ["camera", "radar"])
    out = eng.run(feeds)["logits"]
    with torch.no_grad():
        want = model({k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    np.testing.assert_allclose(out, want, atol=1e-4)
    assert eng.last_latency_ms > 0
    eng.warmup(batch_sizes=(1, 4))


def test_engine_rejects_bad_feeds(exported):
    eng = OrtEngine(exported / "camera+radar.onnx")
    good = {"camera": np.zeros((2, 3, 16, 16), np.float32), "radar": np.zeros((2, 64), np.float32)}
    with pytest.raises(ValueError, match=r"expected inputs \['camera', 'radar'\].*missing \['radar'\]"):
        eng.run({"camera": good["camera"]})
    with pytest.raises(ValueError, match="input 'radar' expected dtype float32, got float64"):
        eng.run({**good, "radar": good["radar"].astype(np.float64)})
    with pytest.raises(ValueError, match=r"input 'camera' expected shape \[-1, 3, 16, 16\]"):
        eng.run({**good, "camera": np.zeros((2, 3, 16, 15), np.float32)})
    with pytest.raises(ValueError, match="has batch 1, expected 2"):
        eng.run({**good, "radar": good["radar"][:1]})
    eng.close()
    with pytest.raises(ValueError, match="is closed"):
        eng.run(good)


def test_ort_optimized_cache_is_used_when_present(exported, tmp_path):
    import shutil

    model = tmp_path / "lidar.onnx"
    shutil.copy2(exported / "lidar.onnx", model)
    assert OrtEngine(model, optimized_cache=True).source == model  # nothing cached yet: the graph itself
    cache = write_optimized_cache(model)
    assert cache == cache_path_for(model) and cache.is_file()
    eng = OrtEngine(model, optimized_cache=True)
    assert eng.source == cache
    feeds = {"lidar": np.random.default_rng(0).random((2, 2, 64), dtype=np.float32)}
    np.testing.assert_allclose(eng.run(feeds)["logits"], OrtEngine(model).run(feeds)["logits"], atol=1e-5)


def test_unknown_provider_is_a_clear_error(exported):
    with pytest.raises(BackendUnavailable, match="execution provider 'nope' is not available"):
        OrtEngine(exported / "lidar.onnx", providers="nope")


def test_torch_engine_matches_the_model(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    eng = load_engine("torch", tiny_checkpoint, modalities=["lidar", "camera"])
    assert [t.name for t in eng.inputs] == ["camera", "lidar"]  # spec order
    feeds = _feeds(model, ["camera", "lidar"])
    with torch.no_grad():
        want = model({k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    np.testing.assert_allclose(eng.run(feeds)["logits"], want, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty subset"):
        load_engine("torch", tiny_checkpoint, modalities=["sonar"])


def test_torch_engine_on_a_cuda_device_without_cuda_is_a_clear_error(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, GPU or not
    assert load_engine("torch", tiny_checkpoint, modalities=["lidar"]).device == "cpu"  # none named: the CPU
    with pytest.raises(BackendUnavailable, match="device 'cuda:1' asked for, but no CUDA device is visible"):
        load_engine("torch", tiny_checkpoint, modalities=["lidar"], device="cuda:1")


def test_torch_engine_in_fp16(tiny_checkpoint):
    """precision='fp16' runs the model cast to float16 (its fused ops on their float16 kernels on
    a GPU); feeds and logits keep the specs' dtypes, and the logits agree with float32's."""
    model, _ = load_checkpoint(tiny_checkpoint)
    device = "cuda" if HAS_CUDA else "cpu"  # where an engine goes when none is named
    with contextlib.nullcontext() if HAS_CUDA else pytest.warns(RuntimeWarning, match="'fp16' on the CPU runs slower"):
        eng = load_engine("torch", tiny_checkpoint, modalities=model.names, precision="fp16")
    assert eng.device == device and next(eng.model.parameters()).device.type == device
    assert eng.precision == "fp16" and eng.model.compute_dtype == torch.float16
    assert [t.dtype for t in eng.outputs] == ["float32"]
    feeds = _feeds(model, model.names)
    with torch.no_grad():
        want = torch.softmax(model({k: torch.from_numpy(v) for k, v in feeds.items()}), 1).numpy()
    got = eng.run(feeds)["logits"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(got), 1).numpy(), want, atol=5e-3)
    with pytest.raises(ValueError, match=r"precision must be one of \['fp16', 'fp32'\], got 'int8'"):
        load_engine("torch", tiny_checkpoint, modalities=model.names, precision="int8")


def test_fp16_cast_pass_keeps_float32_io_and_agrees(exported, tmp_path):
    from edgefuse.engines.fp16 import to_fp16

    out = to_fp16(exported / "camera+lidar+radar.onnx", tmp_path / "h.onnx")
    m = onnx.load(str(out))
    assert {i.data_type for i in m.graph.initializer} & {onnx.TensorProto.FLOAT} == set()
    assert all(
        i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in list(m.graph.input) + list(m.graph.output)
    )
    from edgefuse.data.sensorscenes import generate

    x = generate(64, seed=9).inputs
    half = OrtEngine(out).run(x)["logits"]
    full = OrtEngine(exported / "camera+lidar+radar.onnx").run(x)["logits"]
    assert np.abs(half - full).max() < 0.05
    assert (half.argmax(1) == full.argmax(1)).mean() >= 0.95


@pytest.mark.skipif(HAS_TRT, reason="checks the error raised when tensorrt is absent; tensorrt is installed here")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(exported, tmp_path):
    from edgefuse.engines.trt import build_plan

    with pytest.raises(BackendUnavailable, match=r"needs the tensorrt package: pip install 'edgefuse\[trt\]'"):
        build_plan(exported / "lidar.onnx", tmp_path / "x.plan")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        load_engine("trt", tmp_path / "x.plan")


def test_shared_device_memory_grows_to_the_largest_and_repoints_earlier_contexts():
    """The block TensorRT contexts share: sized to the largest, earlier contexts moved (their
    captured CUDA graphs dropped) before the old block is freed. Fake engines and allocator:
    the logic is TensorRT-independent (tests/engines/test_trt.py runs it with the fake TensorRT)."""
    import gc

    from edgefuse.engines.trt import SharedDeviceMemory

    class Block:
        live = 0

        def __init__(self, size, ptr):
            self.size, self.ptr = size, ptr
            Block.live += 1

        def free(self):
            Block.live -= 1

    allocated = []

    def alloc(size):
        allocated.append(size)
        return Block(size, 0x1000 * len(allocated))

    class FakeEngine:
        def __init__(self):
            self.pointed, self.blocks_alive, self.graphs = [], [], {1: "captured"}

        def _set_device_memory(self, ptr, size):
            self.pointed.append((ptr, size))
            self.blocks_alive.append(Block.live)
            self.graphs.clear()

    shared = SharedDeviceMemory(alloc=alloc)
    a, b, c = FakeEngine(), FakeEngine(), FakeEngine()
    shared.attach(a, 100)
    shared.attach(b, 50)  # smaller: reuses the block
    assert allocated == [100] and a.pointed == [(0x1000, 100)] and b.pointed == [(0x1000, 100)]
    b.graphs[4] = "captured"
    shared.attach(c, 300)  # larger: one new block, every earlier context moved onto it
    assert allocated == [100, 300] and shared.size == 300 and Block.live == 1
    assert a.pointed[-1] == b.pointed[-1] == c.pointed[-1] == (0x2000, 300)
    assert a.graphs == {} and b.graphs == {}  # graphs holding the old address are gone
    assert a.blocks_alive[-1] == 2  # moved while the old block still existed: freed only after
    del a
    gc.collect()
    assert shared.users == 2
    shared.detach(b)
    assert shared.users == 1


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (CI has none)")
def test_torch_engine_cuda_graph_replay_matches_eager(tiny_checkpoint):  # pragma: no cover - needs a GPU
    model, _ = load_checkpoint(tiny_checkpoint)
    eager = load_engine("torch", tiny_checkpoint, modalities=model.names, device="cuda")
    graph = load_engine("torch", tiny_checkpoint, modalities=model.names, device="cuda", cuda_graph=True)
    half = load_engine(
        "torch", tiny_checkpoint, modalities=model.names, device="cuda", cuda_graph=True, precision="fp16"
    )
    for seed in (1, 2):  # the second call replays the captured graph with new inputs
        feeds = sample_inputs(model.specs, 4, model.norm, seed=seed)
        want = eager.run(feeds)["logits"]
        np.testing.assert_allclose(graph.run(feeds)["logits"], want, atol=1e-4)
        # the float16 kernels, replayed: probabilities within float16's error of float32's
        np.testing.assert_allclose(
            torch.softmax(torch.from_numpy(half.run(feeds)["logits"]), 1).numpy(),
            torch.softmax(torch.from_numpy(want), 1).numpy(),
            atol=5e-3,
        )


def test_fp16_cast_pass_rewires_an_output_that_is_also_read_inside(tmp_path):
    from onnx import TensorProto, helper

    from edgefuse.engines.fp16 import to_fp16

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Neg", ["y"], ["z"]),
    ]  # y is an output and an input
    src = tmp_path / "g.onnx"
    save_onnx(helper.make_graph(nodes, "g", [x], [y, z]), src)
    feeds = {"x": np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)}
    out = OrtEngine(to_fp16(src, tmp_path / "h.onnx")).run(feeds)
    np.testing.assert_array_equal(out["y"], np.maximum(feeds["x"], 0))
    np.testing.assert_array_equal(out["z"], -np.maximum(feeds["x"], 0))


def test_fp16_cast_pass_keeps_an_epsilon_positive(tmp_path):
    """log(max(x, 1e-12)) must not become log(0) = -inf: 1e-12 is below float16's range."""
    from onnx import TensorProto, helper, numpy_helper

    from edgefuse.engines.fp16 import to_fp16

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "eps")
    nodes = [helper.make_node("Max", ["x", "eps"], ["m"]), helper.make_node("Log", ["m"], ["y"])]
    src = tmp_path / "g.onnx"
    save_onnx(helper.make_graph(nodes, "g", [x], [y], [eps]), src)
    out = OrtEngine(to_fp16(src, tmp_path / "h.onnx")).run({"x": np.array([0.0, 0.5, 2.0], np.float32)})["y"]
    assert np.isfinite(out).all(), out
    assert out[0] == pytest.approx(np.log(2.0**-24), abs=1e-2)  # 1e-12 is floored at float16's 2^-24, not flushed to 0
    np.testing.assert_allclose(out[1:], np.log([0.5, 2.0]), atol=1e-3)
