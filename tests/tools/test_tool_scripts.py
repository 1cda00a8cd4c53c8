"""The tools' scripts, each run as a user runs it: the binary counts of the GPU test run, the mutant runs,
the gated and GEMM layout sweeps (compiled for a stand-in sm_90 GPU through Triton's own JIT)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
sys.path.insert(0, str(ROOT / "bench"))  # bench_kernels imports its shared helpers as _common
spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "bench" / "bench_kernels.py")
bk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bk)

pytestmark = pytest.mark.tools


def _compiled_mode_env() -> dict:
    """This environment without the interpreter and backend switches: a script that compiles for
    the stand-in GPU must start without them (the interpreter replaces the JIT)."""
    return {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EDGEFUSE_KERNELS")}


def test_counting_the_gpu_test_runs_binaries_compiles_through_the_stand_in(tmp_path):
    """tools/count_gpu_test_binaries.py on one gated test: Triton's JIT compiles their binaries
    for sm_90 (one per distinct specialisation) and the JSON says how many."""
    env = _compiled_mode_env()
    select = "test_gated and test_matches_reference and softmax-all-False-3-2-17-dtype0"
    run = subprocess.run(
        [sys.executable, str(TOOLS / "count_gpu_test_binaries.py"), "--out", str(tmp_path), "-k", select],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    doc = json.loads((tmp_path / "gpu_test_binaries.json").read_text())
    assert doc["binaries"] == {"_gated_kernel": 1} and doc["total"] == 1 and doc["selected"] == select
    assert doc["compile_errors"] == [] and doc["problems"] == [], doc
    assert 0 < doc["max_registers"] <= 255 and doc["max_shared_bytes"] >= 0, doc  # read off the sm_90 cubin
    assert doc["launches"] == 1 and doc["launches_from_launch_cache"] == 0, doc  # its one launch compiled


def test_counting_the_gpu_test_runs_binaries_reports_a_compile_error_with_its_test(tmp_path):
    """A launch whose compile fails (here: Triton's compile made to raise) is reported with the
    test that hit it, and the script exits 1: a test shape that would not compile on the GPU
    shows here first."""
    env = _compiled_mode_env()
    select = "test_gated and test_matches_reference and softmax-all-False-3-2-17-dtype0"
    broken = (
        "import runpy, sys, triton.compiler, triton.runtime.jit as jit\n"
        "def compile(*a, **k): raise RuntimeError('deliberate compile failure')\n"
        "triton.compiler.compile = compile  # where the JIT imports it from on its first run\n"
        "jit.compile = compile  # where Triton versions that import it up front keep it\n"
        f"sys.argv = ['count_gpu_test_binaries.py', '--out', {str(tmp_path)!r}, '-k', {select!r}]\n"
        "runpy.run_path('count_gpu_test_binaries.py', run_name='__main__')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", broken], cwd=TOOLS, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    doc = json.loads((tmp_path / "gpu_test_binaries.json").read_text())
    assert doc["total"] == 0 and doc["compile_errors"] == [
        {
            "test": "tests/kernels/test_gated.py::test_matches_reference[softmax-all-False-3-2-17-dtype0]",
            "kernel": "_gated_kernel",
            "error": "RuntimeError: deliberate compile failure",
        }
    ], doc


def test_guard_mutants_catches_one_mutant_as_the_tests_do():
    """tools/guard_mutants.py's per-mutant run, guarded: the gated kernel's output store without
    its mask is a race (its bare run may crash the process, so it is not run here)."""
    from tests.kernels._mutants import mutations

    env = _compiled_mode_env()
    env["PYTHONPATH"] = str(TOOLS.parent)
    line = next(line for line, kind in mutations("triton_gated") if kind == "store mask")
    run = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "guard_mutants.py"),
            "--one",
            "triton_gated",
            str(line),
            "store mask",
            "--guarded",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.stdout.strip().splitlines()[-1:] == ["outcome: caught: Race"], run.stdout + run.stderr[-2000:]


def test_gated_layouts_shows_the_warp_local_check_catches_modalities_spread_over_warps(tmp_path):
    """tools/gated_layouts.py compiles the gated kernels for sm_90 with 1-8 warps. With the
    real compiler, the launcher's choice has no barrier, and more warps than a row takes (the
    modalities spread over warps, as before _blocks changed) do: what aot.WARP_LOCAL fails on.
    fp32 at D = 256 (a row takes 2 warps) keeps it short; the SASS is checked against the PTX."""
    from tools.aot import WARP_LOCAL_BARRIERS

    run = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "gated_layouts.py"),
            "--out",
            str(tmp_path),
            "--sass",
            "--dtype",
            "float32",
            "--dim",
            "256",
        ],
        env=_compiled_mode_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (path,) = tmp_path.glob("gated_layouts-triton-*.json")
    doc = json.loads(path.read_text())
    assert doc["disagreements"] == [] and doc["sass_checked"]
    rows = [r for r in doc["rows"] if r["direction"] == "forward" or r["per_feature_gates"]]
    assert len(rows) == 3 * 4  # per-feature forward and backward, per-modality forward; 4 warp counts
    for r in rows:
        if r["default"]:
            assert r["num_warps"] == 2 and r["barriers"] <= WARP_LOCAL_BARRIERS, r
        elif r["num_warps"] > 2:
            assert r["barriers"] > WARP_LOCAL_BARRIERS, r


def test_gemm_layouts_lists_the_tensor_cores_of_every_configuration_the_gpu_run_times(tmp_path):
    """tools/gemm_layouts.py compiles the launcher's MFB tile at B = 4096 and each alternative
    bench_kernels.py times beside it, for sm_90: 64-row tiles run Hopper's warpgroup MMA,
    16-row tiles the warp-level one, and none spills."""
    from edgefuse.kernels.triton_bilinear import _mfb_config

    run = subprocess.run(
        [sys.executable, str(TOOLS / "gemm_layouts.py"), "--out", str(tmp_path), "--op", "mfb", "--dim", "256"],
        env=_compiled_mode_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (path,) = tmp_path.glob("gemm_layouts-float16-sm_90-triton-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert [r["config"] for r in rows] == ["default", *bk._mfb_alternatives(4096, bk.MFB_OUT, 4)]
    assert rows[0]["launch_config"] == list(_mfb_config(4096, bk.MFB_OUT, 4))
    for r in rows:
        family = "wgmma" if r["blocks"]["BLOCK_M"] >= 64 else "mma"
        assert r["tensor_cores"] and all(k.startswith(family + " ") for k in r["tensor_cores"]), r
        assert r["spill_bytes"] == 0 and r["launches"] == ["_mfb_kernel", "_l2norm_rows_kernel"], r
