"""Fixtures for the whole suite: the shared data folder beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

# One torch/OpenMP thread per process unless the caller says otherwise: three workers on two
# cores, each worker and each subprocess it starts (listen, train, bench) with a thread per core,
# kept the cores oversubscribed: with this the suite's wall time went 688 -> 495 s and its user
# CPU time ~1380 -> 784 s (the 1380 measured with four workers).  Set before torch is imported,
# and inherited by the workers and subprocesses; a test that needs more threads asks for them
# (--threads, torch.set_num_threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real music and references); tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# Modules that take a minute or more on one worker (a shared fit, several subprocesses each),
# longest first (seconds on one worker of a whole run, 2026-12-02, in the comments).  Under
# pytest-xdist a module's tests stay on one worker (--dist loadscope), and modules are handed out
# in this order (--no-loadscope-reorder: xdist's own order, since 3.8, is by number of tests, which
# had test_fit start ~2 min in and test_listen_faults ~7.5 min in), so these run beside everything
# else instead of alone at the end of the run.
LONGEST_FIRST = (
    "tests/train/test_fit.py",  # 282
    "tests/realtime/test_listen.py",  # 160
    "tests/models/test_export.py",  # 130
    "tests/realtime/test_analyze.py",  # 115
    "tests/bench/test_scale.py",  # 110
    "tests/bench/test_latency.py",  # 86
    "tests/realtime/test_listen_faults.py",  # 81
    "tests/models/test_deepspectrum.py",  # 79
    "tests/bench/test_e2e.py",  # 68
    "tests/realtime/test_listen_outputs.py",  # 65
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module, and of the other modules, stays
