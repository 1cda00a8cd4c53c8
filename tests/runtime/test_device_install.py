"""The device install: a virtualenv with numpy and onnxruntime (and their own dependencies) and edgefuse
installed --no-deps, no torch anywhere, imports the runtime and replays a scenario through an INT8 bundle."""

import subprocess
import sys
from pathlib import Path

import numpy
import onnxruntime

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_runs_in_a_virtualenv_without_torch(bundles, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, bin_ = str(venv / "bin" / "python"), venv / "bin"
    # the versions of this environment, so pip takes them from its cache
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"numpy=={numpy.__version__}",
                    f"onnxruntime=={onnxruntime.__version__}"], check=True)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True)
    (wheel,) = wheels.glob("edgefuse-*.whl")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)], check=True)
    code = ("import importlib.util, sys; assert importlib.util.find_spec('torch') is None, 'torch is installed'; "
            "import edgefuse.runtime, edgefuse.bundle, edgefuse.engines; from edgefuse.runtime import Runtime; "
            "from edgefuse.runtime.scenario import replay; assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True, cwd=str(tmp_path))
    assert out.stdout.strip() == "ok"
    # the whole device path: verify the bundle, load and warm its INT8 engines, replay a fault scenario
    scenario = tmp_path / "s.toml"
    scenario.write_text('duration_s = 6.0\n[[faults]]\nsensor = "radar"\nkind = "nan"\nstart_s = 2.0\nend_s = 4.0\n')
    run = subprocess.run([str(bin_ / "edgefuse"), "run", str(bundles[("ort", "int8")]), "--scenario", str(scenario),
                          "--data", "sensorscenes", "--seed", "1"], capture_output=True, text=True, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "radar nan" in run.stdout and "camera+lidar (20)" in run.stdout
