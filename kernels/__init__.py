"""edgefuse.kernels: fused fusion ops (Triton on CUDA, pure-torch references elsewhere).

Dispatch: CUDA tensors run the Triton kernel, CPU tensors run the reference. The
environment variable ``EDGEFUSE_KERNELS=triton|interpret|reference`` overrides it
(``interpret`` runs the Triton kernels on CPU through Triton's interpreter; it must be
set before this package is first imported).
"""

import os as _os

if _os.environ.get("EDGEFUSE_KERNELS", "").strip().lower() == "interpret":
    # Triton decides interpreted vs compiled when a kernel is decorated; the kernel modules are
    # imported lazily, on the first Triton call, so setting this here is in time.
    _os.environ.setdefault("TRITON_INTERPRET", "1")

from edgefuse.kernels.ops import backend, bilinear, fused_projection, gated_fusion, mfb
from edgefuse.kernels.reference import (
    bilinear_reference,
    fused_projection_reference,
    gated_fusion_reference,
    mfb_reference,
    mfb_reference_pool,
)

__all__ = [
    "backend",
    "bilinear",
    "bilinear_reference",
    "fused_projection",
    "fused_projection_reference",
    "gated_fusion",
    "gated_fusion_reference",
    "mfb",
    "mfb_reference",
    "mfb_reference_pool",
]
