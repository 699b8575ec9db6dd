"""``python -m bench edges``: the modes differ only where a window's edge meets another window."""

from __future__ import annotations

import torch

import models
from bench.edges import MODES, encode


def test_edge_context_matters_only_between_windows():
    model = models.build("musicnn-msd").eval()
    mel = torch.randn(96, 2 * 187)
    with torch.inference_mode():
        exact = encode(model, mel, "exact")
        torch.testing.assert_close(exact, model.encode(torch.stack([mel[:, :187], mel[:, 187:]])))
        # One window alone: the stream's edges are the window's, so every mode is musicnn's.
        for mode in MODES:
            torch.testing.assert_close(encode(model, mel[:, :187], mode), exact[:1], atol=1e-4, rtol=0)
        # Two windows side by side: context across the edge between them changes both.
        for mode in ("timbral", "stream"):
            assert (encode(model, mel, mode) - exact).abs().amax(dim=1).min() > 1e-3, mode
