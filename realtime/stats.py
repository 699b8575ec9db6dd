"""Percentiles of timings, one way for the engine's status and every benchmark."""

from __future__ import annotations

import numpy as np


def percentiles(values, points: tuple[int, ...] = (50, 99), extremes: bool = False) -> dict:
    """{"p50": ..., "p99": ...} of ``values`` (rounded to 0.01; None for each when there are none);
    with ``extremes`` also "max" and "mean"."""
    values = np.asarray(values, dtype=np.float64)
    keys = [f"p{p}" for p in points] + (["max", "mean"] if extremes else [])
    if not values.size:
        return dict.fromkeys(keys)
    out = {f"p{p}": round(float(v), 2) for p, v in zip(points, np.percentile(values, points), strict=True)}
    if extremes:
        out["max"] = round(float(values.max()), 2)
        out["mean"] = round(float(values.mean()), 2)
    return out
