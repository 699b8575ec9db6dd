"""The registry's contract: names, overrides, errors that say what is allowed."""

from __future__ import annotations

import pytest

import models


def test_musicnn_variants_are_registered():
    assert {"musicnn-msd", "musicnn-mtt"} <= set(models.available())


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(models.UnknownModelError, match="available: .*musicnn-msd"):
        models.build("musicnn-xyz")


def test_bad_override_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['depth'\]; allowed: pretrained=True"):
        models.build("musicnn-msd", depth=3)


def test_model_declares_frontend_segment_and_heads():
    model = models.build("musicnn-mtt", pretrained=False)
    assert model.frontend.sample_rate_hz == 16000 and model.frontend.n_mels == 96
    assert model.segment_frames == 187
    assert abs(model.segment_seconds - 2.992) < 1e-9
    assert model.heads["tags"].kind == "tags" and len(model.heads["tags"].labels) == 50


def test_frontend_config_round_trips_and_rejects_unknown_keys():
    fe = models.FrontendConfig(sample_rate_hz=12000, f_max_hz=6000.0, scaling="db")
    assert models.FrontendConfig.from_dict(fe.to_dict()) == fe
    with pytest.raises(ValueError, match="unknown frontend keys"):
        models.FrontendConfig.from_dict({**fe.to_dict(), "hop": 3})
    with pytest.raises(ValueError, match="band limits"):
        models.FrontendConfig(f_max_hz=9000.0)
