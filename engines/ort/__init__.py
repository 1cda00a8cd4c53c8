"""ONNX Runtime backend: ``runner`` runs a graph, ``loader`` writes what the builder ships beside it."""

from edgefuse.engines.ort.loader import cache_path_for, import_ort, write_optimized_cache
from edgefuse.engines.ort.runner import OrtEngine, resolve_providers

__all__ = ["OrtEngine", "cache_path_for", "import_ort", "resolve_providers", "write_optimized_cache"]
