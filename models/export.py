"""ONNX export of registered models, and running them with ONNX Runtime.

``export_onnx`` writes the whole model (``forward``: patch -> logits per head), optionally with
the nnAudio mel inside the graph so the input is audio.  The engine needs the model in its
streaming form instead, two graphs: the segment encoder (patch -> embedding) and pooling +
heads (K embeddings -> logits, K dynamic); ``export_streaming`` writes those and
``OnnxRunner`` runs them with the same interface as ``TorchRunner``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.base import SegmentModel
from models.frontend import MelFrontend

OPSET = 17


class _Forward(nn.Module):
    """forward() with its dict flattened into a tuple in a fixed order (ONNX outputs are positional)."""

    def __init__(self, model: SegmentModel, names: list[str], frontend: bool):
        super().__init__()
        self.model = model
        self.names = names
        self.mel = MelFrontend(model.frontend) if frontend else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.mel is not None:
            x = self.mel(x)  # (B, samples) -> (B, n_mels, frames)
        out = self.model(x)
        return tuple(out[name] for name in self.names)


class _Encode(nn.Module):
    def __init__(self, model: SegmentModel):
        super().__init__()
        self.model = model

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return self.model.encode(patch)


class _PoolPredict(nn.Module):
    def __init__(self, model: SegmentModel, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.predict(self.model.pool(embeddings))
        return tuple(out[name] for name in self.names)


def output_names(model: SegmentModel, example: torch.Tensor) -> list[str]:
    """Heads first (in declaration order), then any ``aux_`` outputs."""
    with torch.inference_mode():
        keys = list(model(example).keys())
    return list(model.heads) + [k for k in keys if k not in model.heads]


def audio_samples(model: SegmentModel) -> int:
    """Samples whose centred mel has exactly ``input_frames`` frames."""
    fe = model.frontend
    return (model.input_frames - 1) * fe.hop_length + (0 if fe.center else fe.n_fft)


def example_input(
    model: SegmentModel, batch: int = 2, with_frontend: bool = False, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if with_frontend:
        return 0.1 * torch.randn(batch, audio_samples(model), generator=g)
    return torch.randn(batch, *model.input_shape, generator=g)


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str], axes
):
    module.eval()  # the exporter restores the module's training flag afterwards: keep it eval
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Negative-step slices are exported as they are rather than folded: harmless, noisy.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_onnx(model: SegmentModel, path: str | Path, with_frontend: bool = False) -> list[str]:
    """Write ``model`` as ONNX (dynamic batch); returns the output names in graph order."""
    model.eval()
    example = example_input(model, with_frontend=with_frontend)
    names = output_names(model, example_input(model))
    input_name = "audio" if with_frontend else "mel"
    axes = {input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    _export(_Forward(model, names, with_frontend), example, Path(path), [input_name], names, axes)
    return names


def export_streaming(model: SegmentModel, folder: str | Path) -> tuple[Path, Path]:
    """encoder.onnx (patch -> embedding) and pool_predict.onnx (embeddings (B, K, D) -> logits)."""
    folder = Path(folder)
    model.eval()
    patch = torch.randn(2, model.frontend.n_mels, model.segment_frames)
    with torch.inference_mode():
        embedding = model.encode(patch)
    names = list(model.heads)
    encoder, head = folder / "encoder.onnx", folder / "pool_predict.onnx"
    _export(
        _Encode(model),
        patch,
        encoder,
        ["mel"],
        ["embedding"],
        {"mel": {0: "batch"}, "embedding": {0: "batch"}},
    )
    stacked = torch.stack([embedding, embedding, embedding], dim=1)  # (2, 3, D): K is dynamic
    axes = {"embeddings": {0: "batch", 1: "segments"}, **{n: {0: "batch"} for n in names}}
    _export(_PoolPredict(model, names), stacked, head, ["embeddings"], names, axes)
    return encoder, head


def providers() -> list[str]:
    """CUDA when ONNX Runtime has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # ORT's workers spin-wait between runs by default; beside torch's mel on the same cores that
    # steals the CPU the next hop needs (p99 of the mel rose from 2 to 50 ms on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=providers())


class TorchRunner:
    """Runs a model's streaming parts with PyTorch (eager)."""

    backend = "torch"

    def __init__(self, model: SegmentModel, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.encode(patches.to(self.device))

    def pool_predict(self, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model.predict(self.model.pool(embeddings))
            return {name: out[name].float().cpu().numpy() for name in self.model.heads}


class OnnxRunner:
    """Runs a model's streaming parts with ONNX Runtime (CUDA provider when present)."""

    backend = "onnx"

    def __init__(self, model: SegmentModel, folder: str | Path, threads: int | None = None):
        self.model = model
        encoder, head = export_streaming(model, folder)
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
