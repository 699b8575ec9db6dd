"""python -m bench soak: hours of real music through ``listen --stdin``; memory, messages and gaps.

Fast (default): the shared 4Q clips, decoded once and looped, are written into ``python -m
realtime.listen --stdin`` as fast as it takes them (the pipe back-pressures the writer), so six
hours of audio take minutes.  Paced (``--paced``): the same, written at the audio's own pace,
for the latency drift of a long show.  A plain pyzmq subscriber counts what arrives; the
listen process's resident memory (VmRSS) is sampled against the audio it has analysed.

Reported: RSS growth in MB per audio hour after the warm-up (a least-squares slope over the
samples after the first ``--warmup`` of the audio), moods expected (one per hop from the first
full segment) vs published (the last seq + 1) vs received, statuses received, the engine's
gaps, dropped and sanitised samples, and, paced, the latency's drift per minute.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.harness import REPO, START_TIMEOUT_S, Subscriber, free_endpoint, shared_clips
from bench.report import check_models, command_line, machine, percentiles, pyplot, save_figure, to_json
from moodstream.cli import output_file

RATE_HZ = 16000  # the shared clips' rate, and the model's: nothing to resample
CHUNK_S = 0.1  # what the writer hands the pipe at a time
LOOP_CLIPS = 40  # ~20 min of music, 4Q quadrants in turn; looped for longer runs
SAMPLE_S = 2.0  # how often RSS is sampled (wall clock)


def music(clips: int = LOOP_CLIPS) -> np.ndarray:
    """The first ``clips`` shared 4Q clips end to end (16 kHz mono float32)."""
    parts = []
    for path in shared_clips():
        audio, rate = sf.read(path, dtype="float32")
        if rate == RATE_HZ and audio.ndim == 1:
            parts.append(audio)
        if len(parts) == clips:
            break
    if not parts:
        raise SystemExit("error: no 16 kHz mono clips under ../shared/data/4q/audio")
    return np.concatenate(parts)


def rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class Writer(threading.Thread):
    """Writes ``seconds`` of the looped music into ``stdin`` (paced or as fast as it is taken)."""

    def __init__(self, stdin, audio: np.ndarray, seconds: float, paced: bool):
        super().__init__(name="soak-writer", daemon=True)
        self.stdin, self.audio, self.paced = stdin, audio, paced
        self.total = int(round(seconds * RATE_HZ))
        self.written = 0
        self.error: str | None = None

    def run(self) -> None:
        chunk = int(CHUNK_S * RATE_HZ)
        started = time.perf_counter()
        try:
            while self.written < self.total:
                n = min(chunk, self.total - self.written)
                start = self.written % len(self.audio)
                block = np.take(self.audio, np.arange(start, start + n), mode="wrap")
                if self.paced:  # deadline from the start: no drift from sleeping
                    delay = started + (self.written + n) / RATE_HZ - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                self.stdin.write(block.tobytes())
                self.written += n
            self.stdin.close()  # end of stream: listen finishes and exits
        except (BrokenPipeError, ValueError, OSError) as exc:
            self.error = f"the writer stopped: {exc!r}"


def slope_per_hour(points: list[tuple[float, float]], warmup_s: float) -> float | None:
    """Least-squares slope of (audio s, MB) after the warm-up, in MB per audio hour."""
    kept = [(t, mb) for t, mb in points if t >= warmup_s]
    if len(kept) < 3:
        return None
    t, mb = np.array(kept).T
    return float(np.polyfit(t / 3600.0, mb, 1)[0])


def run(args: argparse.Namespace) -> dict:
    seconds = args.hours * 3600.0 if args.hours else args.minutes * 60.0
    audio = music()
    endpoint = free_endpoint()
    sub = Subscriber([endpoint])
    with tempfile.TemporaryDirectory(prefix="moodstream-soak-") as tmp:
        stderr_path = Path(tmp) / "listen.stderr"
        with open(stderr_path, "wb") as stderr:
            command = [sys.executable, "-m", "realtime.listen", "--quiet", "--stdin", "--rate", str(RATE_HZ),
                       "--model", args.model, "--pub", endpoint]  # fmt: skip
            proc = subprocess.Popen(
                command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr
            )
            writer = Writer(proc.stdin, audio, seconds, args.paced)
            feed = sub.feeds[endpoint]
            rss: list[tuple[float, float]] = []  # (audio s analysed, MB)
            started = time.monotonic()
            next_sample = next_line = started
            try:
                # Start writing once the feed is up (the model has loaded): the first status.
                while not feed.statuses:
                    if proc.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                        raise SystemExit(f"error: listen did not start: {stderr_path.read_text()[-1500:]}")
                    sub.poll(0.2)
                writer.start()
                while proc.poll() is None:
                    sub.poll(0.2)
                    now = time.monotonic()
                    if now >= next_sample and feed.moods:
                        mb = rss_mb(proc.pid)
                        if mb is not None:
                            rss.append((feed.moods[-1][1]["t_stream"], mb))
                        next_sample = now + SAMPLE_S
                    if now >= next_line and not args.quiet:
                        done = writer.written / RATE_HZ
                        print(f"\r{done / 60:7.1f} / {seconds / 60:.1f} min of audio, "
                              f"{len(feed.moods)} moods, RSS {rss[-1][1] if rss else 0:.0f} MB",
                              end="", file=sys.stderr, flush=True)  # fmt: skip
                        next_line = now + 5.0
                sub.poll(1.0)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                sub.close()
            if not args.quiet:
                print(file=sys.stderr)
            errors = stderr_path.read_text(errors="replace").strip()
    moods = [m for _, m in feed.moods]
    statuses = [m for _, m in feed.statuses]
    wall_s = time.monotonic() - started
    last = statuses[-1] if statuses else {}
    hop_s = moods[0]["hop_s"] if moods else None
    first_t = moods[0]["t_stream"] if moods else None
    # One window per hop from the first full segment to the end of the audio (the engine's
    # flush adds a last one when the end pads a window).
    expected = None if not moods else math.floor((seconds - first_t) / hop_s + 1e-9) + 1
    report = {
        "command": command_line(),
        "machine": machine(),
        "model": args.model,
        "paced": args.paced,
        "audio_s": seconds,
        "wall_s": round(wall_s, 1),
        "x_realtime": round(seconds / wall_s, 1),
        "exit_code": proc.returncode,
        "writer_error": writer.error,
        "stderr_tail": errors[-600:],
        "moods": {
            "expected": expected,
            "published": moods[-1]["seq"] + 1 if moods else 0,
            "received": len(moods),
        },
        "statuses": {"received": len(statuses), "expected_about": round(wall_s)},
        "gaps": last.get("gaps"),
        "gap_seconds": last.get("gap_seconds"),
        "dropped_samples": last.get("dropped_samples"),
        "sanitized_samples": last.get("sanitized_samples"),
        "rss_mb": {
            "first": rss[0][1] if rss else None,
            "last": rss[-1][1] if rss else None,
            "max": max(mb for _, mb in rss) if rss else None,
            "growth_mb_per_audio_hour": slope_per_hour(rss, args.warmup * seconds),
            "warmup_audio_s": args.warmup * seconds,
        },
        "_rss": rss,
    }
    if args.paced and moods:
        lat = np.array([[m["t_publish"] - moods[0]["t_publish"], m["latency_ms"]] for m in moods])
        minutes = lat[:, 0] / 60.0
        report["latency_ms"] = percentiles(lat[:, 1])
        report["latency_drift_ms_per_min"] = (
            float(np.polyfit(minutes, lat[:, 1], 1)[0]) if len(lat) > 2 else None
        )
        first = lat[minutes < 1, 1]
        final = lat[minutes >= minutes[-1] - 1, 1]
        report["latency_first_minute_p50_ms"] = float(np.median(first)) if len(first) else None
        report["latency_last_minute_p50_ms"] = float(np.median(final)) if len(final) else None
    return report


def table(report: dict) -> str:
    m, r = report["moods"], report["rss_mb"]
    growth = r["growth_mb_per_audio_hour"]
    lines = [
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores; model {report['model']}, "
        f"{'paced' if report['paced'] else 'as fast as it takes it'}",
        f"audio {report['audio_s'] / 3600:.2f} h in {report['wall_s'] / 60:.1f} min ({report['x_realtime']}x real time), "
        f"exit {report['exit_code']}",
        f"moods: expected {m['expected']}, published {m['published']}, received {m['received']}; "
        f"statuses received {report['statuses']['received']} (~{report['statuses']['expected_about']} expected)",
        f"gaps {report['gaps']} ({report['gap_seconds']} s), dropped samples {report['dropped_samples']}, "
        f"sanitised {report['sanitized_samples']}",
        f"RSS {r['first']:.1f} MB at first, {r['last']:.1f} MB at the end, max {r['max']:.1f} MB; growth after "
        f"the warm-up: {'n/a' if growth is None else f'{growth:+.2f}'} MB per audio hour"
        if r["first"] is not None
        else "RSS: no samples",
    ]
    if report.get("latency_ms"):
        lat = report["latency_ms"]
        lines.append(
            f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; drift {report['latency_drift_ms_per_min']:+.2f} ms "
            f"per minute (first minute p50 {report['latency_first_minute_p50_ms']:.1f}, last minute p50 "
            f"{report['latency_last_minute_p50_ms']:.1f})"
        )
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    plt = pyplot()

    t, mb = np.array(report["_rss"]).T if report["_rss"] else (np.zeros(0), np.zeros(0))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(t / 3600.0, mb)
    ax.set_xlabel("audio analysed (hours)")
    ax.set_ylabel("listen RSS (MB)")
    ax.set_title(f"bench soak: {report['model']}, {report['audio_s'] / 3600:.2f} h")
    save_figure(fig, path)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "soak",
        help="hours of real music through listen --stdin: RSS per audio hour, messages, gaps, drift",
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--hours", type=float, metavar="H", help="hours of audio (fast: minutes of wall time)"
    )
    length.add_argument("--minutes", type=float, metavar="M", help="minutes of audio (default 10)")
    p.add_argument("--paced", action="store_true", help="write the audio at its own pace (latency drift)")
    p.add_argument("--model", default="default", help="the model listen runs (default)")
    p.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="the share of the audio before the RSS slope is fitted (0.1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", type=output_file, metavar="OUT", help="write the figures as JSON here")
    p.add_argument("--plot", type=output_file, metavar="OUT.png", help="RSS over audio time, as a PNG")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    if args.hours is None and args.minutes is None:
        args.minutes = 10.0
    length = args.hours * 60 if args.hours is not None else args.minutes
    if not (math.isfinite(length) and length >= 0.25):
        parser.error("the soak needs at least 15 s of audio (--minutes 0.25)")
    if not 0 <= args.warmup < 1:
        parser.error("--warmup is a fraction of the audio, 0 <= F < 1")
    check_models(parser, [args.model])
    report = run(args)
    print(table(report))
    if args.json:
        Path(args.json).write_text(to_json(report) + "\n")
    if args.plot:
        plot(report, args.plot)
    ok = report["exit_code"] == 0 and report["writer_error"] is None
    if not ok:
        print(f"error: listen exit {report['exit_code']}: {report['stderr_tail']}", file=sys.stderr)
    return 0 if ok else 1
