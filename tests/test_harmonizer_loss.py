"""The harmonizer loss against independent hand / numpy computations (harmonized_models.harmonizer.loss)."""
import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from harmonized_models.harmonizer import (decay_parameters, harmonizer_loss, pyramid, pyramidal_mse, saliency,
                                          same_padding, standardize_cut)
import harmonizer_fixtures

single_thread = harmonizer_fixtures.single_thread  # autouse: one torch thread in this module


TAPS = np.array([1, 4, 6, 4, 1], dtype=np.float64)
KERNEL = np.outer(TAPS, TAPS) / 256.0


# --- independent numpy reference: TensorFlow conv2d(stride 2, 'SAME') with the binomial kernel -------------------

def tf_same_pads(n, k=5, s=2):
    out = -(-n // s)  # ceil
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def np_downsample(x):
    """x [H, W] -> explicit loops over output pixels of a zero-padded stride-2 5x5 correlation."""
    (t, b), (l, r) = tf_same_pads(x.shape[0]), tf_same_pads(x.shape[1])
    p = np.pad(x, ((t, b), (l, r)))
    out_h, out_w = -(-x.shape[0] // 2), -(-x.shape[1] // 2)
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[i, j] = (p[2 * i:2 * i + 5, 2 * j:2 * j + 5] * KERNEL).sum()
    return out


def np_pyramid(x, levels):
    out = [x]
    for _ in range(levels):
        x = np_downsample(x)
        out.append(x)
    return out


def np_standardize_cut(x, eps=1e-5):
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)  # population std (ddof=0)
    return np.maximum((x - mean) / (std + eps), 0)


def np_pyramidal_mse(a, b, tokens, levels):
    per_level = []
    for lvl in range(levels):
        sq = np.stack([(np_pyramid(a[i], levels)[lvl] - np_pyramid(b[i], levels)[lvl]) ** 2 * tokens[i]
                       for i in range(len(a))])
        per_level.append(sq.mean())
    return float(np.mean(per_level))


# --- padding and pyramid ------------------------------------------------------------------------------------------

def test_same_padding_by_hand():
    # even sizes: total 3 -> 1 before, 2 after; odd sizes: total 4 -> 2 and 2
    assert same_padding(224) == (1, 2)
    assert same_padding(8) == (1, 2)
    assert same_padding(2) == (1, 2)
    assert same_padding(7) == (2, 2)
    assert same_padding(1) == (2, 2)
    assert same_padding(13) == (2, 2)
    for n in range(1, 40):
        assert same_padding(n) == tf_same_pads(n)


def test_pyramid_of_ones_by_hand():
    # 4x4 ones, pads (1, 2): output[0,0] sees taps 1..4 of each axis (15/16)^2, output[1,1] taps 0..2 (11/16)^2
    out = pyramid(torch.ones(1, 4, 4, dtype=torch.float64), levels=1)
    expected = np.array([[15 * 15, 15 * 11], [11 * 15, 11 * 11]]) / 256.0
    assert len(out) == 2
    np.testing.assert_allclose(out[1][0].numpy(), expected, rtol=0, atol=1e-15)
    # 5x5 ones, pads (2, 2): centre sees all taps (1), corner taps 2..4 (11/16)^2
    out = pyramid(torch.ones(1, 5, 5, dtype=torch.float64), levels=1)[1][0].numpy()
    assert out.shape == (3, 3)
    assert out[1, 1] == pytest.approx(1.0)
    assert out[0, 0] == pytest.approx((11 / 16) ** 2)


@pytest.mark.parametrize("shape, levels", [((8, 8), 3), ((7, 9), 4), ((13, 6), 5), ((16, 16), 5)])
def test_pyramid_matches_numpy_tf_same(shape, levels):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, *shape))
    out = pyramid(torch.from_numpy(maps), levels=levels)
    assert len(out) == levels + 1
    for i in range(2):
        for got, want in zip(out, np_pyramid(maps[i], levels)):
            assert got[i].shape == want.shape
            np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-12, atol=1e-12)


# --- standardize_cut, pyramidal_mse -------------------------------------------------------------------------------

def test_standardize_cut_by_hand():
    x = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]], dtype=torch.float64)
    std = math.sqrt(1.25)  # population std of 0, 1, 2, 3
    expected = np.array([[0, 0], [0.5 / (std + 1e-5), 1.5 / (std + 1e-5)]])
    np.testing.assert_allclose(standardize_cut(x)[0].numpy(), expected, rtol=1e-12)
    maps = np.random.default_rng(1).normal(size=(3, 5, 7))
    np.testing.assert_allclose(standardize_cut(torch.from_numpy(maps)).numpy(), np_standardize_cut(maps), rtol=1e-12)


def test_pyramidal_mse_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 16, 12)), rng.normal(size=(3, 16, 12))
    tokens = np.array([1.0, 0.0, 1.0])
    got = pyramidal_mse(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(tokens), levels=5)
    assert float(got) == pytest.approx(np_pyramidal_mse(a, b, tokens, 5), rel=1e-12)
    # only the first `levels` levels count: level 0 alone is the plain token-weighted MSE
    got0 = pyramidal_mse(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(tokens), levels=1)
    assert float(got0) == pytest.approx(float(((a - b) ** 2 * tokens[:, None, None]).mean()), rel=1e-12)


# --- saliency -------------------------------------------------------------------------------------------------------

class Linear(nn.Module):
    def __init__(self, size=6, classes=3):
        super().__init__()
        self.fc = nn.Linear(3 * size * size, classes).double()

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_saliency_of_a_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = Linear()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    labels = torch.tensor([2, 0])
    sal = saliency(model, x, labels)
    w = model.fc.weight.detach().reshape(3, 3, 6, 6)
    for i, c in enumerate(labels):
        np.testing.assert_allclose(sal[i].detach().numpy(), w[c].mean(0).numpy(), rtol=1e-12)
    # create_graph: the saliency is differentiable w.r.t. the weights (d sum(sal) / d W[c] = 1/3 per entry)
    sal.sum().backward()
    grad = model.fc.weight.grad.reshape(3, 3, 6, 6)
    np.testing.assert_allclose(grad[2].numpy(), np.full((3, 6, 6), 1 / 3), rtol=1e-12)
    np.testing.assert_allclose(grad[1].numpy(), 0.0)


# --- harmonizer_loss ------------------------------------------------------------------------------------------------

class Tiny(nn.Module):
    """Smooth (tanh) tiny CNN with a BatchNorm layer (excluded from weight decay)."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 4 * 4, classes)

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1))


def _batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 8, 8, generator=g, dtype=dtype)
    maps = torch.rand(3, 8, 8, generator=g, dtype=dtype)
    return images, torch.tensor([0, 2, 1]), maps, torch.tensor([1.0, 0.0, 1.0], dtype=dtype)


def _manual_loss(model, images, labels, maps, tokens, lw, lh, ls, sal_max=None):
    """Independent torch implementation; ``sal_max`` fixed -> the stop-gradient of the reference."""
    x = images.clone().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(logits[torch.arange(len(labels)), labels].sum(), x, create_graph=True)
    sal = g.mean(1)
    z = (sal - sal.mean((1, 2), keepdim=True)) / (sal.std((1, 2), unbiased=False, keepdim=True) + 1e-5)
    z = torch.clamp(z, min=0)
    h = (maps - maps.mean((1, 2), keepdim=True)) / (maps.std((1, 2), unbiased=False, keepdim=True) + 1e-5)
    h = torch.clamp(h, min=0)
    if sal_max is None:
        sal_max = z.detach().amax((1, 2), keepdim=True) + 1e-6
    h = h / (h.amax((1, 2), keepdim=True) + 1e-6) * sal_max
    n_classes = logits.shape[1]
    target = torch.full_like(logits, ls / n_classes)
    target[torch.arange(len(labels)), labels] += 1 - ls
    ce = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    wd = 0.5 * sum((p ** 2).sum() for n, p in model.named_parameters() if not n.startswith("bn"))
    harm = 0
    a, b = z, h
    for _ in range(5):  # pyramid levels via the tested torch pyramid's definition, written out here
        harm = harm + ((a - b) ** 2 * tokens[:, None, None]).mean() / 5
        a, b = pyramid(a, 1)[1], pyramid(b, 1)[1]
    return ce + lw * wd + lh * harm, (ce, harm, wd), sal_max


def test_harmonizer_loss_matches_manual_computation():
    torch.manual_seed(0)
    model = Tiny().double()
    batch = _batch()
    loss, parts = harmonizer_loss(model, *batch, lambda_weights=0.01, lambda_harmonization=2.0,
                                  label_smoothing=0.1, dtype=torch.float64)
    want, (ce, harm, wd), _ = _manual_loss(model, *batch, 0.01, 2.0, 0.1)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-10)
    assert float(parts["ce"]) == pytest.approx(float(ce.detach()), rel=1e-10)
    assert float(parts["harmonization"]) == pytest.approx(float(harm.detach()), rel=1e-10)
    assert float(parts["weights"]) == pytest.approx(float(wd.detach()), rel=1e-12)
    assert float(parts["harmonization"]) > 0


def test_harmonizer_loss_gradient_matches_finite_differences():
    """Analytic gradient (double backward, max of the saliency detached) vs central differences of the loss with
    the saliency maximum held at its value at the base point."""
    torch.manual_seed(1)
    model = Tiny().double().eval()  # eval: BatchNorm uses running stats -> a smooth function of the weights
    batch = _batch(seed=3)
    loss, _ = harmonizer_loss(model, *batch, lambda_weights=0.05, lambda_harmonization=1.0, dtype=torch.float64)
    params = [p for p in model.parameters()]
    analytic = torch.autograd.grad(loss, params)
    _, _, sal_max = _manual_loss(model, *batch, 0.05, 1.0, 0.1)
    eps = 1e-6
    checked = 0
    for p, g in zip(params, analytic):
        flat, gflat = p.data.view(-1), g.view(-1)
        for k in range(flat.numel()):  # every weight
            orig = flat[k].item()
            flat[k] = orig + eps
            up = _manual_loss(model, *batch, 0.05, 1.0, 0.1, sal_max=sal_max)[0].item()
            flat[k] = orig - eps
            down = _manual_loss(model, *batch, 0.05, 1.0, 0.1, sal_max=sal_max)[0].item()
            flat[k] = orig
            numeric = (up - down) / (2 * eps)
            assert gflat[k].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), (p.shape, k)
            checked += 1
    assert checked == sum(p.numel() for p in params)
    # the harmonization term really contributes to the weight gradient (double backward is not a no-op)
    loss0, _ = harmonizer_loss(model, *batch, lambda_weights=0.05, lambda_harmonization=0.0, dtype=torch.float64)
    grad0 = torch.autograd.grad(loss0, params)
    assert max((a - b).abs().max().item() for a, b in zip(analytic, grad0)) > 1e-6


def test_gradcheck_of_the_harmonization_pipeline():
    """torch.autograd.gradcheck of standardize_cut -> pyramidal_mse (no detached parts) in float64."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    tokens = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: pyramidal_mse(standardize_cut(x), standardize_cut(b), tokens, levels=3), (a,))


def test_zero_harmonization_loss_when_saliency_equals_human_map():
    torch.manual_seed(2)
    model = Linear()
    images, labels = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.tensor([1, 2])
    sal = saliency(model, images, labels).detach()
    tokens = torch.ones(2, dtype=torch.float64)
    for human in (sal, 5.0 * sal + 3.0):  # standardisation makes the loss invariant to positive affine maps
        _, parts = harmonizer_loss(model, images, labels, human, tokens, dtype=torch.float64)
        assert float(parts["harmonization"]) < 1e-20
    _, parts = harmonizer_loss(model, images, labels, -sal, tokens, dtype=torch.float64)
    assert float(parts["harmonization"]) > 1e-3


def test_token_zero_removes_a_sample():
    torch.manual_seed(3)
    model = Tiny().double()
    images, labels, maps, _ = _batch()
    tokens = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    other = maps.clone()
    other[1] = torch.rand(8, 8, dtype=torch.float64) * 100
    results = []
    for m in (maps, other):
        model.zero_grad()
        loss, parts = harmonizer_loss(model, images, labels, m, tokens, dtype=torch.float64)
        loss.backward()
        results.append((float(parts["harmonization"]), [p.grad.clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0] > 0
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # all tokens 0: no harmonization term at all
    loss, parts = harmonizer_loss(model, images, labels, maps, torch.zeros(3, dtype=torch.float64),
                                  dtype=torch.float64)
    assert float(parts["harmonization"]) == 0.0
    assert float(loss.detach()) == pytest.approx(float(parts["ce"] + 1e-5 * parts["weights"]), rel=1e-12)


def test_loss_is_float32_under_autocast():
    torch.manual_seed(4)
    model = Tiny()
    images, labels, maps, tokens = (t.float() if t.is_floating_point() else t for t in _batch())
    ref, ref_parts = harmonizer_loss(model, images, labels, maps, tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, parts = harmonizer_loss(model, images, labels, maps, tokens)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in parts.values())
    assert float(parts["ce"]) == pytest.approx(float(ref_parts["ce"]), rel=0.05)
    assert float(parts["weights"]) == float(ref_parts["weights"])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_weight_decay_excludes_norms_embeddings_and_tokens():
    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32, reg_tokens=2)
    decayed = {n for n, _ in decay_parameters(vit)}
    excluded = {n for n, _ in vit.named_parameters()} - decayed
    assert {"cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"} <= excluded
    assert all("norm" in n or "embed" in n or n.endswith("_token") for n in excluded)
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    for name, module in resnet.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert f"{name}.weight" not in {n for n, _ in decay_parameters(resnet)}

    class Odd(nn.Module):  # a norm layer whose name says nothing: excluded by its type
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.foo = nn.GroupNorm(1, 1)

    assert [n for n, _ in decay_parameters(Odd())] == ["conv.weight", "conv.bias"]
    frozen = Odd()
    frozen.conv.bias.requires_grad_(False)
    assert [n for n, _ in decay_parameters(frozen)] == ["conv.weight"]


def test_transformer_double_backward_runs():
    torch.manual_seed(5)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    loss, parts = harmonizer_loss(vit, images, labels, torch.rand(2, 32, 32), torch.ones(2))
    loss.backward()
    assert vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert float(parts["harmonization"]) > 0
