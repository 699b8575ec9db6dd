"""SWA, snapshot averages and late fusion against arithmetic done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from train.averaging import SWA, late_fusion, snapshot_average


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def randomise(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return {k: v.clone() for k, v in model.named_parameters()}


def test_swa_weights_are_the_mean_of_the_snapshots():
    model = small_model()
    swa = SWA(model)
    snapshots = []
    for seed in range(3):
        snapshots.append(randomise(model, seed))
        swa.update(model)
    assert swa.n_averaged == 3
    for name, value in swa.module.named_parameters():
        expected = sum(s[name] for s in snapshots) / 3
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-15)
    # With values whose running mean is exact in binary, it is exactly the arithmetic mean.
    for fill in (1.0, 2.0, 6.0):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(fill)
        if fill == 1.0:
            swa = SWA(model)
        swa.update(model)
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in swa.module.parameters())


def test_update_bn_recomputes_statistics_of_the_averaged_weights():
    model = small_model()
    swa = SWA(model)
    for seed in range(3):
        randomise(model, seed)
        swa.update(model)
    g = torch.Generator().manual_seed(9)
    xs = [torch.randn(16, 3, generator=g, dtype=torch.float64) * (i + 1) + i for i in range(3)]
    loader = [(x, {"tags": torch.zeros(16, 2)}) for x in xs]  # (input, targets) batches
    bn = swa.module[1]
    assert torch.equal(bn.running_mean, torch.zeros(4))  # buffers are not averaged
    swa.update_bn(loader)
    first = swa.module[0]
    with torch.no_grad():
        hidden = [first(x) for x in xs]  # what the batch norm sees, with the averaged weights
    torch.testing.assert_close(bn.running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0))
    assert bn.momentum == 0.1 and not torch.equal(bn.running_mean, torch.zeros(4))
    # Dict batches work too, and give the same statistics.
    before = bn.running_mean.clone()
    swa.update_bn([{"x": x} for x in xs])
    torch.testing.assert_close(bn.running_mean, before)
    plain = small_model()
    plain.load_state_dict(swa.state_dict())
    assert torch.equal(plain[1].running_var, bn.running_var)


def test_snapshot_average():
    model = small_model()
    model.train()
    model(torch.randn(4, 3, dtype=torch.float64))  # num_batches_tracked = 1
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    same = snapshot_average([sd, sd, sd])
    assert same.keys() == sd.keys() and all(torch.equal(same[k], sd[k]) for k in sd)
    others = []
    for seed in range(3):
        randomise(model, seed)
        model(torch.randn(4, 3, dtype=torch.float64))
        others.append({k: v.clone() for k, v in model.state_dict().items()})
    avg = snapshot_average(others)
    for key in sd:
        if key.endswith("num_batches_tracked"):
            assert torch.equal(avg[key], others[-1][key]) and avg[key].dtype == torch.long
        else:
            torch.testing.assert_close(avg[key], sum(o[key] for o in others) / 3, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="different keys"):
        snapshot_average([sd, {k: v for k, v in sd.items() if k != "0.bias"}])
    with pytest.raises(ValueError):
        snapshot_average([])


def test_late_fusion_is_the_mean_of_probabilities():
    g = np.random.default_rng(0)
    preds = [g.random((5, 3)) for _ in range(3)]
    np.testing.assert_allclose(late_fusion(preds), (preds[0] + preds[1] + preds[2]) / 3, rtol=1e-12)
    np.testing.assert_allclose(
        late_fusion(preds, weights=[2, 1, 1]), (2 * preds[0] + preds[1] + preds[2]) / 4
    )
    tensors = [torch.from_numpy(p) for p in preds]
    fused = late_fusion(tensors)
    assert isinstance(fused, torch.Tensor)
    torch.testing.assert_close(fused, torch.from_numpy((preds[0] + preds[1] + preds[2]) / 3))
    with pytest.raises(ValueError):
        late_fusion(preds, weights=[1, 1])
    with pytest.raises(ValueError):
        late_fusion(preds, weights=[1, -1, 1])
