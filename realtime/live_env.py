"""The environment live analysis runs in: thread pools that sleep rather than spin.

Live analysis shares the machine (DJ software, lighting control), so:

- OpenMP threads that spin while they wait turn one busy core into hops of hundreds of ms
  (bench/RESULTS.md, "Threads"): they sleep instead (``OMP_WAIT_POLICY``), as ONNX Runtime's
  already do here;
- numpy's OpenBLAS likewise: its workers spin between calls, and a matrix product of a few
  thousand entries in the live path (the resampler's first version) took 33 % of a core per
  48 kHz stream that way, three times the whole stream's CPU before it (bench/RESULTS.md).  None
  is needed: the hop is small, and torch and ONNX Runtime have threads of their own.

Both are read when the libraries load, so they must be set before numpy and torch are imported:
``realtime.listen`` sets them first thing, and ``bench scale``'s host process of many engines
gets them in its environment.  A value of the user's own wins.  Nothing here imports anything.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

LIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}


def set_live_env(environ: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """``LIVE_ENV`` into ``environ`` (this process's by default) where it has no value; returns it."""
    for name, value in LIVE_ENV.items():
        environ.setdefault(name, value)
    return environ
