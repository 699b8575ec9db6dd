"""Which torch to install, as pip arguments on stdout, and why on stderr (``make`` runs it).

    python tools/torch-choice.py VERSION CHOICE CPU_INDEX

CHOICE ``auto``: the CUDA build where ``nvidia-smi`` works (PyPI's torch is that build), else the
CPU build: what ``pip install torch==VERSION`` resolves to when that is already a CPU build (a
``+cpu`` wheel, or one without NVIDIA packages: on our CI machines a local wheel), otherwise the
same version from PyTorch's CPU wheel index (PyPI's Linux wheel pulls several GB of CUDA
libraries).  ``cpu`` or ``cuda`` skip the detection.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys


def gpu_visible() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0


def default_is_cpu_build(spec: str) -> bool:
    """Whether ``pip install SPEC`` from the configured indexes would install a CPU-only torch."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
         "--quiet", "--report", "-", spec],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        return False
    for item in json.loads(proc.stdout)["install"]:
        metadata = item["metadata"]
        if metadata["name"].lower() == "torch":
            requires = " ".join(metadata.get("requires_dist") or [])
            return "+cpu" in metadata["version"] or "nvidia-" not in requires
    return False


def main() -> int:
    version, choice, cpu_index = sys.argv[1:4]
    spec = f"torch=={version}"
    if choice == "auto":
        choice = "cuda" if gpu_visible() else "cpu"
        why = "nvidia-smi sees a GPU" if choice == "cuda" else "no NVIDIA GPU visible (nvidia-smi)"
    else:
        why = f"TORCH={choice}"
    if choice == "cuda":
        print(f"moodstream: torch {version}, CUDA build ({why})", file=sys.stderr)
        print(spec)
    elif choice == "cpu" and default_is_cpu_build(spec):
        print(
            f"moodstream: torch {version}, CPU build ({why}; the configured index has one)", file=sys.stderr
        )
        print(spec)
    elif choice == "cpu":
        print(f"moodstream: torch {version}, CPU build from {cpu_index} ({why})", file=sys.stderr)
        print(f"--index-url {cpu_index} {spec}")
    else:
        print(f"TORCH must be auto, cpu or cuda, not {choice!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
