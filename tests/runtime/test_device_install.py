"""The device install: `pip install edgefuse` in a fresh virtualenv brings numpy and onnxruntime, not torch or
Triton, and is enough to verify a bundle, replay a fault scenario through its INT8 engines, and say which
extra a build verb needs."""

import re
import subprocess
import sys
from pathlib import Path

import numpy
import onnxruntime

ROOT = Path(__file__).resolve().parents[2]


def test_the_device_install_runs_bundles_without_torch_or_triton(bundles, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, bin_ = str(venv / "bin" / "python"), venv / "bin"
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("edgefuse-*.whl")
    # with its dependencies; numpy and onnxruntime pinned to this environment's versions, so pip takes them
    # from its cache
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
            f"numpy=={numpy.__version__}",
            f"onnxruntime=={onnxruntime.__version__}",
        ],
        check=True,
    )
    code = (
        "import importlib.util as u, sys; missing = [m for m in ('torch', 'triton', 'onnx', 'tools') if "
        "u.find_spec(m)]; "
        "assert not missing, missing; import edgefuse.runtime, edgefuse.bundle, edgefuse.engines, edgefuse.cli; "
        "from edgefuse.runtime.scenario import replay; assert 'torch' not in sys.modules, 'torch was imported'; "
        "print('ok')"
    )
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True, cwd=str(tmp_path))
    assert out.stdout.strip() == "ok"
    bundle = str(bundles[("ort", "int8")])
    info = subprocess.run([str(bin_ / "edgefuse"), "info", bundle], capture_output=True, text=True, cwd=str(tmp_path))
    assert info.returncode == 0, info.stderr
    assert "verified" in info.stdout and "camera+lidar+radar" in info.stdout
    # the whole device path: verify the bundle, load and warm its INT8 engines, replay a fault scenario
    scenario = tmp_path / "s.toml"
    scenario.write_text('duration_s = 6.0\n[[faults]]\nsensor = "radar"\nkind = "nan"\nstart_s = 2.0\nend_s = 4.0\n')
    run = subprocess.run(
        [str(bin_ / "edgefuse"), "run", bundle, "--scenario", str(scenario), "--data", "sensorscenes", "--seed", "1"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert run.returncode == 0, run.stderr
    assert "radar nan" in run.stdout and "camera+lidar (20)" in run.stdout
    # timing a bundle's engines for the host's latency-aware build needs nothing more
    prof = subprocess.run(
        [
            str(bin_ / "edgefuse"),
            "profile",
            bundle,
            "--out",
            str(tmp_path / "p.json"),
            "--iters",
            "5",
            "--batches",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert prof.returncode == 0, prof.stderr
    assert '"format": "edgefuse-latency-profile/1"' in (tmp_path / "p.json").read_text()
    # a verb of the build extra says which extra, in one line
    train = subprocess.run(
        [str(bin_ / "edgefuse"), "train", "--out", str(tmp_path / "ck")], capture_output=True, text=True
    )
    assert train.returncode == 2
    assert (
        train.stderr.strip() == "edgefuse train: needs torch, which this install lacks: pip install 'edgefuse[build]'"
    )


def test_no_installed_module_imports_tools_or_bench():
    pattern = re.compile(r"^\s*(from|import)\s+(tools|bench)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("edgefuse", "kernels", "engines", "calibration")
        for p in (ROOT / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []
