"""PyTorch backend: the checkpoint's model for one modality subset, eager or CUDA-graph replay.

On a GPU the fusion modules run the Triton kernels (``edgefuse.kernels`` dispatches CUDA
tensors to them). ``cuda_graph=True`` captures one graph per batch size after a warm run
and replays it, removing Python and launch overhead. ``precision='fp16'`` runs the model cast
to float16 (its input statistics stay float32: inputs are normalised in float32 first), so
the kernels run their float16 variants; feeds and logits stay as the specs say (float32
logits). fp16 is for a GPU: on a CPU, which has little float16 arithmetic, it runs slower than
fp32 (the engine warns). Needs torch (the training stack).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgefuse.engines.base import BackendUnavailable, Engine, TensorSpec
from edgefuse.errors import EdgefuseError

#: precision name -> the torch dtype the model computes in
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16"}


class TorchEngine(Engine):
    """Args: checkpoint folder, the subset's modality names, device ('cpu', 'cuda', 'cuda:N'; None:
    the current CUDA device when there is one, else the CPU), cuda_graph (CUDA only; ignored on
    the CPU), intra-op threads, name, precision ('fp32' or 'fp16'), and ``part`` for a split
    bundle (mid-fusion models): ``encoder:<sensor>`` (the sensor's input -> ``embedding [B, D]``)
    or ``head`` (``embeddings [B, N, D]`` + ``present [B, N]`` -> logits); None: the whole model
    on ``modalities``."""

    backend = "torch"

    def __init__(
        self,
        checkpoint: str | Path,
        modalities: Sequence[str],
        device: str | None = None,
        cuda_graph: bool = False,
        threads: int | None = None,
        name: str | None = None,
        precision: str = "fp32",
        part: str | None = None,
    ) -> None:
        super().__init__()
        if precision not in PRECISION_DTYPES:
            raise EdgefuseError(f"torch engine: precision must be one of {sorted(PRECISION_DTYPES)}, got {precision!r}")
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailable("the torch backend needs PyTorch: pip install torch") from e
        from edgefuse.checkpoint import load_checkpoint

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        kind = torch.device(device).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"torch backend: device {device!r} asked for, but no CUDA device is visible")
        if precision == "fp16" and kind == "cpu":
            warnings.warn(
                "torch engine: precision 'fp16' on the CPU runs slower than 'fp32' (CPUs have little float16 "
                "arithmetic): fp16 is for a GPU. On a CPU, use 'fp32' or an ONNX Runtime bundle",
                RuntimeWarning,
                stacklevel=2,
            )
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model, _ = load_checkpoint(checkpoint, map_location=device)
        self.model.to(device=device, dtype=getattr(torch, PRECISION_DTYPES[precision])).eval()
        self.precision = precision
        unknown = [m for m in modalities if m not in self.model.names]
        if unknown or not modalities:
            raise EdgefuseError(
                f"torch engine: modalities {list(modalities)} must be a non-empty subset of {self.model.names}"
            )
        self.modalities = [n for n in self.model.names if n in set(modalities)]
        self.device, self.use_cuda_graph = device, cuda_graph and kind == "cuda"
        self.name = name or "+".join(self.modalities)
        specs = {s.name: s for s in self.model.specs}
        self.inputs = [TensorSpec(n, (-1, *specs[n].shape), specs[n].dtype) for n in self.modalities]
        self.outputs = [TensorSpec("logits", (-1, self.model.num_classes), "float32")]
        self._fn, self._out = self.model, "logits"
        if part is not None:
            self._split_part(part, specs)
        self.part = part
        self._graphs: dict[int, tuple[object, dict, object]] = {}

    def _split_part(self, part: str, specs) -> None:
        """One engine of a split bundle: a sensor's encoder (and its projection), or the fusion head."""
        model, torch = self.model, self._torch
        if not (hasattr(model, "project") and hasattr(model, "op") and hasattr(model, "head")):
            raise EdgefuseError(
                f"torch engine: part {part!r} needs a mid-fusion model, got fusion {model.fusion_name!r}"
            )
        n, d = len(model.names), model.dim
        if part == "head":
            self.inputs = [TensorSpec("embeddings", (-1, n, d), "float32"), TensorSpec("present", (-1, n), "bool")]
            self.modalities = ["embeddings", "present"]
            cast = next(model.parameters()).dtype

            def head(x):
                return model.head(model.op(x["embeddings"].to(cast), x["present"]))

            self._fn = head
        elif part.startswith("encoder:") and part[len("encoder:") :] in model.names:
            name = part[len("encoder:") :]
            index = model.names.index(name)
            self.inputs = [TensorSpec(name, (-1, *specs[name].shape), specs[name].dtype)]
            self.outputs = [TensorSpec("embedding", (-1, d), "float32")]
            self.modalities, self._out = [name], "embedding"

            def encoder(x):
                v = x[name]
                return model.project.project_one(index, model.encoders[name](v.float() if v.is_floating_point() else v))

            self._fn = encoder
        else:
            raise EdgefuseError(
                f"torch engine: part must be 'head' or 'encoder:<sensor>' of {model.names}, got {part!r}"
            )
        del torch

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = next(iter(feeds.values())).shape[0]
        with torch.inference_mode():
            if not self.use_cuda_graph:
                x = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.modalities}
                return {self._out: self._fn(x).float().cpu().numpy()}
            with torch.cuda.device(self.device):  # capture and replay on the engine's GPU ('cuda:1' too)
                if batch not in self._graphs:
                    static = {
                        n: torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.modalities
                    }
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        for _ in range(2):  # warm: Triton compiles, cuBLAS picks algorithms
                            self._fn(static)
                    torch.cuda.current_stream().wait_stream(s)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        out = self._fn(static)
                    self._graphs[batch] = (graph, static, out)
                graph, static, out = self._graphs[batch]
                for n in self.modalities:
                    static[n].copy_(torch.from_numpy(np.ascontiguousarray(feeds[n])), non_blocking=True)
                graph.replay()
            return {self._out: out.float().cpu().numpy()}

    def close(self) -> None:
        self._graphs.clear()
        super().close()
