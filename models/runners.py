"""What runs a model's streaming parts: the segment encoder (patch -> embedding) and pooling + heads.

The engine, ``analyze`` and the benchmarks all go through a ``Runner``; ``BACKENDS`` maps the
``--backend`` names to them:

- ``torch``: PyTorch, eager; a model with a streaming encoder (musicnn and what is built on it)
  encodes the windows of a stream sharing the work of their overlap (``encode_stream``);
- ``torch-whole``: the same, every window encoded whole (what ``torch`` did before; to compare);
- ``compile``: PyTorch with the encoder through ``torch.compile`` (the first call compiles;
  ``warm_up`` checks the result against eager mode, so a miscompiled encoder never runs);
- ``onnx``: ONNX Runtime (CUDA provider when present) on the two streaming graphs.  They come
  from the artifact folder when ``models export --streaming`` / ``train export`` wrote them
  there for these very weights (``onnx.json`` records the weights' digest), else from the cache
  (``~/.cache/moodstream/onnx/``), exported there once: a start never pays an export twice.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from models.base import SegmentModel
from models.export import (
    STREAMING_GRAPHS,
    current_streaming,
    max_difference_streaming,
    session,
    weights_digest,
    write_streaming,
)
from models.weights import cache_dir


class Runner(Protocol):
    backend: str
    model: SegmentModel

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, segment_frames) -> (B, embedding_dim)"""

    def pool_predict(self, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        """(B, K, embedding_dim) -> logits per head, as numpy"""

    def warm_up(self) -> None:
        """Run once on silence, so the first real hop pays no lazy set-up."""

    def streaming_encoder(self):
        """The model's streaming encoder when this runner uses it (``SegmentModel.streaming_encoder``),
        else None: each window is ``encode``d whole."""


def _silence(model: SegmentModel) -> torch.Tensor:
    return torch.zeros((1, model.frontend.n_mels, model.segment_frames))


class TorchRunner:
    """PyTorch, eager."""

    backend = "torch"

    def __init__(self, model: SegmentModel, device: str | torch.device = "cpu", threads: int | None = None):
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.encode(patches.to(self.device))

    def pool_predict(self, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model.predict(self.model.pool(embeddings.to(self.device)))
            return {name: out[name].float().cpu().numpy() for name in self.model.heads}

    def warm_up(self) -> None:
        self.pool_predict(self.encode(_silence(self.model)).unsqueeze(1))

    def streaming_encoder(self):
        return self.model.streaming_encoder() if self.streams else None

    streams = True


class WholeWindowRunner(TorchRunner):
    """PyTorch, eager, every window encoded whole (no streaming encoder)."""

    backend = "torch-whole"
    streams = False


class CompiledRunner(TorchRunner):
    """PyTorch with the segment encoder through ``torch.compile`` (pooling + heads stay eager)."""

    backend = "compile"
    streams = False  # the compiled graph is the whole-window encoder

    def __init__(self, model: SegmentModel, device: str | torch.device = "cpu", threads: int | None = None):
        super().__init__(model, device)
        self._encode = torch.compile(self.model.encode, dynamic=False)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._encode(patches.to(self.device))

    def warm_up(self, atol: float = 1e-3) -> None:
        """Compile (tens of seconds on a CPU, with a C++ compiler), then compare with eager mode."""
        patch = torch.randn(1, self.model.frontend.n_mels, self.model.segment_frames)
        compiled = self.encode(patch)
        eager = super().encode(patch)
        diff = float((compiled - eager).abs().max())
        if not diff <= atol:
            raise RuntimeError(f"the compiled encoder differs from eager mode by {diff:.2g}")
        super().warm_up()


# The exported graphs' largest difference from PyTorch on random input that a runner accepts
# (the tests hold every registered model's to 1e-4; trained heads may have larger weights).
ONNX_CHECK_ATOL = 1e-3


def streaming_graphs(model: SegmentModel) -> tuple[Path, Path]:
    """The model's encoder and pooling + heads graphs: the artifact's own, else the cache's (exported once)."""
    digest = weights_digest(model)
    artifact = model.artifact_folder
    if artifact is not None and current_streaming(artifact, digest):
        return artifact / STREAMING_GRAPHS[0], artifact / STREAMING_GRAPHS[1]
    folder = cache_dir() / "onnx" / f"{model.registry_name or type(model).__name__}-{digest[:16]}"
    if not current_streaming(folder, digest):
        print(f"{model.registry_name}: exporting its ONNX graphs to {folder} (once)", file=sys.stderr)
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Exported beside, then moved in one rename: another process never sees half a folder.
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            encoder, head = write_streaming(model.cpu(), scratch)
            # A graph whose traced branches do not hold for the model never runs (nor is kept).
            worst = max_difference_streaming(model, encoder, head)
            if not worst <= ONNX_CHECK_ATOL:
                raise RuntimeError(
                    f"its exported ONNX graphs differ from PyTorch by {worst:.2g} "
                    f"(more than {ONNX_CHECK_ATOL:g}); run it with --backend torch"
                )
            shutil.rmtree(folder, ignore_errors=True)
            Path(scratch).rename(folder)
            Path(scratch).mkdir()  # for TemporaryDirectory's own clean-up
    return folder / STREAMING_GRAPHS[0], folder / STREAMING_GRAPHS[1]


class OnnxRunner:
    """ONNX Runtime on the two streaming graphs (CUDA provider when present)."""

    backend = "onnx"

    def __init__(self, model: SegmentModel, device: str | torch.device = "cpu", threads: int | None = None):
        self.model = model.eval().cpu()
        encoder, head = streaming_graphs(self.model)
        self.encoder = session(encoder, threads)
        self.head = session(head, threads)
        self.names = list(model.heads)
        self.providers = self.encoder.get_providers()

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        (embedding,) = self.encoder.run(None, {"mel": patches.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(embedding)

    def pool_predict(self, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        outs = self.head.run(None, {"embeddings": embeddings.detach().cpu().numpy().astype(np.float32)})
        return dict(zip(self.names, outs, strict=True))

    def warm_up(self) -> None:
        self.pool_predict(self.encode(_silence(self.model)).unsqueeze(1))

    def streaming_encoder(self):
        return None


BACKENDS: dict[str, type] = {
    "torch": TorchRunner,
    "torch-whole": WholeWindowRunner,
    "onnx": OnnxRunner,
    "compile": CompiledRunner,
}


def make_runner(
    model: SegmentModel,
    backend: str = "torch",
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> Runner:
    """The runner of ``backend`` for ``model``; ValueError naming the backends for an unknown one."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[backend](model, device, threads)
