"""CP-ResNet, FA-ResNet and Shake-Shake FA-ResNet: shapes, training, ONNX, ρ, receptive field, FA, shake."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import models.cp_resnet as cp
from models.registry import available, build
from models.vocab import JAMENDO_MOODTHEME

NAMES = ["cp-resnet", "fa-resnet", "shake-fa-resnet"]
SMALL = 8  # width for the tests that don't need the published size


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero residual branches (fixup starts them at zero), random batch-norm affines, and
    running statistics measured on mel-like patches, so that eval-mode logits are of order 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the calibration batches
        model.train()
        for batch in range(2):
            model(_patch(4, frames=256, seed=100 + batch))
    return model.eval()


def _patch(batch: int, frames: int = cp.SEGMENT_FRAMES, seed: int = 0) -> torch.Tensor:
    """Mel-like dB values: around -40 dB with a spread of 20 dB."""
    g = torch.Generator().manual_seed(seed)
    return -40.0 + 20.0 * torch.randn(batch, 96, frames, generator=g)


def test_registered():
    assert set(NAMES) <= set(available())


@pytest.mark.parametrize("name", NAMES)
def test_default_build_and_forward(name):
    model = build(name)
    assert model.pretrained is False and not model.training
    assert model.frontend == cp.JAMENDO_FRONTEND
    assert model.frontend.sample_rate_hz == 12000 and model.frontend.scaling == "db"
    assert model.input_shape == (96, 1024)
    assert model.heads["tags"].kind == "tags"
    assert model.heads["tags"].labels == JAMENDO_MOODTHEME and len(JAMENDO_MOODTHEME) == 56
    assert model.embedding_dim == 56
    assert model.receptive_field() == {"frequency": 135, "time": 135}
    assert next(model.parameters()) is model.stem[0].weight  # the first layer is registered first
    with torch.inference_mode():
        out = model(_patch(1))
        embedding = model.encode(_patch(1))
    assert set(out) == {"tags"}
    assert out["tags"].shape == (1, 56) and embedding.shape == (1, 56)
    assert torch.isfinite(out["tags"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_first_layer(name):
    model = _randomize(build(name, width=SMALL))
    # Eval: in training the final batch norm makes the sum of the logits constant in its input.
    model.eval()
    model(_patch(2, frames=256))["tags"].sum().backward()
    first = next(model.parameters())
    assert first is model.stem[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.zero_grad()
    model.train()
    torch.manual_seed(0)
    out = model(_patch(2, frames=256))["tags"]
    nn.functional.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
    assert first.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_changes_the_loss(name):
    model = build(name, width=SMALL).train()  # fixup start, as training would begin
    x, targets = (
        _patch(2, frames=256),
        (torch.rand(2, 56, generator=torch.Generator().manual_seed(1)) > 0.8).float(),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same Shake-Shake coefficients for both evaluations
        return nn.functional.binary_cross_entropy_with_logits(model(x)["tags"], targets)

    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert torch.isfinite(before) and torch.isfinite(after)
    assert abs(after.item() - before.item()) > 1e-6


class _Wrapper(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["tags"]


@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_torch_at_other_batch_sizes(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _randomize(build(name, width=SMALL)).eval()
    wrapper = _Wrapper(model).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        wrapper,
        (_patch(2),),
        str(path),
        input_names=["mel"],
        output_names=["tags"],
        dynamic_axes={"mel": {0: "batch"}, "tags": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    wrapper.eval()  # the exporter restores the training flag; make sure we compare in eval
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = _patch(batch, seed=batch)
        (onnx_out,) = session.run(None, {"mel": x.numpy()})
        with torch.inference_mode():
            torch_out = wrapper(x).numpy()
        assert onnx_out.shape == (batch, 56)
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4, rtol=0)


# --- ρ and the receptive field ---------------------------------------------------------------


def _reference_kernels(rho: int) -> list[list[tuple[int, int]]]:
    """CP-JKU's get_model_based_on_rho (cpjku_dcase19 models/cp_resnet.py), per stage and block."""
    e = rho - 7
    k1s = [
        [3, 3 - (-e > 6) * 2, 3 - (-e > 4) * 2, 3 - (-e > 2) * 2],
        [3 - (-e > 0) * 2, 1 + (e > 1) * 2, 1 + (e > 3) * 2, 1 + (e > 5) * 2],
        [1 + (e > 7) * 2, 1 + (e > 9) * 2, 1 + (e > 11) * 2, 1 + (e > 13) * 2],
    ]
    k2s = [
        [1, 3 - (-e > 5) * 2, 3 - (-e > 3) * 2, 3 - (-e > 1) * 2],
        [1 + (e > 0) * 2, 1 + (e > 2) * 2, 1 + (e > 4) * 2, 1 + (e > 6) * 2],
        [1 + (e > 8) * 2, 1 + (e > 10) * 2, 1 + (e > 12) * 2, 1 + (e > 14) * 2],
    ]
    return [list(zip(a, b, strict=True)) for a, b in zip(k1s, k2s, strict=True)]


def _built_kernels(model) -> list[list[tuple[int, int]]]:
    return [
        [
            (b.branch.conv1.kernel_size[0], b.branch.conv2.kernel_size[0])
            for b in stage
            if isinstance(b, cp._Block)
        ]
        for stage in model.stages
    ]


@pytest.mark.parametrize("rho", range(cp.max_rho() + 1))
def test_rho_gives_cp_jku_kernel_layout(rho):
    model = build("cp-resnet", rho=rho, width=1)
    assert _built_kernels(model) == _reference_kernels(rho) == cp.rho_kernels(rho)
    pools = [i for i, layer in enumerate(model.stages[0]) if isinstance(layer, nn.MaxPool2d)]
    assert pools == [1, 3, 6]  # after blocks 1, 2 and 4 of stage 1
    assert all(not isinstance(layer, nn.MaxPool2d) for s in model.stages[1:] for layer in s)


def test_receptive_field_grows_with_rho():
    fields = [build("cp-resnet", rho=rho, width=1).receptive_field() for rho in range(cp.max_rho() + 1)]
    assert all(f["frequency"] == f["time"] for f in fields)  # square kernels and pools
    sizes = [f["time"] for f in fields]
    assert all(a < b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    # By hand: stem 5 (jump 2), pools add 2·jump; 3×3 convs add 8, 16 or 32 per stage-1 pool level.
    assert {rho: sizes[rho] for rho in (0, 1, 5, 6, 7, 8, 22)} == {
        0: 23,
        1: 31,
        5: 87,
        6: 103,
        7: 135,
        8: 167,
        22: 615,
    }
    for name in NAMES[1:]:  # FA and Shake-Shake change no kernel
        assert build(name, rho=5, width=1).receptive_field() == fields[5]


def _linearized(model: nn.Module) -> nn.Module:
    """Same geometry, no cancellation: ReLU -> identity, max -> average pooling, positive weights."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    return model.eval()


def _footprint(model, bins: int, frames: int):
    """Extent (bins, frames) of the input one central unit of the last map depends on, and where."""
    x = torch.zeros(1, bins, frames, requires_grad=True)
    out = model.feature_map(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad[0].abs().sum(dim=1)).flatten()
    cols = torch.nonzero(x.grad[0].abs().sum(dim=0)).flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1), rows, cols


@pytest.mark.parametrize("rho,depth", [(0, 26), (3, 26), (7, 26), (10, 26), (5, 14)])
def test_receptive_field_equals_the_gradient_footprint(rho, depth):
    model = _linearized(build("cp-resnet", rho=rho, depth=depth, width=2))
    field = model.receptive_field()
    size = field["time"] + 48  # room so that the footprint is not clipped by the input
    height, width, rows, cols = _footprint(model, size, size)
    assert 0 < rows.min() and rows.max() < size - 1 and 0 < cols.min() and cols.max() < size - 1
    assert (height, width) == (field["frequency"], field["time"])


@pytest.mark.parametrize("name", NAMES[1:])
def test_frequency_aware_footprint(name):
    # FA models read exactly 96 bins: the field (135 ≥ 96) covers all of them; time is measured.
    model = _linearized(build(name, rho=7, width=2))
    frames = model.receptive_field()["time"] + 48
    height, width, _, cols = _footprint(model, 96, frames)
    assert 0 < cols.min() and cols.max() < frames - 1
    assert (height, width) == (96, model.receptive_field()["time"])


# --- frequency awareness ---------------------------------------------------------------------


def test_frequency_channel_spans_the_mel_axis():
    model = build("fa-resnet", width=SMALL)
    branches = [m for m in model.modules() if isinstance(m, cp._Branch)]
    inputs = []  # (channels, bins) reaching each branch
    hook = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].shape[1:3])) for b in branches]
    with torch.inference_mode():
        model(_patch(1, frames=128))
    for h in hook:
        h.remove()
    heights = [bins for _, bins in inputs]
    assert heights == [b.frequency.shape[2] for b in branches]  # one coordinate per bin of each input
    assert heights[0] == 47 and heights[-1] == 5
    for b, (channels, _) in zip(branches, inputs, strict=True):
        coords = b.frequency.flatten()
        n = coords.numel()
        assert coords[0] == -1.0 and torch.allclose(coords.diff(), torch.full((n - 1,), 2.0 / n))
        assert b.conv1.in_channels == channels + 1  # both convolutions read the extra channel
        assert b.conv2.in_channels == b.conv2.out_channels + 1
    assert "frequency" not in "".join(model.state_dict())  # derived, not a weight
    with pytest.raises(ValueError, match="96 mel bins"):
        model(torch.zeros(1, 64, 128))


def test_fa_resnet_without_the_frequency_channel_is_cp_resnet():
    fa = _randomize(build("fa-resnet", width=SMALL)).eval()
    plain = build("cp-resnet", width=SMALL).eval()
    x = _patch(2, frames=256)
    with torch.inference_mode():
        with_frequency = fa(x)["tags"]
    state = {}
    for key, value in fa.state_dict().items():
        target = plain.state_dict()[key]
        if value.shape != target.shape:  # an FA convolution: the last input channel is the frequency
            assert value.shape[1] == target.shape[1] + 1
            value = value.clone()
            state[key] = value[:, :-1]
            value[:, -1] = 0.0
            fa.state_dict()[key].copy_(value)
        else:
            state[key] = value
    plain.load_state_dict(state)
    with torch.inference_mode():
        without = fa(x)["tags"]
        reference = plain(x)["tags"]
    torch.testing.assert_close(without, reference, atol=1e-5, rtol=1e-5)
    assert (with_frequency - without).abs().max() > 1e-3  # the channel does change the output


# --- Shake-Shake -----------------------------------------------------------------------------


def test_shake_shake_is_the_mean_in_eval_and_random_in_training():
    model = _randomize(build("shake-fa-resnet", width=SMALL))
    x = _patch(2, frames=256)
    block = next(m for m in model.modules() if isinstance(m, cp._Block))
    model.eval()
    with torch.inference_mode():
        h = model.stem(x.unsqueeze(1))
        expected = block.act(0.5 * (block.branch(h) + block.branch2(h)) + block.shortcut(h))
        torch.testing.assert_close(block(h), expected, atol=0, rtol=0)
        first, second = model(x)["tags"], model(x)["tags"]
    assert torch.equal(first, second)
    model.train()
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model(x)["tags"])
    assert torch.equal(outs[0], outs[1])
    assert (outs[0] - outs[2]).abs().max() > 1e-4


def test_shake_shake_backward_uses_an_independent_beta():
    torch.manual_seed(0)
    b = torch.randn(8, 3, 4, 5)
    a = (b + 1.0 + torch.rand(8, 3, 4, 5)).requires_grad_()  # a - b > 0 everywhere
    b.requires_grad_()
    out = cp.shake_shake(a, b, training=True)
    alpha = ((out - b) / (a - b)).detach()  # α·a + (1 − α)·b solved for α
    # One α per example, in [0, 1].
    assert torch.allclose(alpha, alpha[:, :1, :1, :1].expand_as(alpha), atol=1e-5)
    alpha = alpha[:, 0, 0, 0]
    assert ((alpha >= 0) & (alpha <= 1)).all()
    out.backward(torch.ones_like(out))
    beta = a.grad[:, 0, 0, 0]
    assert torch.equal(a.grad, beta.view(-1, 1, 1, 1).expand_as(a.grad))
    torch.testing.assert_close(a.grad + b.grad, torch.ones_like(a.grad))
    assert ((beta >= 0) & (beta <= 1)).all()
    assert (beta - alpha).abs().min() > 1e-6  # the gradient is not the α-weighted one
    # Eval: the plain mean, with the ordinary gradient.
    a.grad = b.grad = None
    cp.shake_shake(a, b, training=False).sum().backward()
    assert torch.equal(a.grad, torch.full_like(a, 0.5)) and torch.equal(b.grad, torch.full_like(b, 0.5))


# --- overrides -------------------------------------------------------------------------------


def test_overrides():
    model = build("cp-resnet", rho=3, width=4, depth=14, segment_frames=256, tags=("calm", "happy"))
    assert model.input_shape == (96, 256)
    assert model.heads["tags"].labels == ("calm", "happy") and model.embedding_dim == 2
    assert [m.out_channels for m in (model.stem[0], model.classifier)] == [4, 2]
    assert [len([b for b in s if isinstance(b, cp._Block)]) for s in model.stages] == [2, 2, 2]
    assert model.stages[2][-1].branch.conv2.out_channels == 16
    with torch.inference_mode():
        assert model(torch.randn(3, 96, 256))["tags"].shape == (3, 2)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"rho": 23}, r"rho must be an integer in 0\.\.22"),
        ({"rho": -1}, r"rho must be"),
        ({"depth": 14, "rho": 11}, r"0\.\.10 at depth 14"),
        ({"depth": 25}, r"depth must be 6·n \+ 2"),
        ({"width": 0}, r"width"),
        ({"segment_frames": 8}, r"segment_frames must be an integer >= 17"),
        ({"tags": ()}, r"tags must be"),
        ({"dropout": 0.1}, r"unknown override"),
    ],
)
def test_invalid_overrides_say_what_is_allowed(overrides, message):
    with pytest.raises(ValueError, match=message):
        build("cp-resnet", **overrides)
