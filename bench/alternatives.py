"""What a user would otherwise write, timed hop by hop beside the engine's own path, in one run.

Every pipeline takes the same hop of audio (0.992 s for the default model) and returns the
hop's head probabilities; each is timed in two steps: ``mel`` (audio to the model's mel input)
and ``model`` (the rest: patch, segment encoder, pooling, heads, sigmoid).  Smoothing and
publishing are the same whatever computed the probabilities, and are left out.

- ``librosa+torch``: the hand-rolled loop: keep the last segment of audio (3 s), and every
  hop compute ``librosa.feature.melspectrogram`` of the whole window, the model's log
  compression, and the PyTorch model in eager mode (``model(patch)``).
- ``torchaudio+torch``: the same with ``torchaudio.transforms.MelSpectrogram``, where
  torchaudio imports.
- ``nnaudio-window+torch``: the same with our one-pass nnAudio ``MelFrontend`` on the whole
  window: what streaming the mel saves, apart from which library computes it.
- ``streaming+torch``, **ours**: the engine's default path, ``realtime.analyzer.Analyzer`` with
  the torch backend: ``StreamingMel`` computes only the hop's new frames; the encoder runs on
  the newest segment, musicnn's streaming encoder computing its front end only for the frames
  new since the last window and the window's edges, and the embedding is cached for the pooling.
- ``streaming+onnx``: the engine with ONNX Runtime (``OnnxRunner``).

The pipelines take turns within each hop (the order rotates hop by hop), so a busy moment of
the machine falls on all of them alike.  Ratios are the pipeline's time over ours: 3.0 means
three times slower than ours.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

import models
from bench.report import percentiles
from models import SegmentModel, probabilities
from models.frontend import FrontendConfig, MelFrontend
from models.runners import OnnxRunner, TorchRunner
from realtime.analyzer import Analyzer, Windowing, effective_windows

OURS = "streaming+torch"
HAND_ROLLED = "librosa+torch"
TARGET_RATIO = 3.0  # issue 6: ours at least 3x faster per hop than the hand-rolled loop
PART_STAGES = ("mel", "model")
STAGES = (*PART_STAGES, "hop")


class Unsupported(RuntimeError):
    """A pipeline that cannot run here; its message is the reason printed as "skipped: ..."."""


def _librosa_conventions(fe: FrontendConfig, library: str) -> None:
    if (fe.window, fe.mel_norm, fe.pad_mode) != ("hann", "slaney", "reflect"):
        raise Unsupported(f"{library} has no {fe.window}/{fe.mel_norm}/{fe.pad_mode} frontend (Essentia's)")


def scale(mel: np.ndarray | torch.Tensor, fe: FrontendConfig):
    """The model's compression of a power mel, as a user writes it (numpy or torch)."""
    lib = torch if isinstance(mel, torch.Tensor) else np
    if fe.scaling == "log10_1p":  # musicnn: np.log10(10000 * mel + 1)
        return lib.log10(1.0 + fe.log_gain * mel)
    if fe.scaling == "db":
        floor = 10.0 ** (fe.db_floor / fe.db_scale)
        return fe.db_scale * lib.log10(lib.maximum(mel, lib.asarray(floor, dtype=mel.dtype)))
    return mel


def librosa_mel(window: np.ndarray, fe: FrontendConfig) -> np.ndarray:
    """(samples,) -> (n_mels, frames) float32: librosa's mel with the frontend's parameters.

    ``pad_mode="reflect"`` is librosa's default before 0.10 (musicnn was trained with it);
    0.10 changed the default to zeros, which only changes the first and last frames.
    """
    import librosa

    _librosa_conventions(fe, "librosa")
    mel = librosa.feature.melspectrogram(
        y=window,
        sr=fe.sample_rate_hz,
        n_fft=fe.n_fft,
        hop_length=fe.hop_length,
        window="hann",
        center=fe.center,
        pad_mode="reflect",
        power=fe.power,
        n_mels=fe.n_mels,
        fmin=fe.f_min_hz,
        fmax=fe.f_max_hz,
        htk=False,
        norm="slaney",
    )
    return scale(mel, fe)


def torchaudio_mel(fe: FrontendConfig):
    """torchaudio's ``MelSpectrogram`` with the frontend's parameters, or ``Unsupported``(why)."""
    try:
        import torchaudio
    except Exception as exc:  # the PyPI build does not load against every torch: any error counts
        raise Unsupported(f"torchaudio not importable ({type(exc).__name__}: {exc})") from None
    _librosa_conventions(fe, "torchaudio")
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=fe.sample_rate_hz,
        n_fft=fe.n_fft,
        hop_length=fe.hop_length,
        f_min=fe.f_min_hz,
        f_max=fe.f_max_hz,
        n_mels=fe.n_mels,
        window_fn=torch.hann_window,  # periodic, as librosa's
        power=fe.power,
        center=fe.center,
        pad_mode="reflect",
        norm="slaney",
        mel_scale="slaney",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class WindowPipeline:
    """The hand-rolled loop: the last segment of audio, its whole mel every hop, the eager model."""

    def __init__(self, name: str, model: SegmentModel, device: torch.device, mel):
        self.name, self.model, self.device, self._mel = name, model.eval().to(device), device, mel
        fe = model.frontend
        # the samples whose one-pass mel has exactly segment_frames frames (3 s: 187 for musicnn)
        samples = (model.segment_frames - 1) * fe.hop_length + (0 if fe.center else fe.n_fft)
        self.window = np.zeros(samples, dtype=np.float32)

    def step(self, hop: np.ndarray) -> tuple[dict[str, np.ndarray], float, float]:
        t0 = time.perf_counter()
        self.window = np.concatenate([self.window[hop.size :], hop])
        mel = self._mel(self.window)  # (n_mels, segment_frames)
        _sync(self.device)
        t1 = time.perf_counter()
        patch = torch.as_tensor(mel).to(self.device).unsqueeze(0)  # (1, n_mels, segment_frames)
        with torch.inference_mode():
            logits = self.model(patch)
            out = {h: probabilities(s, logits[h][0]).cpu().numpy() for h, s in self.model.heads.items()}
        t2 = time.perf_counter()
        return out, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0


class EnginePipeline:
    """The engine's own path: ``Analyzer.feed`` on one hop, with the given runner; the mel step is
    what the pipeline itself says it spent (``spent_ms``)."""

    def __init__(self, name: str, model: SegmentModel, device: torch.device, runner):
        self.name, self.device = name, device
        self.analyzer = Analyzer(model, model.frontend.sample_rate_hz, Windowing(), device, runner)

    def step(self, hop: np.ndarray) -> tuple[dict[str, np.ndarray], float, float]:
        spent = self.analyzer.pipeline.spent_ms
        mel_before = spent["mel"]
        t0 = time.perf_counter()
        windows = self.analyzer.feed(hop)
        _sync(self.device)
        total = (time.perf_counter() - t0) * 1000.0
        if len(windows) != 1:
            raise RuntimeError(f"{self.name}: one hop gave {len(windows)} windows, not one")
        mel_ms = spent["mel"] - mel_before
        return windows[0].outputs, mel_ms, total - mel_ms


@dataclass
class PipelineTimes:
    name: str
    mel: str  # how the mel is computed
    skipped: str | None = None  # the reason, for a pipeline that could not run here
    samples_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {stage: percentiles(self.samples_ms[stage]) for stage in STAGES}


MEL_LABELS = {
    "librosa+torch": "librosa, whole window",
    "torchaudio+torch": "torchaudio, whole window",
    "nnaudio-window+torch": "nnAudio, whole window",
    "streaming+torch": "nnAudio, new frames",
    "streaming+onnx": "nnAudio, new frames",
}


def build(
    model_name: str, device: torch.device
) -> tuple[SegmentModel, list[tuple[PipelineTimes, WindowPipeline | EnginePipeline | None]]]:
    """The model and its pipelines, in table order; one that cannot run here has ``None`` and why."""
    model = models.resolve(model_name).eval()
    fe = model.frontend
    nnaudio = MelFrontend(fe).to(device).eval()

    def nnaudio_mel(window: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return nnaudio(torch.from_numpy(window).to(device).unsqueeze(0))[0]

    def torchaudio_pipeline():
        module = torchaudio_mel(fe).to(device)

        def mel(window: np.ndarray) -> torch.Tensor:
            with torch.inference_mode():
                return scale(module(torch.from_numpy(window).to(device)), fe)

        return WindowPipeline("torchaudio+torch", model, device, mel)

    onnx_model = models.resolve(model_name).eval()  # its own copy: ONNX Runtime runs it on the CPU

    def librosa_pipeline():
        try:
            import librosa  # noqa: F401
        except ImportError as exc:
            raise Unsupported(f"librosa not installed ({exc}; pip install librosa)") from None
        _librosa_conventions(fe, "librosa")
        return WindowPipeline("librosa+torch", model, device, lambda window: librosa_mel(window, fe))

    makers = {
        "librosa+torch": librosa_pipeline,
        "torchaudio+torch": torchaudio_pipeline,
        "nnaudio-window+torch": lambda: WindowPipeline("nnaudio-window+torch", model, device, nnaudio_mel),
        "streaming+torch": lambda: EnginePipeline(
            "streaming+torch", model, device, TorchRunner(model, device)
        ),
        "streaming+onnx": lambda: EnginePipeline(
            "streaming+onnx", onnx_model, device, OnnxRunner(onnx_model)
        ),
    }
    out = []
    for name, make in makers.items():
        times = PipelineTimes(name, MEL_LABELS[name])
        try:
            pipeline = make()
        except Unsupported as exc:
            times.skipped = str(exc)
            pipeline = None
        out.append((times, pipeline))
    return model, out


def measure(model_name: str, device: str, hops: int, warmup: int, seed: int = 0) -> dict:
    """Time ``hops`` hops of every pipeline on the same audio; the report's ``alternatives`` part."""
    device = torch.device(device)
    with one_blas_thread() as blas_note:
        model, pipelines = build(model_name, device)
        report = _measure(model_name, model, pipelines, device, hops, warmup, seed)
    report["blas_threads"] = blas_note
    return report


@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS (librosa's mel product) single-threaded while timing, yielding a note that says so.

    OpenBLAS's idle workers spin after each call: beside torch on 2 cores they slowed the torch
    model that ran next by 30-40 ms (p50), in the librosa pipeline and in whichever ran after it;
    one thread keeps the comparison about the pipelines' own work, and costs librosa nothing here.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # librosa brings it (through scikit-learn); without it, say so
        yield "as numpy has it (threadpoolctl not installed)"
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield "1 (numpy's OpenBLAS, whose idle threads spin and slow the next torch call)"


def _measure(name: str, model, pipelines, device: torch.device, hops: int, warmup: int, seed: int) -> dict:
    running = [(t, p) for t, p in pipelines if p is not None]
    fe = model.frontend
    hop_frames, hop_s, _, _ = effective_windows(model, Windowing())
    hop_samples = hop_frames * fe.hop_length
    rng = np.random.default_rng(seed)
    # One segment of audio first, as a running stream has it: every hop then completes one window.
    first = 0.1 * rng.standard_normal(model.segment_frames * fe.hop_length).astype(np.float32)
    for _, pipeline in running:
        if isinstance(pipeline, EnginePipeline):
            pipeline.analyzer.feed(first)
        else:
            pipeline.step(first)
    for i in range(warmup + hops):
        audio = 0.1 * rng.standard_normal(hop_samples).astype(np.float32)
        turn = i % len(running)
        for times, pipeline in running[turn:] + running[:turn]:
            _, mel_ms, model_ms = pipeline.step(audio)
            if i >= warmup:
                times.samples_ms["mel"].append(mel_ms)
                times.samples_ms["model"].append(model_ms)
                times.samples_ms["hop"].append(mel_ms + model_ms)
    return summarise(name, hop_s, model.segment_seconds, [t for t, _ in pipelines])


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else float("nan")


def summarise(model_name: str, hop_s: float, segment_s: float, times: list[PipelineTimes]) -> dict:
    """The JSON form: per pipeline its ms per stage and its ratios to ours; the target's verdict."""
    pct = {t.name: t.percentiles() for t in times if t.skipped is None}
    ours = pct[OURS]
    rows = []
    for t in times:
        if t.skipped is not None:
            rows.append({"name": t.name, "mel": t.mel, "skipped": t.skipped})
            continue
        p = pct[t.name]
        ratios = {
            stage: {q: _ratio(p[stage][q], ours[stage][q]) for q in ("p50", "p99")}
            for stage in ("mel", "hop")
        }
        rows.append(
            {
                "name": t.name,
                "mel": t.mel,
                "ours": t.name == OURS,
                "hops": len(t.samples_ms["hop"]),
                "ms": p,
                "ratio_to_ours": ratios,
            }
        )
    report = {
        "model": model_name,
        "hop_s": round(hop_s, 4),
        "segment_s": round(segment_s, 4),
        "ours": f"{OURS}: the engine's default path (realtime.analyzer.Analyzer, torch backend): "
        "streaming nnAudio mel of the hop's new frames, the newest segment through the streaming "
        "encoder (musicnn's front end only for the new frames and the window's edges; embedding cached), "
        "pooling + heads",
        "timed": "one hop of audio in -> the hop's head probabilities out (mel, then model: patch, "
        "encoder, pooling, heads, sigmoid); smoothing and publishing are left out, the same for all",
        "ratio": "the pipeline's time / ours (above 1: slower than ours)",
        "pipelines": rows,
    }
    if HAND_ROLLED in pct:
        report["target"] = verdict(pct[HAND_ROLLED], ours)
    return report


def verdict(hand: dict, ours: dict) -> dict:
    """Issue 6's target (ours >= 3x faster per hop than the hand-rolled loop), stated honestly."""
    ratio = _ratio(hand["hop"]["p50"], ours["hop"]["p50"])
    mel_ratio = _ratio(hand["mel"]["p50"], ours["mel"]["p50"])
    model_share = round(ours["model"]["p50"] / ours["hop"]["p50"], 3)
    # Even a mel that cost nothing would leave ours at best hand["hop"] / ours["model"] faster.
    ceiling = _ratio(hand["hop"]["p50"], ours["model"]["p50"])
    met = ratio >= TARGET_RATIO
    if met:
        note = f"met: ours is {ratio}x faster per hop (p50) than {HAND_ROLLED}"
    else:
        note = (
            f"not met: ours is {ratio}x faster per hop (p50), not {TARGET_RATIO:g}x. The mel step alone is "
            f"{mel_ratio}x faster, but the segment encoder (streaming in ours) is {model_share:.0%} of our "
            f"hop: even a free mel would make ours at most {ceiling}x faster."
        )
    return {
        "vs": HAND_ROLLED,
        "wanted": TARGET_RATIO,
        "ratio_hop_p50": ratio,
        "ratio_hop_p99": _ratio(hand["hop"]["p99"], ours["hop"]["p99"]),
        "ratio_mel_p50": mel_ratio,
        "model_share_of_ours_p50": model_share,
        "ceiling_with_free_mel_p50": ceiling,
        "met": met,
        "note": note,
    }


def table(report: dict) -> str:
    header = (
        f"{'pipeline':<22} {'mel':<22} "
        + " ".join(f"{s + ' p50/p99':>19}" for s in STAGES)
        + f" {'hop x ours p50/p99':>19} {'mel x ours p50/p99':>19}"
    )
    lines = [header, "-" * len(header)]
    for row in report["pipelines"]:
        name = row["name"] + (" (ours)" if row.get("ours") else "")
        if "skipped" in row:
            lines.append(f"{name:<22} {row['mel']:<22} skipped: {row['skipped']}")
            continue
        ms, r = row["ms"], row["ratio_to_ours"]
        cells = " ".join(f"{ms[s]['p50']:>9.2f}/{ms[s]['p99']:<9.2f}" for s in STAGES)
        ratios = " ".join(f"{r[s]['p50']:>9.2f}/{r[s]['p99']:<9.2f}" for s in ("hop", "mel"))
        lines.append(f"{name:<22} {row['mel']:<22} {cells} {ratios}")
    if "target" in report:
        lines.append(f"target (issue 6): ours >= {report['target']['wanted']:g}x faster than {HAND_ROLLED}: ")
        lines[-1] += report["target"]["note"]
    return "\n".join(lines)


def plot(report: dict, ax) -> None:
    """Stacked p50 (mel, model) per pipeline, hop p99 marked, the ratio to ours above each bar."""
    rows = report["pipelines"]
    labels = [r["name"].replace("+", "\n+") + ("\n(ours)" if r.get("ours") else "") for r in rows]
    mel = np.array([r["ms"]["mel"]["p50"] if "ms" in r else 0.0 for r in rows])
    rest = np.array([r["ms"]["model"]["p50"] if "ms" in r else 0.0 for r in rows])
    ax.bar(labels, mel, label="mel", color="tab:blue")
    ax.bar(labels, rest, bottom=mel, label="model (encoder, pooling, heads)", color="tab:orange")
    ran = [i for i, r in enumerate(rows) if "ms" in r]
    ax.scatter(
        [labels[i] for i in ran],
        [rows[i]["ms"]["hop"]["p99"] for i in ran],
        color="k",
        marker="_",
        s=400,
        label="hop p99",
    )
    top = max([rows[i]["ms"]["hop"]["p99"] for i in ran] + [1.0])
    for i, r in enumerate(rows):
        text = f"x{r['ratio_to_ours']['hop']['p50']:.2f}" if "ms" in r else "skipped"
        ax.text(
            i, (mel[i] + rest[i]) if "ms" in r else 0.02 * top, text, ha="center", va="bottom", fontsize=8
        )
    ax.set_ylabel("ms per hop")
    ax.set_title(f"{report['model']}: alternatives, p50 stacked (x: hop time / ours)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
