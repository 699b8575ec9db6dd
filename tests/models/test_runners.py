"""Runners: one protocol, a table of backends, and ONNX graphs exported once (into the artifact or the cache)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import models
from models.artifact import DEFAULT
from models.export import GRAPH_VERSION, STAMP
from models.runners import BACKENDS, make_runner
from realtime.analyzer import Analyzer, Windowing
from tests.conftest import REPO

CLIP = "4q/audio/Q3/MT0000044741.ogg"


def forbid_onnx_export(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.onnx.export was called")

    monkeypatch.setattr(torch.onnx, "export", refuse)


def windows(model: models.SegmentModel, backend: str, audio: np.ndarray, rate: int) -> list[dict]:
    analyzer = Analyzer(model, rate, Windowing(hop_s=1.0), "cpu", make_runner(model, backend))
    return [w.outputs for w in analyzer.feed(audio) + analyzer.finish()]


def test_an_exported_artifact_runs_on_onnx_without_exporting_and_as_torch_does(
    tmp_path, monkeypatch, shared_data
):
    artifact = tmp_path / "mood"
    shutil.copytree(DEFAULT, artifact)
    proc = subprocess.run(
        [sys.executable, "-m", "models", "export", str(artifact), "--streaming", "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "encoder.onnx" in proc.stdout and "max abs difference" in proc.stdout
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))  # nothing to find there
    forbid_onnx_export(monkeypatch)
    audio, rate = sf.read(shared_data / CLIP, dtype="float32", frames=12 * 16000)
    onnx = windows(models.resolve(str(artifact)), "onnx", audio, rate)
    eager = windows(models.resolve(str(artifact)), "torch", audio, rate)
    assert len(onnx) == len(eager) == 10
    for a, b in zip(onnx, eager, strict=True):
        assert a.keys() == b.keys()
        assert max(float(np.abs(a[h] - b[h]).max()) for h in a) < 1e-4
    assert not (tmp_path / "cache" / "onnx").exists()  # the artifact's own graphs ran


def test_graphs_for_other_weights_are_not_used_and_a_cache_export_happens_once(tmp_path, monkeypatch):
    artifact = tmp_path / "mood"
    shutil.copytree(DEFAULT, artifact)
    model = models.resolve(str(artifact))
    from models.export import write_streaming

    write_streaming(model, artifact)
    with torch.no_grad():  # the artifact retrained after its export: its graphs are stale
        next(model.head_layer("valence_arousal").parameters()).add_(0.5)
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    make_runner(model, "onnx")
    (exported,) = (tmp_path / "cache" / "onnx").iterdir()
    assert exported.name.startswith("segment-attention-")
    forbid_onnx_export(monkeypatch)
    make_runner(model, "onnx")  # the second start finds the cache's graphs


def test_graphs_of_an_older_exporter_are_exported_again(tmp_path, monkeypatch):
    """A stamp without this exporter's graph version (graphs that convolved musicnn's dead filters
    too, 10x the work) is stale: the next start exports them again."""
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    model = models.resolve("default")
    make_runner(model, "onnx")
    (folder,) = (tmp_path / "cache" / "onnx").iterdir()
    stamp = json.loads((folder / STAMP).read_text())
    assert stamp.pop("graph") == GRAPH_VERSION
    (folder / STAMP).write_text(json.dumps(stamp))
    make_runner(model, "onnx")
    assert json.loads((folder / STAMP).read_text())["graph"] == GRAPH_VERSION


def test_a_cache_export_is_quiet_and_refuses_graphs_that_differ_from_pytorch(tmp_path, monkeypatch, recwarn):
    """The tracer warns at each Python branch on a shape or a weight: not shown to a user.  But a
    branch that does not hold for other batches (here: the exporter's example is a batch of 2)
    makes graphs that compute something else: refused, and not kept in the cache."""
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    model = models.resolve("default")
    make_runner(model, "onnx")  # the default model's branches hold: exported, checked, kept
    assert not [w for w in recwarn if issubclass(w.category, torch.jit.TracerWarning)]
    (kept,) = (tmp_path / "cache" / "onnx").iterdir()
    shutil.rmtree(kept)
    encode = model.encode
    model.encode = lambda patch: encode(patch) + float(patch.shape[0] != 2)  # frozen as 0 in the graph
    with pytest.raises(RuntimeError, match=r"ONNX graphs differ from PyTorch by 1 \(more than 0.001\)"):
        make_runner(model, "onnx")
    assert list((tmp_path / "cache" / "onnx").iterdir()) == []


def test_the_backend_table_and_an_unknown_backend():
    assert set(BACKENDS) == {"torch", "torch-whole", "onnx", "compile"}
    with pytest.raises(
        ValueError, match="unknown backend 'tflite'; available: torch, torch-whole, onnx, compile"
    ):
        make_runner(models.build("va-cnn"), "tflite")
    runner = make_runner(models.build("va-cnn"), "torch")
    runner.warm_up()
    assert runner.backend == "torch" and set(
        runner.pool_predict(runner.encode(torch.zeros(1, 80, 469)).unsqueeze(1))
    ) == {"valence_arousal"}
