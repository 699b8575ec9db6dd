"""Running the real thing for the benchmarks: clips, ``realtime.listen`` processes, a subscriber.

``bench e2e`` and ``bench scale`` run ``python -m realtime.listen`` (or, for several engines in
one process, ``python -m bench.scale --host``) as subprocesses, each publishing on a free
loopback port, and time them from outside with plain pyzmq sockets; the engine's own stage
timings come from its ``status`` messages (``process_ms``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import zmq

from realtime.live_env import set_live_env

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "data" / "4q" / "audio"
START_TIMEOUT_S = 120.0  # model loading under load can take a while
MIC_START_TIMEOUT_S = 60.0
CATCH_UP_S = 10.0  # how long after the audio a lagging engine may take to deliver its last windows


def file_block_frames(rate_hz: int) -> int:
    """realtime.sources.FileSource's blocksize when paced (what listen --file --realtime uses)."""
    from realtime.sources import FileSource

    return FileSource.paced_blocksize(rate_hz)


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


# -- listen processes and the subscriber ------------------------------------------------


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class ListenProcess:
    """A ``realtime.listen`` subprocess on its own loopback port.

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
        env: dict[str, str] | None = None,
        streams: int | None = None,
        reaction: str | None = None,
    ):
        self.endpoints = [free_endpoint() for _ in range(streams or 1)]
        self.endpoint = self.endpoints[0]
        self.stderr_path = folder / f"{name}.stderr"
        options = ["--quiet", *source_args, "--model", model, "--backend", backend, "--compute", compute]
        if threads:
            options += ["--threads", str(threads)]
        if reaction:
            options += ["--reaction", reaction]
        if streams:
            head = [sys.executable, "-m", "bench.scale", "--host", "--endpoints", ",".join(self.endpoints)]
            self.command = head + ["--", *options]
            # bench.scale loads numpy before the engines' listen could set their environment.
            env = set_live_env(dict(os.environ if env is None else env))
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
