"""ONNX export of registered models and artifacts.

``export_onnx`` writes the whole model (``forward``: patch -> logits per head), optionally with
the nnAudio mel inside the graph so the input is audio.  The engine needs the model in its
streaming form instead, two graphs: the segment encoder (patch -> embedding) and pooling +
heads (K embeddings -> logits, K dynamic); ``export_streaming`` writes those, and
``models.runners.OnnxRunner`` runs them.  ``export_command`` is the one export command behind
``python -m models export`` and ``python -m train export``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.base import SegmentModel
from models.frontend import MelFrontend

OPSET = 17
STREAMING_GRAPHS = ("encoder.onnx", "pool_predict.onnx")
STAMP = "onnx.json"  # the weights, opset and graph version the streaming graphs beside it were exported from
# What the exporter writes, in versions: graphs of an older one are exported again.
# 2: musicnn's dead filters left out (``_LiveFilters._live_filters``), 1/10 of its work.
# 3: its mid end's dead filters too (``Musicnn._mid_live``).
GRAPH_VERSION = 3


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
        # The tracer warns at every Python branch on a shape or a weight (musicnn's live filters,
        # its few-frames path): a page of warnings on a user's first ONNX run.  Each branch is
        # fixed for the graph on purpose, and what the graph computes is compared with PyTorch
        # before it is used (``models.runners.streaming_graphs``, ``export --check``).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
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


def weights_digest(model: SegmentModel) -> str:
    """sha256 of the model's state (names and values): which weights a graph was exported from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def current_streaming(folder: Path, digest: str) -> bool:
    """Whether ``folder`` holds both streaming graphs, exported from the weights with ``digest``."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    same = stamp == {"weights_sha256": digest, "opset": OPSET, "graph": GRAPH_VERSION}
    return same and all((folder / name).is_file() for name in STREAMING_GRAPHS)


def write_streaming(model: SegmentModel, folder: str | Path) -> tuple[Path, Path]:
    """``export_streaming`` into ``folder``, stamped with the weights the graphs hold (``STAMP``)."""
    folder = Path(folder)
    encoder, head = export_streaming(model, folder)
    stamp = {"weights_sha256": weights_digest(model), "opset": OPSET, "graph": GRAPH_VERSION}
    (folder / STAMP).write_text(json.dumps(stamp) + "\n")
    return encoder, head


def max_difference_forward(model: SegmentModel, path: Path, with_frontend: bool) -> float:
    """ONNX Runtime vs PyTorch on random input (batch 3): the largest absolute difference of any output."""
    from models.frontend import MelFrontend

    names = output_names(model, example_input(model))
    x = example_input(model, batch=3, with_frontend=with_frontend, seed=1)
    with torch.inference_mode():
        expected = model(MelFrontend(model.frontend)(x) if with_frontend else x)
    got = session(path).run(None, {"audio" if with_frontend else "mel": x.numpy()})
    return max(float(np.abs(g - expected[n].numpy()).max()) for n, g in zip(names, got, strict=True))


def max_difference_streaming(model: SegmentModel, encoder: Path, head: Path) -> float:
    """The streaming graphs vs PyTorch: encoder (batch 3) and pooling + heads over K = 3 segments."""
    g = torch.Generator().manual_seed(1)
    patch = torch.randn(3, model.frontend.n_mels, model.segment_frames, generator=g)
    with torch.inference_mode():
        embedding = model.encode(patch)
        stacked = embedding.unsqueeze(0)  # (1, 3, D)
        expected = model.predict(model.pool(stacked))
    (got_embedding,) = session(encoder).run(None, {"mel": patch.numpy()})
    got = session(head).run(None, {"embeddings": stacked.numpy()})
    worst = float(np.abs(got_embedding - embedding.numpy()).max())
    return max(
        [worst]
        + [float(np.abs(o - expected[n].numpy()).max()) for n, o in zip(model.heads, got, strict=True)]
    )


def export_command(
    model: SegmentModel, out: Path, *, streaming: bool, with_frontend: bool, check: bool
) -> int:
    """``models export`` / ``train export``: write ``out`` (a .onnx file, or with ``streaming`` a
    folder of the two graphs), say what was written, and with ``check`` compare ONNX Runtime with
    PyTorch (exit 1 beyond 1e-4)."""
    model.eval()
    if streaming:
        encoder, head = write_streaming(model, out)
        print(f"wrote {encoder} and {head} (what --backend onnx runs; {STAMP} records their weights)")
        worst = max_difference_streaming(model, encoder, head) if check else None
    else:
        names = export_onnx(model, out, with_frontend=with_frontend)
        kind = "audio" if with_frontend else "mel"
        print(
            f"wrote {out}: input '{kind}' {tuple(example_input(model, 1, with_frontend).shape)[1:]}, outputs {names}"
        )
        worst = max_difference_forward(model, Path(out), with_frontend) if check else None
    if worst is not None:
        print(f"ONNX Runtime vs PyTorch: max abs difference {worst:.2e}")
        return 0 if worst <= 1e-4 else 1
    return 0


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
