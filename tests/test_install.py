"""Install layout: edgefuse.{kernels,engines,calibration} and nothing generic at top level; light import."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_subpackages_import_from_the_edgefuse_namespace():
    import edgefuse.calibration
    import edgefuse.engines
    import edgefuse.kernels

    assert Path(edgefuse.kernels.__file__).parent.name == "kernels"
    # outside the source tree (which pytest puts on sys.path), no top-level package of these names exists
    code = (
        "import importlib.util as u; bad = [n for n in ('kernels', 'engines', 'calibration') if u.find_spec(n)]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_import_edgefuse_does_not_import_torch():
    """Nor does the command line's parser (every `edgefuse` command builds it first)."""
    code = (
        "import sys, edgefuse, edgefuse.data, edgefuse.cli; edgefuse.cli.build_parser(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_wheel_installs_only_the_edgefuse_namespace(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("edgefuse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert all(t == "edgefuse" or t.startswith("edgefuse-") for t in tops), tops
    for sub in ("kernels", "engines", "calibration"):
        assert f"edgefuse/{sub}/__init__.py" in names
    assert "edgefuse/py.typed" in names
    # the wheel alone (no source tree on the path) imports the three subpackages
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    code = "import edgefuse.kernels, edgefuse.engines, edgefuse.calibration, edgefuse; print(edgefuse.kernels.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip().startswith(str(target))
    assert not (target / "kernels").exists() and not (target / "engines").exists()
    # the wheel's torch requirement keeps JetPack's own CUDA builds (pip would otherwise replace them)
    from packaging.requirements import Requirement

    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    reqs = [
        Requirement(line.split(":", 1)[1].strip())
        for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    (torch_req,) = [r for r in reqs if r.name == "torch"]
    for jetpack_torch in ("2.3.0a0+40ec155e58.nv24.03", "2.5.0a0+872d972e41.nv24.08"):  # JetPack 6.0, 6.1
        assert torch_req.specifier.contains(jetpack_torch, prereleases=True), (torch_req, jetpack_torch)
    assert not torch_req.specifier.contains("2.1.0", prereleases=True)
