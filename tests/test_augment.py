"""Augmentation ops checked on values (the official transform's formulas)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from lorat_scale.data import augment as A

GRAY_W = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)  # torchvision's (ITU-R 601) weights


def _img(seed: int = 0, h: int = 24, w: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def _seed_for_op(op: int) -> int:
    """A seed whose first 3-augment draw picks ``op``."""
    return next(s for s in range(100) if int(np.random.default_rng(s).integers(3)) == op)


def test_flip_boxes_continuous():
    out = A.flip_boxes(np.array([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 5.0]]), 100)
    np.testing.assert_array_equal(out, [[70, 20, 90, 40], [0, 0, 100, 5]])


def test_hflip_moves_box_with_content():
    img = torch.zeros(3, 20, 50)
    box = np.array([5.0, 2.0, 12.0, 9.0])
    img[:, 2:9, 5:12] = 1.0  # the object occupies exactly its box
    fimg, fbox = A.hflip(img, box)
    np.testing.assert_array_equal(fbox, [38, 2, 45, 9])
    ys, xs = torch.nonzero(fimg[0], as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1) == (38, 45)
    assert (ys.min().item(), ys.max().item() + 1) == (2, 9)


def test_color_jitter_matches_formulas_and_torchvision():
    img = _img(1) * 255
    rng = np.random.default_rng(7)
    out = A.color_jitter_(img.clone(), rng, 0.4)
    ref_rng = np.random.default_rng(7)
    order, f = ref_rng.permutation(3), ref_rng.uniform(0.6, 1.4, size=3)
    assert ((f >= 0.6) & (f <= 1.4)).all()
    x, tv = img.clone(), img / 255
    tv_ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in order:
        gray = (x * GRAY_W).sum(0, keepdim=True)
        if i == 0:  # brightness: scale
            x = (x * f[0]).clamp(0, 255)
        elif i == 1:  # contrast: blend with the mean gray level
            x = (f[1] * x + (1 - f[1]) * gray.mean()).clamp(0, 255)
        else:  # saturation: blend with the gray image
            x = (f[2] * x + (1 - f[2]) * gray).clamp(0, 255)
        tv = tv_ops[i](tv, float(f[i]))  # the reference's ops on [0, 1] crops
    torch.testing.assert_close(out, x, atol=1e-3, rtol=0)
    torch.testing.assert_close(out / 255, tv, atol=1e-5, rtol=0)
    assert not torch.allclose(out, img)


def test_color_jitter_order_is_random():
    orders = {tuple(np.random.default_rng(s).permutation(3)) for s in range(50)}
    assert len(orders) == 6


def test_color_jitter_zero_strength_is_identity():
    img = _img(2) * 255
    assert torch.equal(A.color_jitter_(img.clone(), np.random.default_rng(0), 0.0), img)


def test_three_augment_grayscale_joint():
    z, x = _img(3, 8, 8) * 255, _img(4, 16, 16) * 255
    gz, gx = z.clone(), x.clone()
    name = A.three_augment_([gz, gx], np.random.default_rng(_seed_for_op(0)))
    assert name == "grayscale"
    for src, out in [(z, gz), (x, gx)]:
        assert out.shape == src.shape
        expect = (src * GRAY_W).sum(0)
        for c in range(3):
            torch.testing.assert_close(out[c], expect, atol=1e-3, rtol=0)
        torch.testing.assert_close(out / 255, TF.rgb_to_grayscale(src / 255, 3), atol=1e-6, rtol=0)


def test_three_augment_solarize_threshold_128():
    vals = torch.tensor([0.0, 100.0, 127.0, 127.9, 128.0, 200.0, 255.0])
    img = vals.view(1, 1, -1).expand(3, 2, -1).contiguous()
    out, out2 = img.clone(), img.clone()
    name = A.three_augment_([out, out2], np.random.default_rng(_seed_for_op(1)))
    assert name == "solarize"
    expect = torch.tensor([0.0, 100.0, 127.0, 127.9, 127.0, 55.0, 0.0])  # >= 128 inverted (PIL rule)
    torch.testing.assert_close(out[0, 0], expect, atol=1e-5, rtol=0)
    assert torch.equal(out, out2)


def test_three_augment_blur_same_sigma_on_both():
    z, x = _img(5, 16, 16) * 255, _img(6, 40, 40) * 255
    bz, bx = z.clone(), x.clone()
    seed = _seed_for_op(2)
    name = A.three_augment_([bz, bx], np.random.default_rng(seed))
    r = np.random.default_rng(seed)
    r.integers(3)
    sigma = r.uniform(0.1, 2.0)
    assert name == f"blur{sigma:.3f}"
    k = 2 * math.ceil(3 * sigma) + 1
    for src, out in [(z, bz), (x, bx)]:
        ref = TF.gaussian_blur(src, [k, k], [sigma, sigma])  # torchvision, reflect borders
        torch.testing.assert_close(out, ref, atol=1e-3, rtol=0)
    assert bx.std() < x.std()  # it smooths


def test_gaussian_blur_preserves_constant_and_mass():
    img = torch.full((3, 10, 12), 0.3)
    torch.testing.assert_close(A.gaussian_blur_(img.clone(), 1.5), img)
    spike = torch.zeros(3, 21, 21)
    spike[:, 10, 10] = 1.0
    out = A.gaussian_blur_(spike, 1.0)
    torch.testing.assert_close(out.sum((1, 2)), torch.ones(3), atol=1e-5, rtol=0)
    assert out[0, 10, 10] == out[0].max()


def test_three_augment_ops_are_uniform():
    ops = np.array([int(np.random.default_rng(s).integers(3)) for s in range(3000)])
    shares = np.bincount(ops, minlength=3) / ops.size
    assert np.all(np.abs(shares - 1 / 3) < 0.04)


def test_normalize_imagenet():
    mean = torch.tensor(A.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(A.IMAGENET_STD).view(3, 1, 1)
    img255 = torch.tensor([0.0, 127.5, 255.0]).view(1, 1, 3).expand(3, 2, 3)
    out = A.normalize(img255)
    torch.testing.assert_close(out, (img255 / 255.0 - mean) / std, atol=0, rtol=0)
    assert torch.equal(A.normalize_(img255.clone()), out)  # in-place variant: the same float32 ops
    torch.testing.assert_close(A.normalize(mean.expand(3, 2, 2) * 255.0), torch.zeros(3, 2, 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_augment_pair_flip_and_determinism(flip_prob):
    z, x = _img(7, 16, 16) * 255, _img(8, 32, 32) * 255
    zb, xb = np.array([2.0, 3.0, 6.0, 9.0]), np.array([4.0, 5.0, 20.0, 12.0])
    a = A.augment_pair(z, zb, x, xb, np.random.default_rng(3), flip_prob=flip_prob)
    b = A.augment_pair(z, zb, x, xb, np.random.default_rng(3), flip_prob=flip_prob)
    for u, v in zip(a, b):
        assert np.array_equal(np.asarray(u), np.asarray(v))
    expect_z = A.flip_boxes(zb, 16) if flip_prob else zb
    expect_x = A.flip_boxes(xb, 32) if flip_prob else xb
    np.testing.assert_array_equal(a[1], expect_z)
    np.testing.assert_array_equal(a[3], expect_x)
    assert a[0].dtype == torch.float32 and a[0].shape == z.shape and a[2].shape == x.shape
    # inputs are not modified in place
    assert torch.equal(z, _img(7, 16, 16) * 255)
