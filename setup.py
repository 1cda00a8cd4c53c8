"""edgefuse: the package is edgefuse/; kernels/, engines/ and calibration/ install as edgefuse.* (see DESIGN.md)."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "edgefuse" / "__init__.py").read_text()).group(1)

# the three top-level folders are installed inside the edgefuse namespace, never at top level
PACKAGE_DIR = {
    "edgefuse": "edgefuse",
    "edgefuse.kernels": "kernels",
    "edgefuse.engines": "engines",
    "edgefuse.calibration": "calibration",
}


def _subpackages(pkg: str, folder: str) -> list[str]:
    root = HERE / folder
    return [pkg] + sorted(
        pkg + "." + ".".join(p.parent.relative_to(root).parts) for p in root.rglob("__init__.py") if p.parent != root
    )


PACKAGES = [p for pkg, folder in PACKAGE_DIR.items() for p in _subpackages(pkg, folder)]

setup(
    name="edgefuse",
    version=VERSION,
    description=(
        "Multimodal sensor-fusion models from PyTorch to INT8 edge engines that keep answering when sensors drop out"
    ),
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={pkg: folder for pkg, folder in PACKAGE_DIR.items()},
    package_data={"edgefuse": ["py.typed"]},
    # the device install: specs, bundles, ONNX Runtime engines, the runtime, `edgefuse run` / `info`
    install_requires=[
        "numpy>=1.24",
        # calibration (the build extra) needs 1.27 (edgefuse.calibration.quantize.MIN_ONNXRUNTIME), which has
        # no Python 3.10 wheels; on 3.10 (JetPack 6) a device loads and runs bundles with older ones
        "onnxruntime>=1.27; python_version >= '3.11'",
        "onnxruntime>=1.18; python_version < '3.11'",
        "tomli>=2; python_version < '3.11'",  # scenario and policy files (tomllib from 3.11)
    ],
    extras_require={
        # train, eval, export, calibrate, build. A Jetson keeps JetPack's own torch: the a0 admits JetPack
        # 6.0's 2.3.0a0+nv24.03 build, which ">=2.3" would replace
        "build": ["torch>=2.3.0a0", "onnx>=1.16", "onnxscript>=0.1", "tqdm>=4.60"],
        "gpu": ["triton>=3.0; platform_system == 'Linux'"],
        "trt": ["tensorrt>=10", "cuda-python>=12"],
        "plot": ["matplotlib>=3.7"],
        # ROS 2 bags (read, record) and CompressedImage decoding; rclpy comes with ROS 2 itself
        "ros": ["rosbags>=0.10", "pillow>=10"],
        "live": ["foxglove-sdk>=0.16"],
        # what make bench compares ONNX Runtime with
        "bench": ["openvino>=2024.0"],
        "test": ["pytest>=8", "pytest-benchmark>=4", "pytest-xdist>=3", "ruff==0.17.6", "websockets>=13"],
    },
    entry_points={"console_scripts": ["edgefuse=edgefuse.cli:main"]},
)
