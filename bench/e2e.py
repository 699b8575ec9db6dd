"""End-to-end lag at an independent subscriber: the real engine, fed at real time, timed from outside.

``python -m realtime.listen`` runs as a subprocess publishing on a free loopback port, its
source paced by the clock: a file (``--file CLIP --realtime``) or a capture device (the paced
virtual microphone of ``bench/paced_mic.py``: JACK's dummy backend at 48 kHz, 1024-frame
periods).  This process subscribes with plain pyzmq + json, and for every mood message

    lag = receipt time (time.time()) - t_capture

where ``t_capture`` is the wall-clock time of the window's last captured sample: the lag is
what comes on top of the window itself.  By default each listen runs under a probe (this
module run as ``python -m bench.e2e --probe OUT -- LISTEN ARGS``: ``realtime.listen.main``
with a timestamp taken at each write into and each read from the engine's ring buffer),
which splits the lag of each window into

    source     the sample waits for the rest of its block/period to be delivered to the ring
    pickup     the block waits in the ring until the engine reads it (its 5 ms poll, or a hop in progress)
    resample   the window waits for the resampler to release its last samples (device input at 48 kHz)
    process    mel + encoder + pooling + heads + smoothing + send, from the read that completed it
    transport  ZeroMQ from the publisher's send to this subscriber's receipt

``--no-probe`` runs plain ``python -m realtime.listen`` and reports the lag only.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import zmq

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "data" / "4q" / "audio"
SOURCES = ("file", "device")
PARTS = ("source", "pickup", "resample", "process", "transport")
TARGET_P99_MS = 50.0  # issue 6: default model on CPU, lag p99 beyond the window itself


def file_block_frames(rate_hz: int) -> int:
    """realtime.sources.FileSource's blocksize when paced (what listen --file --realtime uses)."""
    from realtime.sources import FileSource

    return FileSource.paced_blocksize(rate_hz)


MIC_START_TIMEOUT_S = 60.0
CATCH_UP_S = 10.0  # how long after the audio a lagging engine may take to deliver its last windows
START_TIMEOUT_S = 120.0  # model loading under load can take a while


# -- the clip --------------------------------------------------------------------------


def shared_clips() -> list[Path]:
    """The shared 4Q clips, interleaved by quadrant (Q1, Q2, Q3, Q4, Q1...) so the mood changes."""
    by_quadrant = [sorted(q.glob("*.ogg")) for q in sorted(SHARED_AUDIO.glob("Q*")) if q.is_dir()]
    clips = []
    for i in range(max((len(q) for q in by_quadrant), default=0)):
        clips.extend(q[i] for q in by_quadrant if i < len(q))
    return clips


def make_clip(seconds: float, out: Path, clip: Path | None = None) -> tuple[Path, str]:
    """A wav of ``seconds`` at ``out``: ``clip`` looped, or shared clips end to end -> (path, description)."""
    if clip is not None:
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        if not len(audio):
            raise ValueError(f"{clip} holds no audio")
        n = int(round(seconds * rate))
        audio = np.tile(audio, (math.ceil(n / len(audio)), 1))[:n]
        described = f"{clip} looped to {seconds:g} s"
    else:
        parts, n_done, rate, used = [], 0, None, []
        for path in shared_clips():
            audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
            rate = rate or file_rate
            if file_rate != rate or audio.shape[1] != 1:
                continue  # the shared clips are 16 kHz mono; skip any that are not
            parts.append(audio)
            used.append(path.name)
            n_done += len(audio)
            if n_done >= seconds * rate:
                break
        if rate is None or n_done < seconds * rate:
            raise ValueError(f"not enough shared clips under {SHARED_AUDIO} for {seconds:g} s; pass --clip")
        audio = np.concatenate(parts)[: int(round(seconds * rate))]
        described = f"{len(used)} 4Q clips end to end ({used[0]}...{used[-1]})"
    sf.write(out, audio, rate, subtype="FLOAT")
    return out, f"{described}, {rate} Hz, {audio.shape[1]} ch"


# -- the probe (runs inside the listen subprocess) ---------------------------------------


def install_probe() -> dict[int, dict[str, list]]:
    """Timestamp every ring buffer's writes and reads: {id(ring): {"writes": [...], "reads": [...]}}.

    Each entry is (end index, time.time()).  The ring is the one seam every engine version goes
    through (the source writes, the engine loop reads right before it analyses), so nothing
    else of the engine is touched.  A non-empty write or read costs one ``time.time()`` and
    one list append more.
    """
    from realtime.ring import RingBuffer

    logs: dict[int, dict[str, list]] = {}
    ring_write, ring_read = RingBuffer.write, RingBuffer.read

    def log_of(ring) -> dict[str, list]:
        log = logs.get(id(ring))
        if log is None:  # dict.setdefault is atomic under the GIL: one log per ring
            log = logs.setdefault(id(ring), {"writes": [], "reads": []})
        return log

    def write(self, block, capture_time=None, overflow=False):
        written = ring_write(self, block, capture_time, overflow)
        if written:
            log_of(self)["writes"].append((self.write_index, time.time()))
        return written

    def read(self, max_frames=None):
        t_read = time.time()
        frames, start = ring_read(self, max_frames)
        if len(frames):
            log_of(self)["reads"].append((start + len(frames), t_read))
        return frames, start

    RingBuffer.write = write
    RingBuffer.read = read
    return logs


def probe_main(argv: list[str]) -> int:
    """``python -m bench.e2e --probe OUT -- LISTEN ARGS``: realtime.listen under the probe.

    OUT gets ``{"writes": [[end, t], ...], "reads": [[end, t], ...]}`` (its one ring) when listen returns.
    """
    if len(argv) < 3 or argv[0] != "--probe" or argv[2] != "--":
        print("usage: python -m bench.e2e --probe OUT -- [realtime.listen options]", file=sys.stderr)
        return 2
    from realtime import listen

    logs = install_probe()
    try:
        return listen.main(argv[3:])
    finally:
        busiest = max(logs.values(), key=lambda log: len(log["reads"]), default={"writes": [], "reads": []})
        Path(argv[1]).write_text(json.dumps(busiest))


@dataclass
class Probe:
    """The ring's writes and reads in one listen process, as sorted arrays of end index and time."""

    write_ends: np.ndarray
    write_times: np.ndarray
    read_ends: np.ndarray
    read_times: np.ndarray

    @classmethod
    def load(cls, path: Path, endpoint: str | None = None) -> Probe | None:
        """From a probe's OUT file (a host's holds one log per endpoint); None if it has none."""
        try:
            logs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # killed before it could write
            return None
        if endpoint is not None and "writes" not in logs:
            logs = logs.get(endpoint)
        if not logs:
            return None
        arrays = [np.array(logs[k], dtype=np.float64).reshape(-1, 2) for k in ("writes", "reads")]
        return cls(arrays[0][:, 0], arrays[0][:, 1], arrays[1][:, 0], arrays[1][:, 1])

    def block_frames(self) -> int | None:
        """The frames per write into the ring (the median): the source's block or period."""
        sizes = np.diff(self.write_ends)
        return int(np.median(sizes)) if sizes.size else None

    def parts(self, index: int, t_capture: float, t_publish: float, received: float) -> tuple | None:
        """The lag of the window whose last sample is ``index``, split into PARTS (seconds)."""
        k = np.searchsorted(self.write_ends, index, side="right")  # the write that delivered it
        j = np.searchsorted(self.read_ends, index, side="right")  # the read that took it
        last = np.searchsorted(self.read_times, t_publish, side="right") - 1  # the read before the send
        if k >= self.write_ends.size or j >= self.read_ends.size or last < j:
            return None
        t_written, t_taken, t_completed = self.write_times[k], self.read_times[j], self.read_times[last]
        return (
            t_written - t_capture,
            t_taken - t_written,
            t_completed - t_taken,
            t_publish - t_completed,
            received - t_publish,
        )


# -- listen processes and the subscriber ------------------------------------------------


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class ListenProcess:
    """A ``realtime.listen`` subprocess on its own loopback port (under the probe unless ``probe=False``).

    With ``streams=N`` it is instead one ``bench.scale`` host process running N engines on
    the same source options, one port each (``endpoints``).
    """

    def __init__(
        self,
        source_args: list[str],
        folder: Path,
        name: str,
        *,
        model: str = "default",
        backend: str = "torch",
        compute: str = "cpu",
        threads: int | None = None,
        probe: bool = True,
        env: dict[str, str] | None = None,
        streams: int | None = None,
    ):
        self.endpoints = [free_endpoint() for _ in range(streams or 1)]
        self.endpoint = self.endpoints[0]
        self.probe_path = folder / f"{name}.probe.json"
        self.stderr_path = folder / f"{name}.stderr"
        options = ["--quiet", *source_args, "--model", model, "--backend", backend, "--compute", compute]
        if threads:
            options += ["--threads", str(threads)]
        if streams:
            head = [sys.executable, "-m", "bench.scale", "--host", str(self.probe_path)]
            self.command = head + ["--endpoints", ",".join(self.endpoints), "--", *options]
        elif probe:
            head = [sys.executable, "-m", "bench.e2e", "--probe", str(self.probe_path), "--"]
            self.command = head + options + ["--pub", self.endpoint]
        else:
            self.command = [sys.executable, "-m", "realtime.listen", *options, "--pub", self.endpoint]
        self._stderr = open(self.stderr_path, "wb")
        self._asked_to_stop = False
        self.proc = subprocess.Popen(
            self.command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM: listen stops cleanly on it) without waiting; once only.

        (A second signal is listen's hard interrupt.)
        """
        if self.proc.poll() is None and not self._asked_to_stop:
            self.proc.terminate()
            self._asked_to_stop = True

    def stop(self, grace_s: float = 10.0) -> int:
        """SIGTERM, SIGKILL after ``grace_s``; the exit code (-9 when it had to be killed)."""
        self.terminate()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        code = self.proc.wait()
        self._stderr.close()
        return code

    def error(self) -> str:
        """The exit code (once it ended) and the tail of its stderr."""
        code = self.proc.poll()
        ended = "still running" if code is None else f"exit code {code}"
        if code is not None and code < 0:
            ended = f"killed by {signal.Signals(-code).name}"
        tail = self.stderr_path.read_text(errors="replace").strip()[-1500:]
        return f"{ended}: {tail}" if tail else f"{ended}, nothing on stderr"


@dataclass
class Feed:
    """What arrived from one endpoint: (receipt time, message) per topic."""

    moods: list[tuple[float, dict]] = field(default_factory=list)
    statuses: list[tuple[float, dict]] = field(default_factory=list)


class Subscriber:
    """Plain pyzmq SUB sockets + json, one per endpoint; the receipt time is taken at each recv."""

    def __init__(self, endpoints: list[str]):
        self.context = zmq.Context()
        self.sockets = {}
        self.poller = zmq.Poller()
        for endpoint in endpoints:
            sock = self.context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100000)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(endpoint)
            self.sockets[sock] = endpoint
            self.poller.register(sock, zmq.POLLIN)
        self.feeds = {endpoint: Feed() for endpoint in endpoints}

    def poll(self, timeout_s: float) -> None:
        """Receive everything that arrives within ``timeout_s`` (returns after the first batch)."""
        for sock, _ in self.poller.poll(timeout_s * 1000):
            while True:
                try:
                    topic, body = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received = time.time()
                feed = self.feeds[self.sockets[sock]]
                (feed.moods if topic == b"mood" else feed.statuses).append((received, json.loads(body)))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.context.term()


# -- figures ---------------------------------------------------------------------------


def percentiles(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(values.max()), 2),
        "mean": round(float(values.mean()), 2),
    }


def lag_figures(feed: Feed, probe: Probe | None, rate_hz: int, keep) -> dict:
    """Lag, its parts (with a probe), losses and drift over the moods ``keep(receipt time, message)`` selects.

    ``missed`` counts gaps in ``seq`` among them; ``dropped_samples``/``overflows`` are what the
    status messages received meanwhile add to those received before.
    """
    moods = [(r, m) for r, m in feed.moods if keep(r, m)]
    seqs = sorted({m["seq"] for _, m in moods})
    lags = np.array([(r - m["t_capture"]) * 1000.0 for r, m in moods])
    parts: dict[str, list[float]] = {part: [] for part in PARTS}
    for received, m in moods if probe is not None else ():
        index = math.ceil(m["t_stream"] * rate_hz) - 1  # the window's last sample, as the engine computes it
        split = probe.parts(index, m["t_capture"], m["t_publish"], received)
        for part, seconds in zip(PARTS, split or (), strict=False):
            parts[part].append(seconds * 1000.0)
    losses = {}
    if moods:
        first, last = moods[0][0], moods[-1][0]
        before = [m for r, m in feed.statuses if r < first]
        during = [m for r, m in feed.statuses if r <= last + 1.0]
        for key in ("dropped_samples", "overflows"):
            losses[key] = max((s[key] for s in during), default=0) - max((s[key] for s in before), default=0)
    t_stream = np.array([m["t_stream"] for _, m in moods])
    drift = None
    if len(moods) >= 10 and np.ptp(t_stream) > 0:
        drift = round(float(np.polyfit(t_stream / 60.0, lags, 1)[0]), 2)  # ms of lag gained per minute
    return {
        "moods": len(moods),
        "missed": (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0,
        "dropped_samples": losses.get("dropped_samples", 0),
        "overflows": losses.get("overflows", 0),
        "lag_ms": percentiles(lags),
        "drift_ms_per_min": drift,
        "parts_ms": {part: percentiles(v) for part, v in parts.items()} if parts["process"] else None,
        "parts_moods": len(parts["process"]),  # moods the probe could split (all, normally)
        "hop_s": moods[0][1]["hop_s"] if moods else None,
        "_lags": lags,
        "_parts": {part: np.array(v) for part, v in parts.items()},
    }


# -- one run ---------------------------------------------------------------------------


@dataclass
class Run:
    model: str
    backend: str
    source: str
    threads: int | None
    figures: dict
    inherent: str  # what the source's own delivery quantum is


def quantum(what: str, frames: int, rate_hz: int) -> str:
    return f"{what} of {frames} frames at {rate_hz} Hz = {frames / rate_hz * 1000.0:.1f} ms"


def run_file(clip: Path, seconds: float, folder: Path, probe: bool, **listen) -> Run:
    """listen --file CLIP --realtime until the file ends; every window inside the clip counted."""
    info = sf.info(str(clip))
    proc = ListenProcess(["--file", str(clip), "--realtime"], folder, "file", probe=probe, **listen)
    sub = Subscriber([proc.endpoint])
    try:
        deadline = time.monotonic() + seconds + START_TIMEOUT_S
        while proc.proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"listen --file did not end within {seconds + START_TIMEOUT_S:.0f} s")
            sub.poll(0.1)
        for _ in range(5):  # what was sent just before it exited
            sub.poll(0.05)
    finally:
        code = proc.stop()
        sub.close()
    if code != 0:
        raise RuntimeError(f"listen --file exited with {code}: {proc.error()}")
    end_s = info.frames / info.samplerate
    # Windows that need the end padding come from the flush at end of file, not from live audio.
    probe = Probe.load(proc.probe_path) if probe else None
    figures = lag_figures(
        sub.feeds[proc.endpoint], probe, info.samplerate, lambda _, m: m["t_stream"] <= end_s
    )
    inherent = quantum(
        "file blocks", (probe and probe.block_frames()) or file_block_frames(info.samplerate), info.samplerate
    )
    return Run(listen["model"], listen["backend"], "file", listen.get("threads"), figures, inherent)


def run_device(
    clip: Path, seconds: float, folder: Path, probe: bool, period_frames: int = 1024, **listen
) -> Run:
    """listen --device on the paced virtual microphone while the clip plays into it."""
    from bench.paced_mic import RATE_HZ, JackServer

    with JackServer(folder, period_frames=period_frames) as server:
        mic = server.microphone(clip, name="moodmic")
        proc = ListenProcess(["--device", mic.device], folder, "device", probe=probe, env=mic.env, **listen)
        sub = Subscriber([proc.endpoint])
        try:
            deadline = time.monotonic() + MIC_START_TIMEOUT_S
            while not mic.playing.is_set():
                if mic.error or proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the paced microphone did not start playing: {mic.error or proc.error() or 'timeout'}"
                    )
                sub.poll(0.05)
            end = mic.started_at + mic.duration_s
            moods = sub.feeds[proc.endpoint].moods
            # Until a window captured after the music arrived (an overloaded engine lags), or 10 s more.
            while time.time() < end + 0.5 or (
                not (moods and moods[-1][1]["t_capture"] > end) and time.time() < end + CATCH_UP_S
            ):
                if proc.proc.poll() is not None:
                    raise RuntimeError(f"listen --device exited early: {proc.error()}")
                sub.poll(0.1)
        finally:
            code = proc.stop()
            sub.close()
        if code != 0:
            raise RuntimeError(f"listen --device exited with {code}: {proc.error()}")
        start = mic.started_at

    def inside(_: float, m: dict) -> bool:
        return start <= m["t_capture"] <= end

    probe = Probe.load(proc.probe_path) if probe else None
    figures = lag_figures(sub.feeds[proc.endpoint], probe, mic.rate_hz, inside)
    inherent = quantum("device periods", (probe and probe.block_frames()) or period_frames, RATE_HZ)
    return Run(listen["model"], listen["backend"], "device", listen.get("threads"), figures, inherent)


# -- report ----------------------------------------------------------------------------


def machine() -> dict:
    from bench.latency import machine as latency_machine

    return latency_machine()


def command_line() -> str:
    return "python -m bench " + shlex.join(sys.argv[1:])


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def table(runs: list[Run]) -> str:
    header = (
        f"{'model':<20} {'backend':<7} {'source':<6} {'moods':>5} {'missed':>6} {'dropped':>7} "
        f"{'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'drift/min':>9}  p99<={TARGET_P99_MS:.0f}"
    )
    lines = [header, "-" * len(header)]
    for r in runs:
        f, lag = r.figures, r.figures["lag_ms"]
        ok = "n/a" if lag["p99"] is None else ("yes" if lag["p99"] <= TARGET_P99_MS else "no")
        lines.append(
            f"{r.model:<20} {r.backend:<7} {r.source:<6} {f['moods']:>5} {f['missed']:>6} "
            f"{f['dropped_samples']:>7} {_cell(lag['p50']):>7} {_cell(lag['p95']):>7} {_cell(lag['p99']):>7} "
            f"{_cell(lag['max']):>7} {_cell(f['drift_ms_per_min']):>9}  {ok}"
        )
    return "\n".join(lines)


def parts_table(runs: list[Run]) -> str:
    header = f"{'model':<20} {'backend':<7} {'source':<6} " + " ".join(
        f"{p + ' mean/p99':>19}" for p in PARTS
    )
    lines = [header, "-" * len(header)]
    for r in runs:
        parts = r.figures["parts_ms"]
        if parts is None:
            cells = "(no probe)"
        else:
            cells = " ".join(f"{_cell(parts[p]['mean']):>9}/{_cell(parts[p]['p99']):<9}" for p in PARTS)
        lines.append(f"{r.model:<20} {r.backend:<7} {r.source:<6} {cells}")
    return "\n".join(lines)


def plot(runs: list[Run], path: str) -> None:
    """Left: the lag's distribution per run (CDF) against the target; right: its mean parts, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r.model} {r.backend}\n{r.source}" for r in runs]
    for r, label in zip(runs, labels, strict=True):
        lags = np.sort(r.figures["_lags"])
        if lags.size:
            left.plot(lags, np.arange(1, lags.size + 1) / lags.size, label=label.replace("\n", " "))
    left.axvline(
        TARGET_P99_MS, color="k", linestyle="--", linewidth=1, label=f"target p99 {TARGET_P99_MS:.0f} ms"
    )
    left.set_xlabel("lag at the subscriber, ms (receipt - t_capture)")
    left.set_ylabel("fraction of moods")
    left.set_title("end-to-end lag")
    left.legend(fontsize=8)
    bottom = np.zeros(len(runs))
    for part in PARTS:
        values = np.array([(r.figures["parts_ms"] or {}).get(part, {}).get("mean") or 0.0 for r in runs])
        right.bar(labels, values, bottom=bottom, label=part)
        bottom += values
    right.scatter(labels, [r.figures["lag_ms"]["p99"] or 0.0 for r in runs], color="k", marker="_", s=400,
                  label="lag p99")  # fmt: skip
    right.set_ylabel("ms")
    right.set_title("where the lag goes (mean per part)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_json(report: dict) -> str:
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=1)


# -- command ---------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "e2e",
        help="end-to-end lag of the real engine at an independent subscriber, file and paced device",
        description="End-to-end lag of `python -m realtime.listen` with a source paced at real time "
        "(--file CLIP --realtime, and the paced virtual capture device: JACK dummy backend + ALSA jack "
        "PCM), timed at a plain pyzmq subscriber: lag = receipt time - t_capture (the window's last "
        "captured sample), p50/p95/p99/max, missed moods, dropped samples, and where the lag goes "
        f"(source block, pickup, resampler, processing, transport). Target: p99 <= {TARGET_P99_MS:.0f} ms "
        "for the default model on CPU.",
    )
    p.add_argument(
        "--models", default="default", metavar="NAMES", help="comma-separated model names (default)"
    )
    p.add_argument(
        "--backends", default="torch", metavar="NAMES", help="comma-separated: torch, onnx (torch)"
    )
    p.add_argument(
        "--sources",
        default="file,device",
        metavar="NAMES",
        help="comma-separated: file, device (file,device)",
    )
    p.add_argument("--seconds", type=float, default=180, metavar="S", help="seconds of audio per run (180)")
    p.add_argument(
        "--clip",
        metavar="PATH",
        help="audio file to loop to --seconds (default: shared 4Q clips end to end, ../shared/data)",
    )
    p.add_argument(
        "--compute", choices=("cpu", "cuda"), default="cpu", help="where listen runs the model (cpu)"
    )
    p.add_argument("--threads", type=int, metavar="N", help="listen --threads (default: the library's)")
    p.add_argument(
        "--period",
        type=int,
        metavar="FRAMES",
        default=1024,
        help="the paced device's period in frames at 48 kHz, a power of two (1024 = 21.3 ms, as in the tests)",
    )
    p.add_argument(
        "--no-probe", action="store_true", help="plain realtime.listen: the lag only, not its parts"
    )
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON here")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG chart here")
    p.set_defaults(func=main)


def check_list(parser, text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        parser.error(f"--{what} needs at least one value")
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        parser.error(f"unknown {what} {bad}; {what}: {', '.join(allowed)}")
    return items


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import models

    names = check_list(parser, args.models, None, "models")
    for name in names:
        try:
            models.check_name(name)
        except models.UnknownModelError as exc:
            parser.error(f"{exc}; or default, or a trained artifact directory")
    backends = check_list(parser, args.backends, ("torch", "onnx"), "backends")
    sources = check_list(parser, args.sources, SOURCES, "sources")
    if not (math.isfinite(args.seconds) and args.seconds >= 5):
        parser.error("--seconds must be at least 5 (the first window ends at about 3 s)")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.clip and not Path(args.clip).is_file():
        parser.error(f"--clip {args.clip}: no such file")
    if args.period < 16 or args.period & (args.period - 1):
        parser.error(f"--period must be a power of two of at least 16 frames, not {args.period}")
    if args.compute == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--compute cuda, but no CUDA device is available")
    if "device" in sources:
        from bench.paced_mic import missing

        why = missing()
        if why:
            print(f"note: skipping the device source: {why}", file=sys.stderr)
            sources.remove("device")
            if not sources:
                return 1
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="moodstream-e2e-") as tmp:
        folder = Path(tmp)
        try:
            clip, described = make_clip(
                args.seconds, folder / "clip.wav", Path(args.clip) if args.clip else None
            )
        except (ValueError, RuntimeError) as exc:
            parser.error(str(exc))
        for name in names:
            for backend in backends:
                for source in sources:
                    where = folder / f"{name.replace('/', '_')}-{backend}-{source}"
                    where.mkdir()
                    print(f"{name} {backend} {source}: {args.seconds:g} s of audio...", file=sys.stderr)
                    listen = dict(model=name, backend=backend, compute=args.compute, threads=args.threads)
                    try:
                        if source == "file":
                            runs.append(run_file(clip, args.seconds, where, not args.no_probe, **listen))
                        else:
                            runs.append(
                                run_device(
                                    clip, args.seconds, where, not args.no_probe, args.period, **listen
                                )
                            )
                    except RuntimeError as exc:
                        print(f"error: {name} {backend} {source}: {exc}", file=sys.stderr)
                        return 1
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": command_line(),
        "clip": described,
        "seconds": args.seconds,
        "compute": args.compute,
        "threads": args.threads,
        "device_period_frames": args.period if "device" in sources else None,
        "target_p99_ms": TARGET_P99_MS,
        "results": [
            {
                "model": r.model,
                "backend": r.backend,
                "source": r.source,
                "inherent": r.inherent,
                **r.figures,
            }  # fmt: skip
            for r in runs
        ],
        "table": table(runs),
        "parts_table": parts_table(runs),
    }
    m = report["machine"]
    print(
        f"{m['cpu']}, {m['cores']} threads, torch {m['torch']}, onnxruntime {m['onnxruntime']}, GPU {m['gpu']}"
    )
    print(f"{described}; compute {args.compute}, listen --threads {args.threads or 'default'}")
    print("lag at the subscriber, ms (receipt time - t_capture of the window's last sample)")
    print(report["table"])
    if not args.no_probe:
        print("\nwhere the lag goes, ms (mean/p99 of each part)")
        print(report["parts_table"])
    print()
    for r in runs:
        print(f"{r.source}: inherent quantum: {r.inherent}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(report) + "\n")
    if args.plot:
        plot(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(probe_main(sys.argv[1:]))
