"""``python -m bench scale`` runs concurrent streams and writes its table, JSON and chart (a quick round)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Feed, ListenProcess
from bench.scale import Step, drained, memory_shortfall, schedule
from realtime.live_env import LIVE_ENV
from tests.bench.refused import refused

REPO = Path(__file__).resolve().parents[2]
MODEL = "musicnn-msd"  # the default model's encoder: the same cost, without depending on the trained artifact


def scale(*options: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "scale", "--model", MODEL, *options],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def check_step(r: dict, layout: str, streams: int) -> None:
    assert (r["layout"], r["threads"], r["streams"]) == (layout, 1, streams)
    assert len(r["per_stream"]) == streams
    assert r["moods"] >= 3 * streams and r["missed"] == 0, r
    assert r["lag_ms"]["p50"] <= r["lag_ms"]["p99"] and r["process_ms"]["p50"] > 0
    assert r["hop_ms"] == 256.0  # listen's default reaction (balanced)
    memory = r["memory"]
    assert memory["processes"] == (streams if layout == "processes" else 1)
    assert 0 < memory["uss_per_process_mib"] <= memory["pss_per_process_mib"] <= memory["rss_per_process_mib"]
    assert isinstance(r["sustained"], bool) and (r["sustained"] or r["why_not"])
    # CPU over the measured span from /proc: a paced stream at one torch thread uses some, at most a
    # core and its helper threads' share.
    assert 0 < r["cpu"]["per_stream_pct"] <= 150 and r["cpu"]["cores_total"] > 0
    assert r["waited_s"] >= 1.0  # --settle 1, then until every stream kept up


def test_processes_write_table_json_and_png(tmp_path, shared_data):
    out, png = tmp_path / "scale.json", tmp_path / "scale.png"
    proc = scale(
        "--streams", "1,2", "--seconds", "5", "--settle", "1", "--threads", "1",
        "--json", str(out), "--plot", str(png),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "USS/proc" in proc.stdout
        and "CPU/str" in proc.stdout
        and "processes, threads 1: sustains" in proc.stdout
    )
    report = json.loads(out.read_text())
    assert {"machine", "date", "command", "model", "clip", "seconds", "summary", "results", "table"} <= set(
        report
    )
    assert report["command"].startswith(f"python -m bench scale --model {MODEL} --streams 1,2")
    one, two = report["results"]
    check_step(one, "processes", 1)
    check_step(two, "processes", 2)
    assert two["memory"]["rss_total_mib"] > one["memory"]["rss_total_mib"]
    summary = report["summary"]["processes, threads 1"]
    assert summary["pss_per_extra_stream_mib"] > 0 and summary["uss_per_process_mib"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_threads_layout_runs_several_engines_in_one_process(tmp_path, shared_data):
    out = tmp_path / "scale.json"
    proc = scale(
        "--layout", "threads", "--streams", "2", "--seconds", "5", "--settle", "1", "--threads", "1",
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [step] = json.loads(out.read_text())["results"]
    check_step(step, "threads", 2)


def test_the_host_of_many_engines_starts_in_listens_environment(tmp_path, shared_data, monkeypatch):
    """bench.scale loads numpy before its engines' listen could set the thread pools' environment
    (realtime/live_env.py), so the host is started with it."""
    for name in LIVE_ENV:
        monkeypatch.delenv(name, raising=False)
    clip = shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg"
    host = ListenProcess(["--file", str(clip), "--realtime"], tmp_path, "host", model=MODEL, streams=2)
    proc = Path(f"/proc/{host.pid}")
    try:
        deadline = time.monotonic() + 30
        # Until the child has exec'd, /proc shows the environment it forked with (the test's).
        while b"bench.scale" not in (proc / "cmdline").read_bytes():
            assert time.monotonic() < deadline and host.proc.poll() is None, host.error()
            time.sleep(0.01)
        entries = (proc / "environ").read_bytes().decode().split("\0")
    finally:
        host.stop(grace_s=0.0)
    environ = dict(entry.split("=", 1) for entry in entries if "=" in entry)
    assert {name: environ.get(name) for name in LIVE_ENV} == LIVE_ENV


def test_memory_is_read_after_the_measured_span(tmp_path, shared_data, monkeypatch):
    """The kernel walks a process's page tables to sum smaps_rollup (~20 ms for a listen process):
    read every 2 s within the span, that held up the one subscriber ~0.3 s at 16 streams, read as
    their lag p99 (16 streams at hop 0.25 s: 592.7 ms, not sustained; read after: 29.4 and 42.8 ms,
    sustained).  A read made to take 2 s must not show in the lag."""
    import bench.scale

    read = bench.scale.memory_kb

    def slow(pid: int):
        time.sleep(2.0)
        return read(pid)

    monkeypatch.setattr(bench.scale, "memory_kb", slow)
    clip = shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg"
    step = bench.scale.measure(1, clip, 6.0, tmp_path, settle_s=1.0, model=MODEL, threads=1)
    figures = step.figures
    assert figures["moods"] >= 10 and figures["memory"]["processes"] == 1
    assert figures["lag_ms"]["p99"] < 1500, figures["lag_ms"]  # the paced feed's bound under load


def fake(capacity: int, tried: list[int]):
    def run(n: int) -> Step:
        tried.append(n)
        return Step(n, 1, "processes", {"sustained": n <= capacity})

    return run


def test_schedule_doubles_then_bisects():
    tried: list[int] = []
    steps = schedule(32, fake(11, tried))
    assert tried == [1, 2, 4, 8, 16, 12, 10, 11]
    assert [s.streams for s in steps] == sorted(tried)
    tried = []
    schedule(6, fake(100, tried))
    assert tried == [1, 2, 4, 6]  # never past --max-streams, and --max-streams itself is tried
    tried = []
    schedule(8, fake(0, tried))
    assert tried == [1]


def test_bad_options_are_clear(capsys):
    assert "'many' is neither a positive number nor 'default'" in refused(
        capsys, "scale", "--threads", "1,many"
    )
    assert "unknown layout ['fibers']" in refused(capsys, "scale", "--layout", "fibers")


def test_no_step_is_started_without_the_memory_it_needs():
    small = Step(2, 1, "processes", {"sustained": True, "memory": {"pss_total_mib": 500.0}})
    assert memory_shortfall(4, []) is None and memory_shortfall(4, [small]) is None
    huge = Step(3, 1, "processes", {"sustained": True, "memory": {"pss_total_mib": 1e9}})
    assert "not run: 4 streams would need about" in memory_shortfall(4, [small, huge])


def test_the_measurement_waits_for_every_stream_to_keep_up():
    """A stream is drained once its newest window arrives within a hop of its capture: the
    backlog of N processes starting at once is not measured as the machine's limit."""
    behind = Feed(
        moods=[(100.0, {"t_capture": 99.0, "hop_s": 0.256}), (100.1, {"t_capture": 99.5, "hop_s": 0.256})]
    )
    caught_up = Feed(moods=[*behind.moods, (100.2, {"t_capture": 100.0, "hop_s": 0.256})])
    assert not drained(Feed()) and not drained(behind) and drained(caught_up)
