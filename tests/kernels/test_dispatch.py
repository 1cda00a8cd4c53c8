"""Which path runs: reference on CPU, Triton when forced or on CUDA; fusion modules go through the ops."""

import warnings

import pytest
import torch

from edgefuse.fusion import build_model
from edgefuse.kernels import backend, exporting, gated_fusion, platform
from tests.conftest import KERNEL_DEVICE as DEV
from tests.conftest import random_batch, specs_n

# what forces the Triton path on this machine: compiled on a GPU, interpreted elsewhere
FORCE = "triton" if DEV == "cuda" else "interpret"


def test_default_dispatch_and_env_overrides(monkeypatch):
    cpu = torch.zeros(2, 3)
    monkeypatch.delenv("EDGEFUSE_KERNELS", raising=False)
    assert backend(cpu) == "reference"  # CPU tensors never run Triton unless forced
    if DEV == "cuda":
        assert backend(cpu.cuda()) == "triton"
    monkeypatch.setenv("EDGEFUSE_KERNELS", "reference")
    assert backend(cpu.to(DEV)) == "reference"
    monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
    assert backend(cpu.to(DEV)) == "triton"
    monkeypatch.setenv("EDGEFUSE_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="EDGEFUSE_KERNELS must be one of"):
        backend(cpu)


def test_forcing_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("EDGEFUSE_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        backend(torch.zeros(2))


def test_training_takes_the_reference_path_unless_the_op_has_a_backward(monkeypatch):
    monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
    w = torch.zeros(2, 3, device=DEV, requires_grad=True)
    assert backend(w) == "reference"
    assert backend(w, has_backward=True) == "triton"
    with torch.no_grad():
        assert backend(w) == "triton"


def test_triton_kernels_are_actually_called(monkeypatch):
    monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
    calls = []
    import edgefuse.kernels.triton_gated as tg

    real = tg.gated_fusion_triton
    monkeypatch.setattr(tg, "gated_fusion_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    feats, logits = torch.randn(2, 3, 4, device=DEV), torch.randn(2, 3, device=DEV)
    gated_fusion(feats, logits, torch.ones(2, 3, dtype=torch.bool, device=DEV))
    assert calls == [1]


def test_inference_calls_the_gated_launcher_without_an_autograd_node(monkeypatch):
    """With no gradient to compute (torch.no_grad, or inputs that need none), gated_fusion calls
    its forward launcher itself: building the autograd Function's node is host time on every
    call (bench/bench_launch_overhead.py's dispatch_us). A gradient on either input takes the Function."""
    import edgefuse.kernels.triton_gated as tg
    from edgefuse.kernels.reference import gated_fusion_reference

    monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
    applied = []
    real = tg.GatedFusionFunction.apply
    monkeypatch.setattr(tg.GatedFusionFunction, "apply", lambda *a: applied.append(1) or real(*a))
    g = torch.Generator().manual_seed(0)
    feats, logits = torch.randn(3, 2, 5, generator=g).to(DEV), torch.randn(3, 2, generator=g).to(DEV)
    mask = torch.tensor([[True, False], [True, True], [False, False]], device=DEV)
    want, want_empty = gated_fusion_reference(feats, logits, mask)
    for grad_of in ("feats under no_grad", "nothing"):
        f = feats.clone().requires_grad_(grad_of != "nothing")
        with torch.set_grad_enabled(grad_of == "nothing"):
            out, empty = gated_fusion(f, logits, mask)
        assert applied == [] and out.grad_fn is None, grad_of
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        assert torch.equal(empty, want_empty)
    for i in range(2):  # a gradient wanted for the features or for the logits
        args = [feats, logits]
        args[i] = args[i].clone().requires_grad_()
        out, _ = gated_fusion(*args, mask)
        assert applied == [1] * (i + 1) and out.grad_fn is not None
        torch.testing.assert_close(out.detach(), want, rtol=1e-5, atol=1e-6)


def test_the_onnx_export_check_answers_as_torchs_own(monkeypatch):
    """Dispatch reads the two flags of torch.onnx.is_in_onnx_export itself (torch's function
    imports their modules on every call). It answers as torch's does outside an export and in
    both exporters, and each flag alone turns it on; while exporting, forced kernels give way
    to the reference ops, so graphs hold standard operators."""
    import inspect
    import io

    check = exporting._onnx_export_check()
    if "import" in inspect.getsource(torch.onnx.is_in_onnx_export):  # torch's imports on each call (CI's torch)
        assert check is not torch.onnx.is_in_onnx_export
    monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((check(), torch.onnx.is_in_onnx_export(), backend(x)))
            return x * 2

    assert check() is False and torch.onnx.is_in_onnx_export() is False
    x = torch.randn(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the TorchScript exporter is deprecated; torch's own FutureWarnings)
        torch.onnx.export(Probe().eval(), (x,), io.BytesIO(), dynamo=False)
        traced = len(seen)
        torch.onnx.export(Probe().eval(), (x,), dynamo=True, verbose=False)
    assert traced and len(seen) > traced, seen
    assert all(s == (True, True, "reference") for s in seen[:traced]), seen  # the TorchScript exporter's flag
    # the dynamo exporter's: torch 2.13's function reads it, 2.6's does not; the reference either way
    assert all(ours == torchs and path == "reference" for ours, torchs, path in seen[traced:]), seen
    if check is torch.onnx.is_in_onnx_export:
        return
    # each flag alone, where dispatch found them; torch's own function must agree that it is the flag
    state, flags = exporting.onnx_export_flags()
    monkeypatch.setattr(flags, "_is_onnx_exporting", True)  # the dynamo exporter's
    assert check() is True and torch.onnx.is_in_onnx_export() is True
    monkeypatch.setattr(flags, "_is_onnx_exporting", False)
    assert check() is False
    monkeypatch.setattr(state, "in_onnx_export", True)  # the TorchScript exporter's
    assert check() is True and torch.onnx.is_in_onnx_export() is True


@pytest.mark.parametrize("fusion", ["gated", "adaptive_gate", "mfb", "bilinear", "concat"])
def test_models_give_the_same_logits_through_the_kernels(fusion, monkeypatch):
    """A model run through the Triton kernels matches the reference path (no code change)."""
    torch.manual_seed(0)
    specs = specs_n(3) if fusion != "mfb" else specs_n(2)  # N = 2 takes MFB's fused kernel
    model = build_model(fusion, specs, num_classes=4, dim=16).eval().to(DEV)
    x = {k: v.to(DEV) for k, v in random_batch(specs, b=3).items()}
    n = len(specs)
    present = torch.tensor([[True] * n, [True] + [False] * (n - 1), [False] * (n - 1) + [True]], device=DEV)
    with torch.no_grad():
        monkeypatch.setenv("EDGEFUSE_KERNELS", "reference")
        ref = model(x, present)
        monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
        out = model(x, present)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fusion", ["gated", "adaptive_gate", "concat", "mfb"])
def test_a_training_step_gets_the_same_gradients_through_the_kernels(fusion, monkeypatch):
    """Every mid-fusion model's projection trains through the kernel (its autograd Function),
    gated ops through their Triton forward and backward, MFB through the reference; every
    parameter's gradient matches the all-reference step."""
    import edgefuse.kernels.triton_projection as tp

    launches = []
    real = tp.fused_projection_triton
    monkeypatch.setattr(tp, "fused_projection_triton", lambda *a, **k: launches.append(1) or real(*a, **k))
    torch.manual_seed(0)
    specs = specs_n(3)
    model = build_model(fusion, specs, num_classes=4, dim=16, dropout=0.0).train().to(DEV)
    x = {k: v.to(DEV) for k, v in random_batch(specs, b=4).items()}
    present = torch.tensor(
        [[True, True, True], [True, False, False], [False, True, True], [False, False, True]], device=DEV
    )
    y = torch.tensor([0, 1, 2, 3], device=DEV)

    def grads(kernels: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("EDGEFUSE_KERNELS", kernels)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x, present), y).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    ref, out = grads("reference"), grads(FORCE)
    assert launches == [1]  # the projection, in the kernel step only
    assert ref.keys() == out.keys() and any(k.startswith("project.") for k in ref)
    if fusion != "concat":
        assert any(k.startswith("op.") for k in ref)  # the fusion op is trained too
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


def test_without_triton_cuda_falls_back_to_the_reference_and_forcing_is_a_clear_error(monkeypatch):
    """A Jetson image without Triton (or a broken wheel): models keep running on the reference."""
    import edgefuse.kernels.ops as ops

    monkeypatch.setattr(ops, "triton_import_error", lambda: "ModuleNotFoundError: No module named 'triton'")
    ops._warn_no_triton.cache_clear()
    fake_cuda = torch.zeros(2, 3)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # no GPU here: pretend
    monkeypatch.delenv("EDGEFUSE_KERNELS", raising=False)
    with pytest.warns(RuntimeWarning, match="Triton cannot be imported.*reference"):
        assert backend(fake_cuda) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every call
        assert backend(fake_cuda) == "reference"
    for forced in ("triton", "interpret"):
        monkeypatch.setenv("EDGEFUSE_KERNELS", forced)
        with pytest.raises(RuntimeError, match=f"EDGEFUSE_KERNELS={forced} needs Triton.*No module named 'triton'"):
            backend(fake_cuda)


def test_when_tritons_cuda_driver_cannot_start_cuda_falls_back_and_forcing_is_a_clear_error(monkeypatch, tmp_path):
    """A slim runtime image (no gcc, no python3-dev) imports Triton, but Triton's CUDA driver
    compiles C helpers on first use and fails there: inside the model's first fused op
    ("Failed to find C compiler", as in sglang#1067). The check starts Triton's real driver
    once, at the first CUDA call; here with no C compiler on PATH and an empty Triton cache."""
    import triton
    from triton.backends.nvidia import driver as nvidia
    from triton.runtime import build

    import edgefuse.kernels.ops as ops

    caches = [
        platform.triton_cuda_error,
        ops._warn_no_triton,
        nvidia.libcuda_dirs,
        *(getattr(m, f) for m, f in ((nvidia, "library_dirs"), (build, "_find_compiler")) if hasattr(m, f)),
    ]
    monkeypatch.setattr(triton.runtime, "driver", type(triton.runtime.driver)())  # no driver started yet
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # so Triton picks its CUDA backend
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # no GPU here: pretend
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc, no clang
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))  # its C helpers not built before
    monkeypatch.setenv("TRITON_LIBCUDA_PATH", str(tmp_path))  # past the libcuda lookup, to the compiler
    monkeypatch.delenv("EDGEFUSE_KERNELS", raising=False)
    fake_cuda = torch.zeros(2, 3)
    for cache in caches:
        cache.cache_clear()
    try:
        with pytest.warns(
            RuntimeWarning,
            match=r"Triton's CUDA driver cannot start \(RuntimeError: Failed to find C "
            r"compiler.*reference ops.*apt install gcc python3-dev",
        ):
            assert backend(fake_cuda) == "reference"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # checked and warned once, not on every call
            assert backend(fake_cuda) == "reference"
        monkeypatch.setenv("EDGEFUSE_KERNELS", "triton")
        with pytest.raises(
            RuntimeError,
            match="EDGEFUSE_KERNELS=triton needs Triton: Triton's CUDA driver cannot "
            "start here .*Failed to find C compiler.*or unset EDGEFUSE_KERNELS",
        ):
            backend(fake_cuda)
        monkeypatch.setenv("EDGEFUSE_KERNELS", "interpret")  # the interpreter needs no driver
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert backend(fake_cuda) == "triton"
    finally:
        for cache in caches:  # nothing of this fake start outlives the test
            cache.cache_clear()


@pytest.mark.parametrize(
    "arch, version, environ, expected",
    [
        (110, "3.0.0", {}, "aborts the process"),
        (110, "3.4.0", {"TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas"}, "aborts"),
        (110, "3.5.1", {}, "set TRITON_PTXAS_PATH"),
        (110, "3.5.1", {"TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas"}, None),
        (110, "3.6.0", {}, "set TRITON_PTXAS_BLACKWELL_PATH"),
        (110, "3.6.0", {"TRITON_PTXAS_PATH": "x"}, "BLACKWELL"),
        (110, "3.6.0", {"TRITON_PTXAS_BLACKWELL_PATH": "/usr/local/cuda/bin/ptxas"}, None),
        (110, "3.7.1", {}, None),
        (110, "3.10.0", {}, None),
        (110, "3.7.0+git1a2b", {}, None),
        (110, "3.5.0rc1", {}, "PTXAS_PATH"),
        (110, "main", {}, None),  # a source build's version says nothing: no claim, and no error
        (100, "3.2.0", {}, "aborts"),
        (100, "3.3.1", {}, None),
        (120, "3.1.0", {}, "aborts"),
        (120, "3.3.1", {}, None),
        (121, "3.3.1", {}, "aborts"),
        (121, "3.4.0", {}, "its compiler fails"),
        (121, "3.5.1", {}, "set TRITON_PTXAS_PATH"),
        (121, "3.6.0", {}, None),
        (87, "3.0.0", {}, None),
        (90, "3.0.0", {}, None),
        (72, "3.0.0", {}, None),
        ("gfx942", "3.0.0", {}, None),
    ],
)
def test_which_triton_compiles_for_which_gpu(arch, version, environ, expected):
    """The table tools/triton_targets.sh measured (and checks), read back: what each release
    does for each architecture, and the remedy it names (the first release that works)."""
    from edgefuse.kernels.platform import TRITON_TARGETS, triton_target_error

    got = triton_target_error(arch, version, environ)
    if expected is None:
        assert got is None
    else:
        floor = {100: "3.3", 110: "3.7", 120: "3.3", 121: "3.6"}[arch]
        assert got is not None and expected in " ".join(got) and f"triton>={floor}" in got[1], got
        assert f"sm_{arch} ({TRITON_TARGETS[arch][0]})" in got[0]


def _pretend_gpu(monkeypatch, arch: int) -> None:
    """No GPU here: Triton's driver reports an ``sm_<arch>`` GPU, every tensor says it is on
    CUDA device 0, no graph is being captured, and EDGEFUSE_KERNELS is unset."""
    import types

    import triton
    from triton.backends.compiler import GPUTarget

    gpu = types.SimpleNamespace(active=types.SimpleNamespace(get_current_target=lambda: GPUTarget("cuda", arch, 32)))
    monkeypatch.setattr(triton.runtime, "driver", gpu)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.delenv("EDGEFUSE_KERNELS", raising=False)


def test_on_jetson_thor_an_old_triton_falls_back_before_its_first_launch(monkeypatch):
    """Triton <= 3.4 aborts the process when it compiles for sm_110, so the check must come
    before any launch: a stand-in driver reports a Thor, and Triton 3.4 is what is installed."""
    import triton

    import edgefuse.kernels.ops as ops

    _pretend_gpu(monkeypatch, 110)
    monkeypatch.setattr(triton, "__version__", "3.4.0")
    launched = []
    import edgefuse.kernels.triton_gated as tg

    monkeypatch.setattr(tg.GatedFusionFunction, "apply", lambda *a: launched.append(1))  # training
    monkeypatch.setattr(tg, "gated_fusion_triton", lambda *a: launched.append(1))  # inference
    monkeypatch.setattr(platform, "kernel_load_error", lambda device, arch: None)  # (a test kernel would need the Thor)
    platform.triton_cuda_error.cache_clear()
    ops._warn_no_triton.cache_clear()
    try:
        feats, logits = torch.randn(2, 3, 4), torch.randn(2, 3)
        with pytest.warns(
            RuntimeWarning,
            match=r"cannot compile the kernels for this GPU \(Triton 3.4.0 cannot compile "
            r"for sm_110 \(Jetson Thor\).*reference ops.*install triton>=3.7",
        ):
            fused, empty = gated_fusion(feats, logits, torch.ones(2, 3, dtype=torch.bool))
        assert launched == [] and fused.shape == (2, 4) and not empty.any()
        monkeypatch.setenv("EDGEFUSE_KERNELS", "triton")
        with pytest.raises(RuntimeError, match="EDGEFUSE_KERNELS=triton needs Triton: Triton cannot compile"):
            backend(feats)
        monkeypatch.setattr(triton, "__version__", "3.7.1")  # a release that can: checked once per process
        platform.triton_cuda_error.cache_clear()
        assert backend(feats) == "triton"
    finally:
        platform.triton_cuda_error.cache_clear()
        ops._warn_no_triton.cache_clear()


def test_the_load_check_runs_a_test_kernel_and_reads_it_back(monkeypatch):
    """``kernel_load_error`` builds, loads and runs triton_probe's kernel (compiled on a GPU,
    interpreted here) and reads it back: None when it works; a kernel that leaves its output
    unwritten is caught, with what it wrote."""
    from edgefuse.kernels import triton_probe

    assert platform.kernel_load_error(DEV, 87) is None

    class Unwritten:  # a launch that runs nothing
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(triton_probe, "_iota", Unwritten())
    what, why, remedy = platform.kernel_load_error(DEV, 87)
    assert what == "Triton cannot build and load a kernel on this GPU"
    assert why.startswith(
        "RuntimeError: Triton's test kernel ran but wrote [-1, -1, -1, -1]... instead of [1, 4, 7, 10]"
    )
    if platform.cuda_driver_version() is None:  # no NVIDIA driver: no versions to compare
        assert remedy == platform.PROBE_REMEDY


LOAD_REFUSED = r"""
import json, sys
from unittest import mock
from triton.compiler.compiler import CompiledKernel
from edgefuse.kernels import platform
from tools.aot import stand_in_gpu

def refuse(self):
    raise RuntimeError("Triton Error [CUDA]: device kernel image is invalid")

out = {}
for arch in (87, 90):
    for driver in ("12.6", "99.0"):
        with stand_in_gpu(arch):  # Triton compiles the test kernel for real; the load is refused
            with mock.patch.object(CompiledKernel, "_init_handles", refuse), \
                 mock.patch.object(platform, "cuda_driver_version", lambda: driver):
                out[f"{arch} {driver}"] = platform.kernel_load_error("cpu", arch)
    out[f"{arch} ptxas"] = platform.triton_ptxas(arch)
json.dump(out, sys.stdout)
"""


def test_a_driver_older_than_tritons_ptxas_falls_back_naming_the_variable_triton_reads(monkeypatch, tmp_path):
    """A driver that refuses what Triton's ptxas built ("device kernel image is invalid", as
    with a driver older than that ptxas's CUDA): the check says both versions, and names the
    variable that makes Triton use another ptxas, the one this Triton reads for that
    architecture (with 3.9, Hopper's is ``TRITON_PTXAS_BLACKWELL_PATH``). Compiled for sm_87
    and sm_90 on a stand-in GPU, in a process of its own (no interpreter)."""
    import json
    import os
    import subprocess
    import sys

    import triton
    from triton.backends.nvidia import compiler

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRITON_INTERPRET", "EDGEFUSE_KERNELS", "TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")
    }
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    run = subprocess.run([sys.executable, "-c", LOAD_REFUSED], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    for arch in (87, 90):
        path, version, var = out[f"{arch} ptxas"]
        assert os.path.isfile(path) and var in ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")
        what, why, remedy = out[f"{arch} 12.6"]
        assert what == "Triton cannot build and load a kernel on this GPU"
        assert why == (
            f"RuntimeError: Triton Error [CUDA]: device kernel image is invalid; Triton {triton.__version__} "
            f"builds for sm_{arch} with CUDA {version}'s ptxas, this driver runs CUDA 12.6"
        )
        if platform.major_minor(version) > (12, 6):  # every release's wheel (12.4 in 3.0-3.3)
            assert remedy.startswith(
                f"update the NVIDIA driver to one for CUDA {version}, or set {var} to the ptxas "
                "of a CUDA toolkit no newer than 12.6"
            ), remedy
        assert out[f"{arch} 99.0"][2] == platform.PROBE_REMEDY  # a newer driver: no version advice
        # the variable named is the one this Triton reads for that architecture
        monkeypatch.setenv(var, str(tmp_path / "ptxas"))
        (tmp_path / "ptxas").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.6, V12.6.85'\n")
        (tmp_path / "ptxas").chmod(0o755)
        # Triton 3.0-3.3 find ptxas once per process
        found = [
            f
            for f in (getattr(compiler, n, None) for n in ("_path_to_binary", "get_ptxas"))
            if hasattr(f, "cache_clear")
        ]
        try:
            for f in found:
                f.cache_clear()
            assert platform.triton_ptxas(arch) == (str(tmp_path / "ptxas"), "12.6", var)
        finally:
            monkeypatch.delenv(var)
            for f in found:
                f.cache_clear()


@pytest.mark.parametrize(
    "version, driver, pin", [("3.8.0", "11.4", True), ("3.6.0", "11.4", False), ("3.8.0", "12.6", False)]
)
def test_on_a_cuda_11_driver_the_remedy_pins_a_triton_that_builds_with_its_ptxas(monkeypatch, version, driver, pin):
    """JetPack 5's driver runs CUDA 11.4, older than every Triton wheel's ptxas, and Triton 3.7
    and later cannot build with a CUDA 11 ptxas (tools/triton_ptxas.sh): there the remedy says
    to install an older Triton first."""
    import triton

    from edgefuse.kernels import triton_probe

    monkeypatch.setattr(
        triton_probe,
        "run",
        lambda device: (_ for _ in ()).throw(RuntimeError("Triton Error [CUDA]: device kernel image is invalid")),
    )
    monkeypatch.setattr(triton, "__version__", version)
    monkeypatch.setattr(platform, "triton_ptxas", lambda arch: ("/x/ptxas", "12.9", "TRITON_PTXAS_PATH"))
    monkeypatch.setattr(platform, "cuda_driver_version", lambda: driver)
    remedy = platform.kernel_load_error("cuda:0", 87)[2]
    assert remedy.startswith(
        f"update the NVIDIA driver to one for CUDA 12.9, or set TRITON_PTXAS_PATH to the ptxas "
        f"of a CUDA toolkit no newer than {driver}"
    )
    assert remedy.endswith(f"; Triton {version} cannot build with a CUDA 11 ptxas, so first install triton<3.7") == pin


def test_the_first_cuda_call_checks_the_load_except_while_a_graph_is_captured(monkeypatch):
    """The load check is dispatch's third (after the driver and the architecture), once per
    process: its failure takes the reference with one warning, and forcing Triton raises. A
    first call inside a CUDA-graph capture skips it (its kernel would join the graph)."""
    import edgefuse.kernels.ops as ops

    _pretend_gpu(monkeypatch, 87)
    checked = []
    refused = (
        "Triton cannot build and load a kernel on this GPU",
        "RuntimeError: Triton Error [CUDA]: device kernel image is invalid",
        "update the NVIDIA driver",
    )
    monkeypatch.setattr(
        platform, "kernel_load_error", lambda device, arch: checked.append((str(device), arch)) or refused
    )
    fake_cuda = torch.zeros(2, 3)
    try:
        for capturing in (True, False):
            monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing)
            platform.triton_cuda_error.cache_clear()
            ops._warn_no_triton.cache_clear()
            if capturing:
                assert backend(fake_cuda) == "triton" and checked == []
                continue
            with pytest.warns(
                RuntimeWarning,
                match=r"cannot build and load a kernel on this GPU \(RuntimeError: Triton "
                r"Error \[CUDA\]: device kernel image is invalid\).*reference ops.*update the NVIDIA driver",
            ):
                assert backend(fake_cuda) == "reference"
            assert backend(fake_cuda) == "reference" and checked == [("cuda:0", 87)]  # once per process
            monkeypatch.setenv("EDGEFUSE_KERNELS", "triton")
            with pytest.raises(
                RuntimeError, match="EDGEFUSE_KERNELS=triton needs Triton: Triton cannot build and load"
            ):
                backend(fake_cuda)
    finally:
        platform.triton_cuda_error.cache_clear()
        ops._warn_no_triton.cache_clear()


@pytest.mark.parametrize("fusion", ["concat", "hadamard", "bilinear", "mfb", "gated", "adaptive_gate", "late_vote"])
def test_models_run_under_autocast_on_both_paths(fusion, monkeypatch):
    """Autocast (the usual fp16 inference on a Jetson) casts the matmul-like ops' arguments to its
    dtype on both paths: float32 weights and float16 activations used to reach the kernels and
    F.bilinear as a dtype mismatch."""
    from edgefuse.kernels.ops import autocast_dtype

    torch.manual_seed(0)
    specs = specs_n(3) if fusion != "mfb" else specs_n(2)
    model = build_model(fusion, specs, num_classes=4, dim=16).eval().to(DEV)
    x = {k: v.to(DEV) for k, v in random_batch(specs, b=3).items()}
    dtype = torch.float16  # CPU autocast takes float16 too; the interpreter's bf16 tl.dot is unreliable
    assert autocast_dtype(DEV) is None
    outs = {}
    with torch.no_grad(), torch.autocast(DEV, dtype=dtype):
        assert autocast_dtype(DEV) == dtype
        for kernels in ("reference", FORCE):
            monkeypatch.setenv("EDGEFUSE_KERNELS", kernels)
            outs[kernels] = model(x, None).float()
    assert torch.isfinite(outs["reference"]).all()
    torch.testing.assert_close(outs[FORCE], outs["reference"], rtol=1e-2, atol=1e-2)


def test_amp_training_through_the_kernels_keeps_float32_master_gradients(monkeypatch):
    """Mixed-precision training: under autocast the projection's kernel path runs in float16
    (ProjectionFunction on cast copies of the weights), and every parameter still gets a
    float32 gradient close to the reference path's."""
    torch.manual_seed(0)
    specs = specs_n(3)
    model = build_model("gated", specs, num_classes=4, dim=16, dropout=0.0).train().to(DEV)
    x = {k: v.to(DEV) for k, v in random_batch(specs, b=4).items()}
    y = torch.tensor([0, 1, 2, 3], device=DEV)

    def grads(kernels: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("EDGEFUSE_KERNELS", kernels)
        model.zero_grad()
        with torch.autocast(DEV, dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x, None), y)
        loss.backward()
        return {k: p.grad for k, p in model.named_parameters() if p.grad is not None}

    ref, out = grads("reference"), grads(FORCE)
    assert ref.keys() == out.keys() and any(k.startswith("project.") for k in ref)
    for k in ref:
        assert out[k].dtype == torch.float32, k
        torch.testing.assert_close(out[k], ref[k], rtol=2e-2, atol=2e-3, msg=k)


def test_a_call_switches_to_its_tensors_cuda_device(monkeypatch):
    """Triton launches on the current device: tensors on cuda:1 while cuda:0 is current would
    be read by a kernel on the wrong GPU. ``on_device`` switches, as torch's ops do."""
    import types

    from edgefuse.kernels.ops import on_device

    assert on_device(torch.zeros(2)).__class__.__name__ == "nullcontext"  # CPU: nothing to switch
    on_gpu1 = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 1))  # no GPU here: a stand-in
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    guard = on_device(on_gpu1)
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert on_device(on_gpu1).__class__.__name__ == "nullcontext"  # already current: no switch


def test_every_op_launches_under_its_tensors_device(monkeypatch):
    import contextlib

    import edgefuse.kernels.ops as ops

    seen = []
    monkeypatch.setattr(ops, "on_device", lambda t: seen.append(t.device) or contextlib.nullcontext())
    monkeypatch.setenv("EDGEFUSE_KERNELS", FORCE)
    r = lambda *s: torch.randn(*s, device=DEV)  # noqa: E731
    ops.fused_projection([r(2, 16), r(2, 24)], [r(16, 16), r(16, 24)], r(2, 16), "relu", True)
    ops.bilinear(r(2, 16), r(2, 16), r(16, 16, 16), r(16))
    ops.mfb(r(2, 16), r(2, 16), r(32, 16), r(32), r(32, 16), r(32), 2)
    ops.gated_fusion(r(2, 3, 16), r(2, 3), torch.ones(2, 3, dtype=torch.bool, device=DEV))
    assert len(seen) == 4 and all(d.type == torch.device(DEV).type for d in seen)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_kernels_on_the_second_gpu_while_the_first_is_current():
    from edgefuse.kernels import ops

    torch.manual_seed(0)
    feats, logits = torch.randn(5, 3, 64), torch.randn(5, 3, 64)
    mask = torch.tensor([[1, 0, 1]] * 5, dtype=torch.bool)
    want, _ = ops.ref.gated_fusion_reference(feats, logits, mask)
    torch.cuda.set_device(0)
    out, _ = ops.gated_fusion(feats.to("cuda:1"), logits.to("cuda:1"), mask.to("cuda:1"))
    torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-5)


def test_fp32_dots_use_tf32_exactly_where_torch_matmuls_would(monkeypatch):
    """fp32 GEMM launches follow torch's own setting for CUDA matmuls: exact fp32 by default,
    TF32 tensor cores after torch.set_float32_matmul_precision("high") (as nn.Linear then does).
    fp16 takes tensor cores either way. Read from what each launcher passes to its kernel."""
    import types

    import edgefuse.kernels.triton_bilinear as tb
    import edgefuse.kernels.triton_projection as tp

    seen = []

    def fake(kernel, grid, *args, **kw):
        return seen.append((kernel.__name__, kw["PRECISION"])) if "PRECISION" in kw else None

    monkeypatch.setattr(tp, "launch", fake)
    monkeypatch.setattr(tb, "launch", fake)

    def precisions(dtype):
        seen.clear()
        x = torch.zeros(4, 32, dtype=dtype, device=DEV)
        w = torch.zeros(32, 32, dtype=dtype, device=DEV)
        tp.fused_projection_triton([x, x], [w, w], None)
        tb.mfb_triton(x, x, w, None, w, None, 2)
        tb.bilinear_triton(x, x, torch.zeros(16, 32, 32, dtype=dtype, device=DEV))
        assert [k for k, _ in seen] == ["_fused_projection_kernel", "_mfb_kernel", "_bilinear_kernel"]
        return {p for _, p in seen}

    from tools.aot import fp32_matmul_precision  # sets it, restores it after

    with fp32_matmul_precision("highest"):
        assert precisions(torch.float32) == {"ieee"} and precisions(torch.float16) == {"tf32"}
        with fp32_matmul_precision("high"):
            assert precisions(torch.float32) == {"tf32"}
        assert precisions(torch.float32) == {"ieee"}  # read on every launch, not cached
    # torch < 2.9 has no fp32_precision; its allow_tf32 flag decides
    for allowed, want in ((True, "tf32"), (False, "ieee")):
        monkeypatch.setattr(torch.backends.cuda, "matmul", types.SimpleNamespace(allow_tf32=allowed))
        assert precisions(torch.float32) == {want}
