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


def test_every_model_is_registered_with_a_recipe_that_exists():
    from train.recipes import RECIPES, recipe_for

    for name in models.available():
        entry = models.entry(name)
        assert entry.recipe in RECIPES, (name, entry.recipe)
        assert recipe_for(name, None) == RECIPES[entry.recipe]
    assert models.entry("segment-attention").recipe == "heads"
    assert models.entry("cp-resnet").recipe == "koutini" and models.entry("crnn-gru").recipe == "amiriparian"


def test_the_model_contract_is_explicit_for_every_model():
    """What the engine and training read is on every model, typed, without probing."""
    for name in ("musicnn-msd", "segment-attention", "crnn-gru", "va-cnn"):
        model = models.build(name)
        assert model.registry_name == name
        assert isinstance(model.pretrained, bool) and isinstance(model.frozen_encoder, bool)
        assert isinstance(model.pretrained_prefixes, tuple) and model.artifact is None
    assert models.build("musicnn-msd").pretrained and not models.build("va-cnn").pretrained
    attention = models.build("segment-attention")
    assert attention.frozen_encoder and attention.embedding_cache_key == "musicnn-msd"
    assert models.build(
        "segment-attention", encoder="musicnn-mtt", freeze_encoder=False
    ).pretrained_prefixes == ("encoder.",)
    assert models.build("crnn-gru").pretrained_prefixes == ("features.",)
    default = models.resolve("default")
    assert default.pretrained and default.artifact is not None and default.artifact_folder.name == "default"
    assert default.head_layer("valence_arousal") is not None and default.head_layer("nope") is None


def test_resolve_and_check_name_take_what_every_command_takes(tmp_path):
    models.check_name("default")
    models.check_name("musicnn-msd")
    models.check_name(str(tmp_path))  # a path: resolve says what is wrong with it
    with pytest.raises(models.UnknownModelError, match="available: "):
        models.check_name("musicnn-xyz")
    with pytest.raises(ValueError, match="is a path but not a model artifact"):
        models.resolve(str(tmp_path))
