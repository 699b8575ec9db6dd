"""The pytest-benchmark suite in ``bench/suite/`` stays out of the default run, and still runs: one round per CI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_default_run_collects_tests_only():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert config["testpaths"] == ["tests"]  # `python -m pytest` never times the benchmarks


def test_benchmark_suite_runs_once_with_its_checks():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/suite", "-q", "-n", "0", "--benchmark-disable", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 10 and "failed" not in summary and "error" not in summary, summary
