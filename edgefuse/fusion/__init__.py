"""Fusion models for N sensors (torch): encoders, fusion operators, and every fusion strategy."""

from edgefuse.fusion.encoders import build_encoder
from edgefuse.fusion.models import (
    FAMILIES,
    FUSIONS,
    EarlyFusion,
    FusionModel,
    ImputationFusion,
    LateFusion,
    MidFusion,
    MultimodalTransformer,
    PerSubsetModels,
    build_model,
    model_from_config,
)

__all__ = [
    "FAMILIES",
    "FUSIONS",
    "EarlyFusion",
    "FusionModel",
    "ImputationFusion",
    "LateFusion",
    "MidFusion",
    "MultimodalTransformer",
    "PerSubsetModels",
    "build_encoder",
    "build_model",
    "model_from_config",
]
