"""Real bundles of the tiny checkpoint, shared by the runtime's tests: ONNX Runtime INT8 and FP32, torch."""

import pytest

from edgefuse.build import build_bundle
from tests.conftest import shared


@pytest.fixture(scope="session")
def bundles(tiny_checkpoint, small_scenes, tmp_path_factory):
    out = {}
    for backend, precision in (("ort", "int8"), ("ort", "fp32"), ("torch", "fp32")):
        with shared(tmp_path_factory, f"rt-bundle-{backend}-{precision}") as path:
            if not (path / "manifest.json").is_file():
                build_bundle(
                    tiny_checkpoint,
                    path,
                    backend=backend,
                    precision=precision,
                    data=small_scenes,
                    calib_size=64,
                    max_drop=100.0,
                    progress=False,
                    strict=True,  # the INT8 engines, even where FP32 runs faster here
                    latency_iters=20,
                )
        out[(backend, precision)] = path
    return out
