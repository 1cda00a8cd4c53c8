"""TensorRT backend: ``loader`` builds plans from ONNX graphs, ``runner`` loads and runs them."""

from edgefuse.engines.trt.loader import INSTALL, build_plan, import_tensorrt
from edgefuse.engines.trt.runner import SharedDeviceMemory, TrtEngine

__all__ = ["INSTALL", "SharedDeviceMemory", "TrtEngine", "build_plan", "import_tensorrt"]
