"""segment-attention: attention pooling over a variable number of cached segments."""

from __future__ import annotations

import pytest
import torch

import models


@pytest.fixture(scope="module")
def model():
    return models.build("segment-attention").eval()


def test_heads_keep_the_encoders_tags(model):
    assert list(model.heads) == ["mood", "valence_arousal", "tags"]
    assert model.heads["tags"].labels == models.build("musicnn-msd").heads["tags"].labels
    assert model.frontend == models.build("musicnn-msd").frontend and model.segment_frames == 187


def test_pooling_is_a_convex_combination_weighted_by_recency(model):
    e = torch.randn(2, 5, model.embedding_dim)
    with torch.no_grad():
        pooled = model.pool(e)
    lo, hi = e.min(dim=1).values, e.max(dim=1).values
    assert ((pooled >= lo - 1e-5) & (pooled <= hi + 1e-5)).all()
    with torch.no_grad():  # one segment: the attention can only return it
        assert torch.allclose(model.pool(e[:, :1]), e[:, 0], atol=1e-6)
        # Only the newest max_segments count.
        long = torch.randn(1, 40, model.embedding_dim)
        assert torch.allclose(model.pool(long), model.pool(long[:, -16:]), atol=1e-6)


def test_one_segments_shortcut_is_not_traced_into_a_graph_for_every_k(model):
    """One segment is returned as it is, but a graph traced at K = 1 (an export's example) must
    still weigh K > 1 segments: the shortcut stays out of traced graphs."""
    e = torch.randn(2, 5, model.embedding_dim)
    with torch.no_grad():
        assert torch.equal(model.pool(e[:, 4:]), e[:, 4])
        traced = torch.jit.trace(model.attention, e[:, :1], check_trace=False)
        torch.testing.assert_close(traced(e), model.pool(e))


def test_inference_joins_the_heads_into_one_product_that_follows_their_weights():
    """In inference the heads are one matrix product of their weights side by side, the encoder's
    own linear heads among them (musicnn's tags), the same logits as each head's layer; weights
    changed in place (calibration folds its temperatures in so) are seen at the next call.  An
    encoder head that is no linear layer (two encoders joined) stays the encoder's ``predict``."""
    model = models.build("segment-attention").eval()
    pooled = torch.randn(3, model.embedding_dim)
    for _ in range(2):  # the heads as built, then with weights changed in place
        with torch.enable_grad():
            expected = {name: t.detach() for name, t in model.predict(pooled).items()}
        with torch.inference_mode():
            got = model.predict(pooled)
            names, *_, rest = model._joined_heads()
        assert list(got) == list(expected) and names == list(expected) and not rest
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0)
        with torch.no_grad():
            model.outputs["mood"].weight.mul_(2.0)
            model.outputs["valence_arousal"].bias.add_(1.0)
            model.encoder.tags.weight.mul_(-1.0)
    # With the encoder's heads alone, they are the product.
    bare = models.build("segment-attention", tag_heads={}, valence_arousal=False).eval()
    with torch.inference_mode():
        assert list(bare.predict(pooled)) == ["tags"]
    for heads in ({}, {"tag_heads": {}, "valence_arousal": False}):  # the encoder's heads alone too
        joined = models.build("segment-attention", encoder="musicnn-msd+musicnn-mtt", **heads).eval()
        pooled = torch.randn(3, joined.embedding_dim)
        with torch.enable_grad():
            expected = joined.predict(pooled)
        with torch.inference_mode():
            got = joined.predict(pooled)
            assert joined._joined_heads()[-1] == {"tags": "tags"}
        assert list(got) == list(expected)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name].detach(), atol=1e-5, rtol=0)


def test_frozen_encoder_gets_no_gradient_and_keeps_its_statistics():
    model = models.build("segment-attention").train()
    assert not model.encoder.training
    x = torch.randn(3, 96, 187)
    sum(v.sum() for v in model(x).values()).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.attention.project.weight.grad is not None


def test_any_encoder_and_clear_errors():
    m = models.build(
        "segment-attention", encoder="musicnn-mtt", tags=("calm", "energetic"), valence_arousal=False
    )
    assert list(m.heads) == ["mood", "tags"] and len(m.heads["tags"].labels) == 50
    with pytest.raises(ValueError, match="cannot encode with itself"):
        models.build("segment-attention", encoder="segment-attention")
    with pytest.raises(models.UnknownModelError):
        models.build("segment-attention", encoder="nope")


def test_two_encoders_joined_side_by_side():
    """encoder="musicnn-msd+musicnn-mtt": both embeddings of each window, concatenated (whole
    windows and the streaming encoder alike, prepared ahead or not); the feed's MSD tags come
    from the first encoder."""
    joined = models.build("segment-attention", encoder="musicnn-msd+musicnn-mtt").eval()
    msd, mtt = models.build("musicnn-msd").eval(), models.build("musicnn-mtt").eval()
    assert joined.embedding_dim == 400 and joined.embedding_cache_key == "musicnn-msd+musicnn-mtt"
    assert joined.encoder.pretrained and joined.heads["tags"] == msd.heads["tags"]
    frames = torch.randn(96, 300)
    patches = torch.stack([frames[:, :187], frames[:, 62:249]])
    with torch.no_grad():
        whole = joined.encode(patches)
        torch.testing.assert_close(whole, torch.cat([msd.encode(patches), mtt.encode(patches)], dim=1))
        streamed = joined.streaming_encoder().encode(frames, 0, [187, 249])
        torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=0)
        stream = joined.streaming_encoder()  # the next window prepared ahead, as a live loop does
        prepared = []
        for end in (187, 249):
            stream.prepare(frames[:, : end - 3], 0, end)
            prepared.append(stream.encode(frames[:, :end], 0, [end]))
        torch.testing.assert_close(torch.cat(prepared), whole, atol=1e-4, rtol=0)
        torch.testing.assert_close(joined.predict(whole)["tags"], msd.predict(whole[:, :200])["tags"])
    with pytest.raises(ValueError, match="cannot join musicnn-msd \\+ va-cnn"):
        models.build("segment-attention", encoder="musicnn-msd+va-cnn")
    with pytest.raises(ValueError, match="cannot encode with itself"):
        models.build("segment-attention", encoder="musicnn-msd+segment-attention")
    with pytest.raises(models.UnknownModelError):
        models.build("segment-attention", encoder="musicnn-msd+nope")
