"""The musicnn port against the original TensorFlow model's outputs on real clips."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.export import export_streaming, max_difference_streaming
from models.frontend import MelFrontend
from models.musicnn import (
    CHUNK_SEGMENTS,
    SEGMENT_FRAMES,
    SPECTRAL_MAX_FRAMES,
    TIMBRAL_BLOCKS,
    _FreqPooledConv,
    _onednn_usable,
    _spectral_max_over_freq,
    convert_checkpoint,
    package_checkpoint,
)
from models.weights import WeightsError


def _patches(model, path):
    audio, rate = sf.read(path, dtype="float32")
    assert rate == model.frontend.sample_rate_hz
    with torch.inference_mode():
        mel = MelFrontend(model.frontend)(torch.from_numpy(audio)[None])[0]
    n = mel.shape[1] // SEGMENT_FRAMES  # non-overlapping, trailing frames dropped, as the reference
    return torch.stack([mel[:, i * SEGMENT_FRAMES : (i + 1) * SEGMENT_FRAMES] for i in range(n)])


@pytest.mark.parametrize("variant", ["msd", "mtt"])
def test_port_matches_the_original_model(shared_data, variant):
    ref = np.load(shared_data / "reference" / "musicnn" / f"{variant.upper()}_musicnn.npz")
    model = models.build(f"musicnn-{variant}")
    assert list(model.heads["tags"].labels) == list(ref["tags"])
    for i, rel in enumerate(ref["files"]):
        with torch.inference_mode():
            embedding = model.encode(_patches(model, shared_data / rel))
            probs = torch.sigmoid(model.predict(embedding)["tags"]).numpy()
        expected = ref[f"t{i}"]
        assert probs.shape == expected.shape, rel
        clip, clip_ref = probs.mean(axis=0), expected.mean(axis=0)
        assert np.abs(clip - clip_ref).max() < 0.02, rel
        assert list(np.argsort(-clip)[:5]) == list(np.argsort(-clip_ref)[:5]), rel
        # Tighter than the acceptance bound: the port is the same function, not an approximation.
        assert np.abs(probs - expected).max() < 1e-3, rel
        np.testing.assert_allclose(embedding.numpy(), ref[f"p{i}"], atol=1e-3)


def test_weights_are_cached_as_safetensors(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    model = models.build("musicnn-msd")
    assert "converting musicnn MSD weights" in capfd.readouterr().err
    cached = tmp_path / "cache" / "musicnn-msd.safetensors"
    assert cached.is_file()
    again = models.build("musicnn-msd")  # second use reads the cache, silently
    assert "converting" not in capfd.readouterr().err
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOODSTREAM_MUSICNN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(WeightsError, match=r"pip install --no-deps musicnn==0.1.0"):
        models.build("musicnn-mtt")


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MOODSTREAM_CACHE", str(blocker / "cache"))
    with pytest.raises(WeightsError, match="MOODSTREAM_CACHE"):
        models.build("musicnn-msd")


def test_corrupt_cache_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path))
    (tmp_path / "musicnn-msd.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read weights"):
        models.build("musicnn-msd")


def test_untrained_build_and_shapes():
    model = models.build("musicnn-msd", pretrained=False)
    assert model.pretrained is False
    out = model(torch.randn(2, 96, SEGMENT_FRAMES))
    assert out["tags"].shape == (2, 50)
    assert model.encode(torch.randn(3, 96, SEGMENT_FRAMES)).shape == (3, 200)


def test_conversion_fills_every_parameter():
    model = models.build("musicnn-msd", pretrained=False)
    state = convert_checkpoint(package_checkpoint("msd"), model)
    assert set(state) == set(model.state_dict())


def _shuffle_batch_norms(model, seed=0):
    """Batch-norm statistics and scales of both signs, as any training run could leave them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.randn(n, generator=g)
            m.bias.data = torch.randn(n, generator=g)
            m.running_mean.data = torch.randn(n, generator=g)
            m.running_var.data = torch.rand(n, generator=g) + 0.5
    return model


@pytest.mark.parametrize("weights", ["published", "shuffled batch norms"])
def test_folded_inference_is_the_same_function(weights):
    """Eval mode pools before batch norm (oneDNN under no_grad, plain ops otherwise): same numbers."""
    model = models.build("musicnn-msd")
    if weights != "published":
        _shuffle_batch_norms(model)
    assert any((m.bn.weight < 0).any() for m in model.front)  # some channels take the min over frequency
    g = torch.Generator().manual_seed(1)
    patch = 4.0 * torch.rand(2 * CHUNK_SEGMENTS + 1, 96, SEGMENT_FRAMES, generator=g)  # chunked: 3 + 3 + 1
    with torch.inference_mode():
        assert _onednn_usable(patch) == torch.backends.mkldnn.is_available()
        layers = model.encode(patch, folded=False)
        fast = model.encode(patch)
    differentiable = model.encode(patch)  # autograd on: the path ONNX export and torch.compile trace
    assert differentiable.requires_grad
    np.testing.assert_allclose(fast.numpy(), layers.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(differentiable.detach().numpy(), layers.numpy(), atol=1e-5, rtol=1e-5)
    one = model.encode(patch[:1], folded=False)  # batch 1 and the chunks see the same function
    np.testing.assert_allclose(fast[:1].numpy(), one.detach().numpy(), atol=1e-5, rtol=1e-5)


def test_the_folded_front_end_follows_weights_changed_in_place():
    """``folded`` keeps its kernel between calls: a weight or statistic changed in place (a
    training step, a state dict loaded) must be seen by the next call."""
    model = models.build("musicnn-msd")
    patch = 4.0 * torch.rand(1, 96, SEGMENT_FRAMES, generator=torch.Generator().manual_seed(2))

    def check():
        with torch.inference_mode():
            np.testing.assert_allclose(
                model.encode(patch).numpy(), model.encode(patch, folded=False).numpy(), atol=1e-5, rtol=1e-5
            )

    check()  # fills the cache
    with torch.no_grad():
        model.front[0].conv.weight.mul_(-0.5)  # in place: the same tensor at a new version
        model.front[2].bn.running_var.add_(1.0)
    check()
    _shuffle_batch_norms(model)  # other tensors
    check()


def _every_channel(model, patch):
    """``encode``'s function the plain way: every filter, all 561 channels through the mid and back
    end, the layers in TensorFlow's order (eval mode)."""
    x = model.bn_input(patch.transpose(1, 2).unsqueeze(1))
    front = torch.cat([block(x) for block in model.front], dim=1)
    layers, h = [], front
    for j, layer in enumerate(model.mid):
        h = layer(h) + (h if j else 0)
        layers.append(h)
    features = torch.cat([front, *layers], dim=1)
    pooled = torch.stack([features.amax(dim=2), features.mean(dim=2)], dim=2).flatten(1)
    return model.bn_dense(torch.relu(model.dense(model.bn_pool(pooled))))


def test_dead_filters_are_left_out_and_change_nothing():
    """Most of the published MSD model's front-end filters are dead (weights ~1e-30): eval mode
    convolves only the live ones and carries their channels alone, the rest as constants.  The
    same numbers as every channel computed the plain way; a dead filter brought back to life in
    place is seen by the next call, and so are the back end's weights changed in place.  The
    published dead channels' values are ~3e-6: with batch norms shuffled they are not, and the
    mid and back end must take them in.  A model with none dead (random initial weights) takes
    the same path."""
    model = models.build("musicnn-msd")
    patch = 4.0 * torch.rand(2, 96, SEGMENT_FRAMES, generator=torch.Generator().manual_seed(3))

    def check(live_per_block):
        with torch.inference_mode():
            x = model.bn_input(patch[:1].unsqueeze(1))
            live = [block.folded(x).shape[1] for block in model.front]
            assert live == live_per_block if live_per_block else sum(live) < 100
            expected = _every_channel(model, patch).numpy()
            np.testing.assert_allclose(model.encode(patch).numpy(), expected, atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(
                model.encode(patch, folded=False).numpy(), expected, atol=1e-5, rtol=1e-5
            )

    check([23, 14, 3, 7, 17])  # 64 of 561: the rest moves no channel by more than 1e-8 per unit of input
    with torch.no_grad():  # the back end's weights changed in place: its fold over the live entries follows
        model.dense.weight.mul_(0.5)
        model.bn_pool.running_var.add_(1.0)
    check([23, 14, 3, 7, 17])
    dead = int(model.front[2].conv.weight.flatten(1).abs().amax(1).argmin())
    with torch.no_grad():
        model.front[2].conv.weight[dead].copy_(
            0.1 * torch.randn(128, 1, generator=torch.Generator().manual_seed(4))
        )
    check([23, 14, 4, 7, 17])
    _shuffle_batch_norms(model)
    check(None)
    model = models.build("musicnn-msd", pretrained=False).eval()
    check([204, 204, 51, 51, 51])


@pytest.mark.parametrize(("variant", "live_outputs"), [("msd", [20, 64, 64]), ("mtt", [21, 64, 64])])
def test_the_mid_ends_dead_filters_are_left_out_and_change_nothing(shared_data, variant, live_outputs):
    """Most of the first mid-end layer's filters are dead too (weights ~1e-26): eval mode computes
    its live outputs alone, and the next layer convolves only those, the constant ones' share
    added (with the window's zero padding at its edges).  On a real clip's front-end features, for
    a whole window's padding and a piece's, each layer is the plain one's; a dead filter brought
    back to life in place is seen by the next call."""
    audio, _ = sf.read(shared_data / "4q/audio/Q3/MT0000044741.ogg", dtype="float32")
    model = models.build(f"musicnn-{variant}").eval()

    def check(live_outputs):
        with torch.inference_mode():
            mel = MelFrontend(model.frontend)(torch.from_numpy(audio[: 16000 * 4])[None])[0]
            x = model.bn_input(mel[None, None, :, :SEGMENT_FRAMES])
            front = torch.cat([block.folded(x) for block in model.front], dim=1)  # live channels
            live = model._live_layout(front)
            assert [len(spec.weight) for spec in live.mid] == live_outputs
            plain = model.bn_input(mel[None, :, :SEGMENT_FRAMES].transpose(1, 2).unsqueeze(1))
            h = torch.cat([block(plain) for block in model.front], dim=1)  # all 561 channels
            for j, layer in enumerate(model.mid):
                for pad, piece in [((3, 3), slice(None)), ((3, 0), slice(0, 40)), ((0, 3), slice(100, None))]:
                    given = front if j == 0 else h
                    got = model._mid_layer(j, given[..., piece], pad, live)
                    expected = layer.part(h[..., piece], pad)
                    # To float32's rounding of sums of ~450 products of features up to ~50 (5e-5
                    # here); a constant share left out moved outputs by 0.25
                    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4, rtol=0)
                y = layer.part(h, (3, 3))
                h = y + h if j else y

    check(live_outputs)
    first = model.mid[0]
    dead = int(first.conv.weight.flatten(1).abs().amax(1).argmin())
    with torch.no_grad():
        first.conv.weight[dead].copy_(
            0.01 * torch.randn(first.conv.weight.shape[1:], generator=torch.Generator().manual_seed(5))
        )
    check([live_outputs[0] + 1, *live_outputs[1:]])


def _onnx_front_end_filters(model, folder) -> tuple[int, float]:
    """The front-end filters the exported encoder convolves once ONNX Runtime has folded its
    constants (the out-channels of its one-input-channel 2-D convolutions), and its largest
    difference from PyTorch's."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    encoder, head = export_streaming(model, folder)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # constant folding
    options.optimized_model_filepath = str(folder / "folded.onnx")
    ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(folder / "folded.onnx")).graph
    weights = {w.name: tuple(w.dims) for w in graph.initializer}
    shapes = [weights.get(node.input[1]) for node in graph.node if node.op_type == "Conv"]
    filters = sum(shape[0] for shape in shapes if shape is not None and len(shape) == 4 and shape[1] == 1)
    return filters, max_difference_streaming(model, encoder, head)


def test_an_onnx_export_holds_the_live_filters_alone(tmp_path):
    """An ONNX export holds the weights' values (its stamp names them), so it holds the live
    filters alone, 64 of the published MSD model's 561, the dead ones' constants folded into the
    mid and back end: ~1/10 of the work, the same numbers.  Untrained weights, all live: all 561."""
    filters, difference = _onnx_front_end_filters(models.build("musicnn-msd"), tmp_path / "msd")
    assert filters == 23 + 14 + 3 + 7 + 17 and difference < 1e-4
    filters, difference = _onnx_front_end_filters(
        models.build("musicnn-msd", pretrained=False), tmp_path / "new"
    )
    assert filters == 2 * 204 + 3 * 51 and difference < 1e-4


def test_weights_replaced_twice_between_calls_are_seen():
    """Weights replaced by new tensors, twice between two calls: the second replacement may be
    allocated where the weights the kept layout was built from were, which must not read as the
    same weights (the kept values hold the memory they were computed from)."""
    model = models.build("musicnn-msd")
    patch = 4.0 * torch.rand(2, 96, SEGMENT_FRAMES, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(8)
    scale = float(model.dense.weight.std())

    def replace():  # new weights of the published ones' scale, each one allocation at version 1
        model.dense.weight = nn.Parameter(torch.empty(200, 1506).normal_(0.0, scale, generator=g))

    replace()
    for _ in range(8):
        with torch.inference_mode():
            model.encode(patch)  # keeps the layout of these weights
        replace()
        replace()
        with torch.inference_mode():
            got, expected = model.encode(patch), _every_channel(model, patch)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_whole_windows_and_the_streaming_encoder_share_one_live_layout():
    """Both key the kept live layout by the front end's fetched parameters: calls of either, in
    turn, keep one layout instead of rebuilding it at each change of caller."""
    model = models.build("musicnn-msd").eval()
    stream = model.streaming_encoder()
    frames = 4.0 * torch.rand(96, 260, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        model.encode(frames[None, :, :SEGMENT_FRAMES])
        kept = model._layout_cache[1]
        for end in range(SEGMENT_FRAMES, 260, 16):
            stream.encode(frames, 0, [end])
            model.encode(frames[None, :, end - SEGMENT_FRAMES : end])
            assert model._layout_cache[1] is kept


def test_the_mid_end_of_a_windows_first_frames_extends_to_the_whole_mid_end():
    """``mid_head`` of a window's first n frames, then ``mid_features`` of the whole window given
    that head, is the mid end of the whole window: for the shortest heads (10 frames, each layer
    needing 3 more; 11 and 12, whose last layer has 1 or 2 outputs, so that the rest of the window
    needs part of its left padding), longer ones, and a head extended by more frames."""
    model = models.build("musicnn-msd").eval()
    live_channels = sum(len(block._folded_parameters(False).kernel) for block in model.front)
    front = 2.0 * torch.rand(1, live_channels, SEGMENT_FRAMES, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        whole = model.mid_features(front)
        for n in (10, 11, 12, 40, SEGMENT_FRAMES):
            head = model.mid_head(front[..., :n])
            assert [h.shape[-1] for h in head] == [n - 3, n - 6, n - 9]
            torch.testing.assert_close(model.mid_features(front, head), whole, atol=1e-4, rtol=0)
        extended = model.mid_head(front[..., :60], model.mid_head(front[..., :11]))
        torch.testing.assert_close(model.mid_features(front, extended), whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize("onednn", [True, False])
def test_raw_is_each_blocks_convolution(onednn):
    """``raw`` (a streaming tail's convolution before the max over frequency) is the block's
    convolution by its live, sign-folded kernels, on a tail's frames: a temporal block's by its
    Toeplitz matrix on oneDNN's path, returned as a view in the product's layout."""
    model = models.build("musicnn-msd")
    with torch.backends.mkldnn.flags(enabled=onednn), torch.inference_mode():
        for block in model.front:
            pl, pr = block.time_pad
            x = torch.rand(1, 1, 96, pl + 2 * pr + 3, generator=torch.Generator().manual_seed(pl))
            kernel = block._folded_parameters(False).kernel
            got = block.raw(x)
            assert got.shape == (1, len(kernel), 96 - kernel.shape[2] + 1, pr + 3)
            temporal = kernel.shape[2] == 1
            assert got.is_contiguous() != (onednn and temporal)  # the product's (B, F, T, C) layout
            np.testing.assert_allclose(got.numpy(), F.conv2d(x, kernel).numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["msd", "mtt"])
def test_a_timbral_blocks_few_frames_by_fft_are_its_convolution(shared_data, variant):
    """On oneDNN's path a timbral block convolves up to ``SPECTRAL_MAX_FRAMES`` output frames by FFT
    over frequency (a streaming hop's new frames, a window's edges): circular over the bands, so
    only the valid outputs may be kept.  On a real clip's frames, one and two pieces at a time, from
    a single output frame to the most, its maxima over frequency are the plain convolution's, and
    ``folded`` is made of them."""
    audio, _ = sf.read(shared_data / "4q/audio/Q3/MT0000044741.ogg", dtype="float32")
    model = models.build(f"musicnn-{variant}").eval()
    with torch.inference_mode():
        mel = MelFrontend(model.frontend)(torch.from_numpy(audio[: 16000 * 4])[None])[0]
        x = model.bn_input(mel[None, None])  # (1, 1, 96, 251)
        for block in model.front[:TIMBRAL_BLOCKS]:
            parameters = block._folded_parameters(True)
            kernel = parameters.kernel
            k_freq, k_time = kernel.shape[2:]
            for batch, n_out in [(1, 1), (1, 16), (2, 3), (1, 62), (2, 32), (1, SPECTRAL_MAX_FRAMES)]:
                pieces = torch.cat([x[..., 40 * i : 40 * i + n_out + k_time - 1] for i in range(batch)])
                spectrum = block._spectrum(parameters, pieces.shape)
                got = _spectral_max_over_freq(pieces, spectrum, k_freq)
                expected = F.conv2d(pieces, kernel).amax(dim=2)
                assert got.shape == expected.shape == (batch, len(kernel), n_out)
                np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)
                assert torch.equal(block.folded(pieces, (0, 0)), block._finish(got, parameters))
            one_more = (1, 1, 96, SPECTRAL_MAX_FRAMES + k_time)  # an output frame more: oneDNN's
            assert block._spectrum(parameters, one_more) is None


@pytest.mark.parametrize("onednn", [True, False])
def test_the_streaming_encoder_forgets_its_features_when_the_weights_change(onednn):
    """New weights between two windows of a stream (a dead filter brought back to life: another
    live count; then a live filter changed in place): the next window is ``encode``'s with the
    new weights, neither a crash nor the old features mixed in."""
    model = models.build("musicnn-msd")
    mel = 4.0 * torch.rand(96, 240, generator=torch.Generator().manual_seed(5))
    stream = model.streaming_encoder()
    dead = int(model.front[0].conv.weight.flatten(1).abs().amax(1).argmin())
    changes = [
        lambda: (
            model.front[0].conv.weight[dead].normal_(0.0, 0.1, generator=torch.Generator().manual_seed(6))
        ),
        lambda: model.front[3].conv.weight.mul_(0.5),
    ]
    with torch.backends.mkldnn.flags(enabled=onednn):
        with torch.inference_mode():
            stream.encode(mel[:, :200], 0, [187, 200])
        for end, change in zip((216, 232), changes, strict=True):
            with torch.no_grad():
                change()
            with torch.inference_mode():
                stream.prepare(mel[:, : end - 3], 0, end)  # as the live loop's early take does
                got = stream.encode(mel[:, :end], 0, [end])
                expected = model.encode(mel[None, :, end - SEGMENT_FRAMES : end])
            np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("hop", "onednn"), [(16, True), (62, True), (187, True), (250, True), (16, False)])
def test_the_streaming_encoder_is_encode_of_each_window(shared_data, hop, onednn):
    """Windows cut from one real clip every ``hop`` frames (a quarter second, a second, one
    segment, past a segment), one or several at a time, with the next window prepared ahead from
    part of its frames (as the live loop's early take does) or not: the streaming encoder gives
    ``encode``'s numbers, with the published weights and with batch norms that take the min over
    frequency.  Without oneDNN, the plain convolutions that CUDA runs too (no GPU here)."""
    audio, _ = sf.read(shared_data / "4q/audio/Q3/MT0000044741.ogg", dtype="float32")
    for weights in ("published", "shuffled batch norms"):
        with torch.backends.mkldnn.flags(enabled=onednn):
            _check_streaming(audio, weights, hop, onednn)


def _check_streaming(audio: np.ndarray, weights: str, hop: int, onednn: bool) -> None:
    model = models.build("musicnn-msd")
    if weights != "published":
        _shuffle_batch_norms(model)
    with torch.inference_mode():
        mel = MelFrontend(model.frontend)(torch.from_numpy(audio[: 16000 * 12])[None])[0]  # (96, 751)
        assert _onednn_usable(mel) == (onednn and torch.backends.mkldnn.is_available())
        ends = list(range(SEGMENT_FRAMES, mel.shape[1] + 1, hop))
        whole = model.encode(torch.stack([mel[:, e - SEGMENT_FRAMES : e] for e in ends]))
        stream = model.streaming_encoder()
        # As the engine calls it: the frames it keeps (from the next window's start), the
        # windows that arrived, sometimes two at once.
        got, i = [], 0
        while i < len(ends):
            batch = ends[i : i + 1 + (i % 3 == 2)]
            start = max(0, batch[0] - SEGMENT_FRAMES - 5)
            # Prepared ahead with its last 1, 3, 9 or 70 frames missing (70: before the
            # temporal blocks' interior is in), once or as the frames come (20 fewer first,
            # then the same again), or not at all.
            missing = (1, 3, 9, 70, None)[i % 5]
            if missing is not None:
                for fewer in (20, 0, 0) if i % 2 else (0,):
                    stream.prepare(mel[:, start : batch[0] - missing - fewer], start, batch[0])
            got.append(stream.encode(mel[:, start : batch[-1]], start, batch))
            i += len(batch)
    np.testing.assert_allclose(torch.cat(got).numpy(), whole.numpy(), atol=2e-5, rtol=1e-5)


def test_training_runs_the_layers_in_tensorflow_order(monkeypatch):
    model = models.build("musicnn-msd", pretrained=False).train()
    with pytest.raises(ValueError, match="eval mode only"):
        model.encode(torch.randn(2, 96, SEGMENT_FRAMES), folded=True)

    def not_in_training(self, x):
        raise AssertionError("the folded front end ran in train mode")

    monkeypatch.setattr(_FreqPooledConv, "folded", not_in_training)
    model.encode(torch.randn(2, 96, SEGMENT_FRAMES)).pow(2).mean().backward()
    assert all(block.conv.weight.grad.abs().sum() > 0 for block in model.front)
    assert all(block.bn.num_batches_tracked == 1 for block in model.front)  # batch statistics, updated
