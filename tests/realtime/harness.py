"""What the end-to-end tests share: free loopback ports, ``listen``/``bridge`` processes, an independent subscriber.

The subscriber is what a lighting rig would write: pyzmq and json, checked against the
schema file, nothing else of ours.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import zmq

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "realtime" / "schema" / "feed.schema.json").read_text())


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now (TCP, or UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Subscriber:
    """A plain SUB socket on the feed; every message is checked against the schema file."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages: list[tuple[str, dict, float]] = []

    def _take(self) -> None:
        topic, body = self.sock.recv_multipart()
        received = time.time()
        message = json.loads(body.decode("utf-8"))
        jsonschema.validate(message, {**SCHEMA, "$ref": f"#/$defs/{topic.decode()}"})
        self.messages.append((topic.decode(), message, received))

    def collect(self, until, timeout_s: float) -> list[tuple[str, dict, float]]:
        """Receive until ``until(messages)`` is true; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not until(self.messages):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; got {[(t, m.get('seq')) for t, m, _ in self.messages][-10:]}"
            if self.sock.poll(min(left, 0.2) * 1000):
                self._take()
        return self.messages

    def drain(self, quiet_s: float = 0.5) -> None:
        """Take what is still queued (the process has exited: nothing more will come)."""
        while self.sock.poll(quiet_s * 1000):
            self._take()

    def moods(self) -> list[dict]:
        return [m for t, m, _ in self.messages if t == "mood"]

    def statuses(self) -> list[dict]:
        return [m for t, m, _ in self.messages if t == "status"]

    def close(self):
        self.sock.close()
        self.ctx.term()


def ended(messages) -> bool:
    """The engine's last status says the source ended."""
    return any(t == "status" and m["source"]["state"] == "ended" for t, m, _ in messages)


def first_status(messages) -> bool:
    return any(t == "status" for t, _, _ in messages)


class LiveStream:
    """A live radio stream on loopback: ffmpeg's own HTTP server (``-listen``) playing a clip in a
    loop at its pace, as Ogg/Opus with no length (what an Icecast mount sends).  ``kill()`` is a
    server that dies; ``start()`` brings it back on the same port."""

    def __init__(self, clip: Path, port: int | None = None):
        self.clip = clip
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/live"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LiveStream:
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.clip),
             "-c:a", "libopus", "-f", "ogg", "-listen", "1", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Wait until it listens, without connecting (-listen 1 serves one client, then exits), or
        # serves already: a client reconnecting meanwhile may take it before a look sees it listen.
        deadline = time.monotonic() + 10
        while not _listening_or_serving(self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                "ffmpeg's HTTP server did not start"
            )
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> LiveStream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def _listening_or_serving(port: int) -> bool:
    """Is a TCP socket on this machine listening on ``port``, or a server's end of a connection to
    it (Linux's /proc/net/tcp: state 0A, 01)?"""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state in ("0A", "01") and int(local.rsplit(":", 1)[1], 16) == port:
            return True
    return False


def own_port(module: str, args: tuple[str, ...] | list[str]) -> list[str]:
    """``listen``'s ARGS with a free ``--pub`` where they name none: a test does not need the
    default port, which a listen running on the machine holds (the test then fails with
    "already in use" before what it checks)."""
    return [*args] if module != "listen" or "--pub" in args else ["--pub", free_endpoint(), *args]


def start(
    module: str, *args: str, env=None, stdin=None, quiet: bool = True, own_group: bool = False
) -> subprocess.Popen:
    """``python -m realtime.<module> [--quiet] ARGS`` in the repository, output captured.
    ``own_group``: in a process group of its own, as a shell's job, so that a signal to the group
    (``os.killpg``) is a terminal's Ctrl-C: its children get it too."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            f"realtime.{module}",
            *(["--quiet"] if quiet else []),
            *own_port(module, args),
        ],
        cwd=REPO,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0 if own_group else None,
    )


def listen(*args: str, env=None, stdin=None, quiet: bool = True, own_group: bool = False) -> subprocess.Popen:
    return start("listen", *args, env=env, stdin=stdin, quiet=quiet, own_group=own_group)


def finish(proc: subprocess.Popen, timeout_s: float = 60) -> tuple[int, str]:
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # already written and closed by the test
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err.decode("utf-8", "replace")


class Lines:
    """A process's stderr (or ``stream``, e.g. its stdout) read line by line as it comes (by a
    thread): wait for a line, not a guessed sleep.

    A fixed sleep before a signal failed on a loaded machine, where starting Python and importing
    the libraries took longer than the sleep; and a signal before the process set its handler
    ends it with a traceback.
    """

    def __init__(self, proc: subprocess.Popen, stream=None):
        self.proc = proc
        self.stream = proc.stderr if stream is None else stream
        self.lines: list[str] = []
        self._taken = 0  # how many lines next_line has returned (or skip passed over)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.stream:
            self.lines.append(line.decode("utf-8", "replace") if isinstance(line, bytes) else line)

    def next_line(self, timeout_s: float) -> str:
        """The line after the last one returned (with its newline); "" if none comes within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while len(self.lines) <= self._taken:
            if time.monotonic() >= deadline:
                return ""
            time.sleep(0.01)
        self._taken += 1
        return self.lines[self._taken - 1]

    def skip(self) -> None:
        """Pass over every line read so far: ``next_line`` returns the ones still to come."""
        self._taken = len(self.lines)

    def wait_for(self, predicate, timeout_s: float = 60) -> str:
        """The first line (without its newline) ``predicate`` holds for; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in list(self.lines):
                if predicate(line.rstrip("\n")):
                    return line.rstrip("\n")
            assert time.monotonic() < deadline and (self._thread.is_alive() or self.proc.poll() is None), (
                "".join(self.lines)
            )
            time.sleep(0.05)

    def finish(self, timeout_s: float = 30) -> tuple[int, str]:
        """Wait for the process to end: its exit code and all it wrote on the stream read."""
        code = self.proc.wait(timeout=timeout_s)
        self._thread.join(timeout_s)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code, "".join(self.lines)


def run(module: str, *args: str, env=None, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """``python -m realtime.<module> --quiet ARGS`` to the end (for the errors it prints)."""
    return subprocess.run(
        [sys.executable, "-m", f"realtime.{module}", "--quiet", *own_port(module, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
