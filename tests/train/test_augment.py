"""Augmentations: seeded sampling, and applies that do exactly what their sampled params say."""

from __future__ import annotations

import math

import pytest
import torch

from models.frontend import ESSENTIA_JAMENDO, FrontendConfig, MelFrontend
from train.augment import (
    Compose,
    GaussianNoise,
    Mixup,
    RandomCrop,
    RandomGain,
    SpecAugment,
    time_warp,
)

B, MELS, FRAMES = 8, 16, 64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = gen(1000 + seed)
    x = torch.randn(B, MELS, FRAMES, generator=g)
    targets = {
        "tags": (torch.rand(B, 5, generator=g) > 0.5).float(),
        "va": torch.rand(B, 2, generator=g) * 2 - 1,
    }
    return x, targets


TRANSFORMS = {
    "mixup": Mixup(alpha=0.4),
    "specaugment": SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=10, time_warp=4),
    "gain": RandomGain(db_range=(-10.0, 10.0)),
    "noise": GaussianNoise(std=0.5),
    "crop": RandomCrop(frames=40),
    "compose": Compose(
        [RandomCrop(48), RandomGain(), SpecAugment(time_warp=3), GaussianNoise(0.1), Mixup(0.3)]
    ),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_same_seed_same_batch_other_seed_other_batch(name):
    transform = TRANSFORMS[name]
    x, targets = batch()
    a = transform.transform(x, targets, gen(7))
    b = transform.transform(x, targets, gen(7))
    c = transform.transform(x, targets, gen(8))
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(a[1][h], b[1][h]) for h in targets)
    assert not torch.equal(a[0], c[0])
    # Sampling alone is the random part: applying the same params twice gives the same batch.
    params = transform.sample(B, gen(3), n_mels=MELS, frames=FRAMES)
    assert torch.equal(transform.apply(x, targets, params)[0], transform.apply(x, targets, params)[0])


# --- Mixup ---------------------------------------------------------------------------------


def test_mixup_mixes_inputs_and_every_head_with_the_same_lambda():
    # Each example is a constant c_i, so the λ that produced x' can be read back from x' alone.
    c = torch.arange(B, dtype=torch.float32) * 10.0
    x = c[:, None, None].expand(B, MELS, FRAMES).clone()
    targets = {"tags": torch.eye(B), "va": torch.rand(B, 2, generator=gen(0)) * 2 - 1}
    mixup = Mixup(alpha=0.5)
    params = mixup.sample(B, gen(1), n_mels=MELS, frames=FRAMES)
    out, mixed = mixup.apply(x, targets, params)
    perm = params["perm"]
    moved = perm != torch.arange(B)
    assert moved.sum() >= 2  # the check below needs examples mixed with another one
    lam_from_x = (out[:, 0, 0] - c[perm]) / (c - c[perm])
    torch.testing.assert_close(lam_from_x[moved], params["lam"][moved])
    assert torch.allclose(out, out[:, :1, :1].expand_as(out))  # every cell mixed alike
    lam = lam_from_x[moved]
    rows = torch.arange(B)[moved]
    # One-hot tags: example i keeps λ of its own label and gets 1 − λ of its partner's.
    torch.testing.assert_close(mixed["tags"][rows, rows], lam)
    torch.testing.assert_close(mixed["tags"][rows, perm[moved]], 1 - lam)
    expected_va = lam[:, None] * targets["va"][rows] + (1 - lam[:, None]) * targets["va"][perm[moved]]
    torch.testing.assert_close(mixed["va"][rows], expected_va)


@pytest.mark.parametrize("alpha", [0.2, 2.0])
def test_mixup_lambda_follows_beta(alpha):
    lam = Mixup(alpha=alpha).sample(20000, gen(0), n_mels=1, frames=1)["lam"]
    assert lam.min() >= 0 and lam.max() <= 1
    assert abs(lam.mean().item() - 0.5) < 0.01
    assert abs(lam.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Var Beta(α, α)


def test_mixup_major_keeps_each_example_dominant():
    lam = Mixup(alpha=0.3, major=True).sample(1000, gen(0), n_mels=1, frames=1)["lam"]
    assert lam.min() >= 0.5


def test_mixup_masks_are_anded():
    mixup = Mixup(alpha=1.0)
    masks = {"tags": torch.tensor([True, True, False, True, True, False, True, True])}
    params = mixup.sample(B, gen(4), n_mels=MELS, frames=FRAMES)
    out = mixup.apply_masks(masks, params)
    expected = [bool(masks["tags"][i] and masks["tags"][params["perm"][i]]) for i in range(B)]
    assert out["tags"].tolist() == expected
    assert out["tags"].sum() < masks["tags"].sum()  # some labelled example was mixed with an unlabelled one


def test_mixup_refuses_integer_targets():
    x, _ = batch()
    params = Mixup().sample(B, gen(0), n_mels=MELS, frames=FRAMES)
    with pytest.raises(TypeError, match="one-hot"):
        Mixup().apply(x, {"classes": torch.zeros(B, dtype=torch.long)}, params)


# --- SpecAugment ---------------------------------------------------------------------------


def expected_mask(params: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = torch.zeros(B, MELS, FRAMES, dtype=torch.bool)
    for b in range(B):
        for s, w in zip(params["freq_start"][b].tolist(), params["freq_width"][b].tolist(), strict=True):
            mask[b, s : s + w, :] = True
        for s, w in zip(params["time_start"][b].tolist(), params["time_width"][b].tolist(), strict=True):
            mask[b, :, s : s + w] = True
    return mask


def test_specaugment_masks_exactly_the_sampled_bands_and_frames():
    aug = SpecAugment(freq_masks=2, freq_width=6, time_masks=3, time_width=12, fill=-999.0)
    x, targets = batch()
    params = aug.sample(B, gen(2), n_mels=MELS, frames=FRAMES)
    out, out_targets = aug.apply(x, targets, params)
    mask = expected_mask(params)
    assert mask.any() and not mask.all()
    assert torch.equal(out == -999.0, mask)
    assert torch.equal(out[~mask], x[~mask])
    assert out_targets is targets


def test_specaugment_mean_fill_is_each_examples_mean():
    aug = SpecAugment(freq_masks=1, freq_width=8, time_masks=1, time_width=20)
    x, targets = batch()
    x = x + torch.arange(B, dtype=torch.float32)[:, None, None] * 5  # different means per example
    params = aug.sample(B, gen(5), n_mels=MELS, frames=FRAMES)
    out, _ = aug.apply(x, targets, params)
    mask = expected_mask(params)
    fill = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
    assert torch.equal(out[mask], fill[mask])
    assert torch.equal(out[~mask], x[~mask])


def test_specaugment_widths_and_starts_cover_their_ranges():
    aug = SpecAugment(freq_masks=1, freq_width=5, time_masks=1, time_width=70)  # wider than FRAMES
    p = aug.sample(5000, gen(0), n_mels=MELS, frames=FRAMES)
    assert p["freq_width"].min() == 0 and p["freq_width"].max() == 5
    assert p["time_width"].max() == FRAMES  # clipped to the patch
    assert p["freq_start"].min() == 0 and (p["freq_start"] + p["freq_width"]).max() == MELS
    assert ((p["time_start"] + p["time_width"]) <= FRAMES).all()


def test_time_warp_is_piecewise_linear_through_the_moved_frame():
    ramp = torch.arange(FRAMES, dtype=torch.float32).expand(2, MELS, FRAMES)
    center, shift = torch.tensor([20, 40]), torch.tensor([5, -7])
    out = time_warp(ramp, center, shift)
    for b in range(2):
        c, moved = center[b].item(), center[b].item() + shift[b].item()
        assert out[b, 0, moved].item() == pytest.approx(c)  # the moved frame reads the centre
        assert out[b, 0, 0].item() == 0 and out[b, 0, -1].item() == FRAMES - 1
        t = torch.arange(FRAMES, dtype=torch.float64)
        source = torch.where(
            t < moved, t * c / moved, c + (t - moved) * (FRAMES - 1 - c) / (FRAMES - 1 - moved)
        )
        torch.testing.assert_close(out[b, 3].double(), source, atol=1e-5, rtol=0)
    assert (out[:, :, 1:] > out[:, :, :-1]).all()  # a warp reorders nothing
    assert torch.equal(time_warp(ramp, center, torch.zeros(2, dtype=torch.long)), ramp)


def test_specaugment_samples_warps_in_range_and_refuses_short_patches():
    aug = SpecAugment(freq_masks=0, time_masks=0, time_warp=5)
    p = aug.sample(4000, gen(0), n_mels=MELS, frames=FRAMES)
    assert p["warp_shift"].min() == -5 and p["warp_shift"].max() == 5
    assert p["warp_center"].min() == 6 and p["warp_center"].max() == FRAMES - 7
    x, targets = batch()
    out, _ = aug.apply(x, targets, aug.sample(B, gen(1), n_mels=MELS, frames=FRAMES))
    assert not torch.equal(out, x)
    with pytest.raises(ValueError, match="frames"):
        aug.sample(B, gen(0), n_mels=MELS, frames=12)


# --- RandomGain ----------------------------------------------------------------------------


def test_gain_shifts_db_by_the_sampled_amount_and_keeps_the_floor():
    x, targets = batch()
    x = x * 20 - 40
    x[:, 0, :5] = -200.0  # digital silence at the floor
    for frontend, db_per_db in ((FrontendConfig(scaling="db"), 1.0), (ESSENTIA_JAMENDO, 2.0)):
        gain = RandomGain.for_frontend(frontend, (-12.0, 12.0))
        params = gain.sample(B, gen(0), n_mels=MELS, frames=FRAMES)
        out, _ = gain.apply(x, targets, params)
        shift = db_per_db * params["gain_db"][:, None, None]
        torch.testing.assert_close(out[:, 1:], x[:, 1:] + shift, atol=1e-4, rtol=0)
        assert torch.equal(out[:, 0, :5], x[:, 0, :5])
    g = RandomGain(db_range=(-3.0, 9.0)).sample(5000, gen(0), n_mels=1, frames=1)["gain_db"]
    assert -3.0 <= g.min() < -2.9 and 8.9 < g.max() <= 9.0


@pytest.mark.parametrize(
    "frontend",
    [
        FrontendConfig(),  # log10(1 + 10000·power mel), musicnn
        FrontendConfig(n_mels=64, power=1.0, log_gain=100.0),  # magnitude, as crnn's VGGish input
        FrontendConfig(scaling="db"),
        ESSENTIA_JAMENDO,
        FrontendConfig(scaling="power"),
    ],
    ids=["log10_1p", "log10_1p-magnitude", "db", "essentia-db", "power"],
)
def test_gain_on_mels_equals_the_mels_of_scaled_audio(frontend):
    mel = MelFrontend(frontend)
    audio = 0.1 * torch.randn(3, frontend.sample_rate_hz // 2, generator=gen(0))
    gain = RandomGain.for_frontend(frontend, (-12.0, 12.0))
    params = {"gain_db": torch.tensor([-12.0, 3.0, 12.0])}
    amplitude = torch.pow(10.0, params["gain_db"] / 20)[:, None]
    with torch.no_grad():
        expected = mel(audio * amplitude)
        out, _ = gain.apply(mel(audio), {}, params)
    if frontend.scaling == "power":
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-7)
    else:  # float32 STFT rounding: dB values are tens, log10_1p values units
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4 if frontend.scaling == "db" else 1e-5)


# --- GaussianNoise, RandomCrop -------------------------------------------------------------


def test_noise_has_the_given_std_and_replays_from_its_params():
    x = torch.zeros(B, MELS, 1000)
    noise = GaussianNoise(std=0.3)
    params = noise.sample(B, gen(0), n_mels=MELS, frames=1000)
    out, _ = noise.apply(x, {}, params)
    assert out.std().item() == pytest.approx(0.3, rel=0.02)
    assert abs(out.mean().item()) < 0.005
    assert torch.equal(out, noise.apply(x, {}, params)[0])
    assert torch.equal(GaussianNoise(std=0.0).apply(x + 1, {}, params)[0], x + 1)


def test_crop_cuts_the_sampled_frames():
    x, targets = batch()
    crop = RandomCrop(frames=24)
    params = crop.sample(B, gen(0), n_mels=MELS, frames=FRAMES)
    out, _ = crop.apply(x, targets, params)
    assert out.shape == (B, MELS, 24) and crop.output_frames(FRAMES) == 24
    for b, s in enumerate(params["start"].tolist()):
        assert torch.equal(out[b], x[b, :, s : s + 24])
    starts = crop.sample(4000, gen(1), n_mels=MELS, frames=FRAMES)["start"]
    assert starts.min() == 0 and starts.max() == FRAMES - 24
    with pytest.raises(ValueError, match="cannot crop"):
        crop.sample(B, gen(0), n_mels=MELS, frames=20)


# --- Compose -------------------------------------------------------------------------------


def test_compose_applies_in_order_with_each_transforms_params():
    crop, spec, mixup = RandomCrop(32), SpecAugment(time_width=30, fill=0.0), Mixup(0.5)
    compose = Compose([crop, spec, mixup])
    x, targets = batch()
    masks = {"tags": torch.tensor([True] * 6 + [False] * 2)}
    params = compose.sample(B, gen(0), n_mels=MELS, frames=FRAMES)
    assert ((params["1.time_start"] + params["1.time_width"]) <= 32).all()  # sampled on cropped frames
    out, out_targets = compose.apply(x, targets, params)
    step = crop.apply(x, targets, {"start": params["0.start"]})
    step = spec.apply(*step, {k[2:]: v for k, v in params.items() if k.startswith("1.")})
    step = mixup.apply(*step, {"perm": params["2.perm"], "lam": params["2.lam"]})
    assert torch.equal(out, step[0]) and torch.equal(out_targets["tags"], step[1]["tags"])
    assert compose.output_frames(FRAMES) == 32
    out_masks = compose.apply_masks(masks, params)
    assert torch.equal(out_masks["tags"], masks["tags"] & masks["tags"][params["2.perm"]])
    _, _, via_transform = compose.transform(x, targets, gen(0), masks)
    assert torch.equal(via_transform["tags"], out_masks["tags"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", [n for n in TRANSFORMS if n not in ("noise", "compose")])
def test_cuda_apply_matches_cpu(name):
    transform = TRANSFORMS[name]
    x, targets = batch()
    params = transform.sample(B, gen(0), n_mels=MELS, frames=FRAMES)
    cpu, cpu_targets = transform.apply(x, targets, params)
    gpu, gpu_targets = transform.apply(x.cuda(), {h: t.cuda() for h, t in targets.items()}, params)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    for head in targets:
        torch.testing.assert_close(gpu_targets[head].cpu(), cpu_targets[head])


def test_invalid_hyper_parameters_raise():
    for make in (
        lambda: Mixup(alpha=0),
        lambda: SpecAugment(freq_width=-1),
        lambda: SpecAugment(fill="median"),
        lambda: RandomGain(scaling="mu-law"),
        lambda: RandomGain(db_range=(6.0, -6.0)),
        lambda: GaussianNoise(std=-1),
        lambda: RandomCrop(frames=0),
    ):
        with pytest.raises(ValueError):
            make()
    assert math.isclose(RandomGain.for_frontend(ESSENTIA_JAMENDO).db_scale, 20.0)
