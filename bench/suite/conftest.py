"""Fixtures of the pytest-benchmark suite: the default model, its runners, one hop of audio.

The suite is kept out of the default test run (``testpaths = ["tests"]``); run it with
``python -m pytest bench/suite -n 0 --benchmark-only``.  ``tests/bench/test_suite.py`` runs it once per
CI run with ``--benchmark-disable`` (each test once, its checks but no timing) so it cannot rot.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from bench.alternatives import one_blas_thread
from models.export import audio_samples
from models.runners import OnnxRunner, TorchRunner
from realtime.analyzer import Windowing, effective_windows
from realtime.publisher import Publisher

MODEL = "default"


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """As ``python -m bench latency``: numpy's spinning BLAS workers would slow the next torch call."""
    with one_blas_thread():
        yield


@pytest.fixture(scope="session")
def model():
    return models.resolve(MODEL).eval()


@pytest.fixture(scope="session")
def context_segments(model) -> int:
    """K: how many cached embeddings the engine pools for this model."""
    return effective_windows(model, Windowing())[2]


@pytest.fixture(scope="session")
def hop_audio(model) -> np.ndarray:
    """One hop of noise at the model's rate (0.992 s): no stage's cost depends on the music."""
    hop_frames = effective_windows(model, Windowing())[0]
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(hop_frames * model.frontend.hop_length)).astype(np.float32)


@pytest.fixture(scope="session")
def window_audio(model) -> np.ndarray:
    """The audio of one segment (3 s): what a hand-rolled loop turns into a mel every hop."""
    rng = np.random.default_rng(1)
    return (0.1 * rng.standard_normal(audio_samples(model))).astype(np.float32)


@pytest.fixture(scope="session")
def patch(model) -> torch.Tensor:
    return torch.randn(
        1, model.frontend.n_mels, model.segment_frames, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture(scope="session")
def torch_runner(model) -> TorchRunner:
    return TorchRunner(model, "cpu")


@pytest.fixture(scope="session")
def onnx_runner() -> OnnxRunner:
    return OnnxRunner(models.resolve(MODEL).eval())


@pytest.fixture(scope="session")
def publisher():
    with Publisher("tcp://127.0.0.1:0") as pub:
        yield pub
