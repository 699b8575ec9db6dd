"""What every benchmark report shares: the machine, the command, percentiles, JSON, option lists."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys

from realtime.stats import percentiles as _percentiles


def percentiles(values) -> dict:
    """p50, p95, p99, max and mean (ms), rounded to 0.01; None for each without values."""
    return _percentiles(values, (50, 95, 99), extremes=True)


def machine() -> dict:
    """The CPU model, the cores this process may use, torch's threads, the GPU and the versions."""
    import onnxruntime
    import torch

    return {
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def machine_line(m: dict) -> str:
    """``machine()`` as the first line of a bench command's output."""
    return (
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, onnxruntime {m['onnxruntime']}, GPU {m['gpu']}"
    )


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU as /proc/cpuinfo names it, with its family, model and widest vector unit.

    A virtual machine may be shown only "AMD EPYC": two such hosts on record ran musicnn's
    encoder 2x apart (an AVX2 one and an AVX-512 one), so a figure names which it came from.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not line.strip():
            break  # the first processor is enough
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    vector = next(
        (v for f, v in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if f in flags), None
    )
    details = [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields else []
    details += [vector] if vector else []
    return f"{name} ({', '.join(details)})" if details else name


def command_line() -> str:
    return "python -m bench " + shlex.join(sys.argv[1:])


def to_json(report: dict) -> str:
    """The report as JSON, without its private ``_`` keys (arrays kept for plots), at any depth."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=1)


def check_list(parser, text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    """``--what a,b,c`` as a list; an empty list or a value not ``allowed`` is a parser error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        parser.error(f"--{what} needs at least one value")
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        parser.error(f"unknown {what} {bad}; {what}: {', '.join(allowed)}")
    return items


def cell(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def check_models(parser, names: list[str]) -> None:
    """Each name one ``--model`` could load (a registered name, default, an artifact), else a parser error."""
    import models

    for name in names:
        try:
            models.check_name(name)
        except models.UnknownModelError as exc:
            parser.error(f"{exc}; or default, or a trained artifact directory")


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display), imported when a chart is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> None:
    """Lay out, write as PNG and release a chart."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
