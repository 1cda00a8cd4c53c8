import pytest

from edgefuse.build import build_bundle
from tests.conftest import shared


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, small_scenes, tmp_path_factory):
    """The tiny checkpoint's FP32 ORT bundle (the runtime tests build the same one under the same key)."""
    with shared(tmp_path_factory, "rt-bundle-ort-fp32") as path:
        if not (path / "manifest.json").is_file():
            build_bundle(
                tiny_checkpoint,
                path,
                backend="ort",
                precision="fp32",
                data=small_scenes,
                calib_size=64,
                max_drop=100.0,
                progress=False,
            )
    return path
