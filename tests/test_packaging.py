"""A plain ``pip install`` of the wheel works outside the checkout; the ``moodstream`` command runs every module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

CLIP = "4q/audio/Q1/MT0000040632.ogg"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("moodstream-*.whl")
    return path


def test_the_wheel_holds_the_runtime_files_and_no_test_or_benchmark_suite(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "realtime/schema/feed.schema.json",
        "realtime/outputs/map.schema.json",
        "models/default/config.json",
        "models/default/weights.safetensors",
        "realtime/web/static/index.html",
        "realtime/web/static/view.js",
        "realtime/web/static/chart.umd.min.js",
        "realtime/web/static/LICENSE.chart.js.md",
        "moodstream/__main__.py",
        "bench/latency.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/") or "/suite/" in n or n.endswith("conftest.py")]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "moodstream = moodstream.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_an_installed_wheel_analyses_a_clip_away_from_the_checkout(wheel, shared_data, tmp_path):
    """A fresh virtual environment outside the checkout gets the wheel (pip install, no source tree).

    Its dependencies come from this environment's site-packages (a .pth file), so the test does
    not download torch again; what it proves is the wheel: its modules and data, and its command.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [python, "-c", "import realtime, models; print(realtime.__file__); print(models.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(line.startswith(str(site)) for line in where.stdout.split()), (
        where.stdout
    )  # the wheel's, not ours
    proc = subprocess.run(
        [venv / "bin" / "moodstream", "analyze", str(shared_data / CLIP), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    windows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(windows) > 20 and -1 <= windows[0]["valence"] <= 1 and "Happy" in windows[0]["tags"]
    # The web view's page comes from the wheel too.
    page = subprocess.run(
        [python, "-c", "from realtime.web.server import WebView; w = WebView('127.0.0.1', 0); "
         "print(sorted(len(body) > 0 for body, _ in w._assets.values())); w.close()"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert page.returncode == 0 and page.stdout.strip() == str([True] * 5), page.stderr[-2000:]


def test_the_command_names_every_module_and_refuses_what_it_does_not_know():
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "moodstream", *a], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    listing = run("--help")
    assert listing.returncode == 0
    for command in ("listen", "analyze", "subscribe", "bridge", "view", "keys", "models", "train", "bench"):
        assert f"  {command} " in listing.stdout
    unknown = run("lisen")
    assert unknown.returncode == 2 and "unknown command 'lisen'" in unknown.stderr
    help_ = run("subscribe", "--help")
    assert help_.returncode == 0 and "--topic" in help_.stdout


def test_each_command_names_itself_as_it_was_run(capsys):
    """``moodstream listen --help`` shows ``usage: moodstream listen``, not the module's
    ``python -m realtime.listen``, and so does a mistyped option's error."""
    from moodstream.__main__ import COMMANDS, main

    for command in COMMANDS:
        with pytest.raises(SystemExit) as ended:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert ended.value.code == 0 and out.startswith(f"usage: moodstream {command} "), (command, out[:200])
    with pytest.raises(SystemExit) as ended:
        main(["listen", "--hop", "0"])
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith("error: argument --hop: 0 is out of range"), err
    assert err.endswith("(moodstream listen --help lists the options)\n"), err
