"""Training augmentation of LoRAT (the official transform's operations) and ImageNet normalization.

Order: independent horizontal flips (boxes flipped) -> independent colour jitter (brightness,
contrast, saturation; no hue; random order) -> the joint DeiT-III "3-augment" (grayscale / solarize /
Gaussian blur, the same op and parameters on template and search) -> normalization.
All randomness comes from the ``numpy.random.Generator`` passed in, drawn in a fixed order.

The colour ops work in place on the 0..255 float crops. They are torchvision's definitions
(``adjust_brightness/contrast/saturation``, ``rgb_to_grayscale``, ``solarize``; its ITU-R 601 gray
weights) with the clamp bound 255 instead of 1: the reference applies them to [0, 1] crops, and the
results agree to float rounding. torchvision's functional ops allocate a new image per step and run
~1.7x slower in this per-pair hot path (2.6 ms vs 1.5 ms per 112+224 pair), hence the few lines here.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "flip_boxes",
    "hflip",
    "gray",
    "color_jitter_",
    "three_augment_",
    "gaussian_blur_",
    "normalize",
    "normalize_",
    "augment_pair",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
_GRAY = torch.tensor([[0.2989, 0.587, 0.114]], dtype=torch.float32)  # torchvision's rgb_to_grayscale
SOLARIZE_THRESHOLD = 128.0  # PIL's threshold on the 0..255 scale (DeiT-III)
BLUR_SIGMA = (0.1, 2.0)  # Gaussian blur radius range (DeiT-III)
MAX = 255.0  # value range of the crops


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Mirror (..., 4) xyxy boxes in an image of ``width`` (continuous coordinates: x -> W - x)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    out = boxes.copy()
    out[..., 0] = width - boxes[..., 2]
    out[..., 2] = width - boxes[..., 0]
    return out


def hflip(img: torch.Tensor, box: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Horizontally flip a CHW image and its xyxy box (in that image's pixels)."""
    return TF.horizontal_flip(img), flip_boxes(box, img.shape[-1])


def gray(img: torch.Tensor) -> torch.Tensor:
    """(1, H, W) luma of a float (3, H, W) RGB image (torchvision's weights)."""
    return (_GRAY @ img.reshape(3, -1)).view(1, *img.shape[-2:])


def color_jitter_(img: torch.Tensor, rng: np.random.Generator, strength: float = 0.4) -> torch.Tensor:
    """In place on a 0..255 crop: brightness, contrast, saturation, factors U[1-s, 1+s], random order."""
    if strength <= 0:
        return img
    order = rng.permutation(3)
    factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=3)
    for i in order:
        f = float(factors[i])
        if i == 0:  # brightness: blend with black
            img.mul_(f)
        elif i == 1:  # contrast: blend with the mean gray level; lerp = f*img + (1-f)*m in one pass
            torch.lerp(gray(img).mean(), img, f, out=img)
        else:  # saturation: blend with the gray image
            torch.lerp(gray(img), img, f, out=img)
        img.clamp_(0.0, MAX)
    return img


def gaussian_blur_(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """In place Gaussian blur of a contiguous float32 (C, H, W) image: std ``sigma``, kernel 2*ceil(3*sigma)+1."""
    # torchvision's gaussian_blur is a dense k x k conv2d (~5 ms for a 224 crop at sigma 2); OpenCV's
    # separable SIMD blur gives the same values (within 1e-6) in ~0.3 ms. BORDER_REFLECT_101 is torch's
    # "reflect" padding, so the borders match torchvision too.
    k = 2 * max(1, math.ceil(3.0 * sigma)) + 1
    a = img.numpy()
    for c in range(a.shape[0]):  # OpenCV wants HxW planes; CHW channels are contiguous planes
        cv2.GaussianBlur(a[c], (k, k), sigma, dst=a[c], sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return img


def three_augment_(imgs: list[torch.Tensor], rng: np.random.Generator) -> str:
    """DeiT-III 3-augment in place on 0..255 crops: one of grayscale / solarize / blur, same on all."""
    op = int(rng.integers(3))
    sigma = float(rng.uniform(*BLUR_SIGMA))  # drawn every time so the stream does not depend on op
    for im in imgs:
        if op == 0:  # grayscale, 3 channels
            im.copy_(gray(im).expand_as(im))
        elif op == 1:  # solarize: invert values >= threshold (PIL rule)
            a = im.numpy()  # numpy's masked in-place ufunc: ~8x faster than torch.where here
            np.subtract(MAX, a, out=a, where=a >= SOLARIZE_THRESHOLD)
        else:
            gaussian_blur_(im, sigma)
    return ("grayscale", "solarize", f"blur{sigma:.3f}")[op]


def normalize_(img255: torch.Tensor) -> torch.Tensor:
    """In place: (x/255 - mean)/std, the same float32 operations as ``normalize``."""
    return img255.div_(MAX).sub_(_MEAN).div_(_STD)


def normalize(img255: torch.Tensor) -> torch.Tensor:
    """Model input from 0..255 float crops (C,H,W or B,C,H,W, any device): (x/255 - mean)/std in float32."""
    mean, std = (_MEAN, _STD) if img255.device.type == "cpu" else _constants_on(img255.device)
    return (img255 / MAX - mean) / std


@functools.lru_cache(maxsize=8)
def _constants_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean/std tensors on ``device`` (copied once: the tracker normalizes on its GPU)."""
    return _MEAN.to(device), _STD.to(device)


def augment_pair(
    z: torch.Tensor,
    z_box: np.ndarray,
    x: torch.Tensor,
    x_box: np.ndarray,
    rng: np.random.Generator,
    flip_prob: float = 0.5,
    jitter: float = 0.4,
    inplace: bool = False,
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Full training augmentation of a 0..255 template/search crop pair -> normalized crops, boxes.

    The input images are left untouched unless ``inplace`` (then unflipped ones are reused, saving a
    copy: the pair transform owns its fresh crops).
    """
    if rng.random() < flip_prob:
        z, z_box = hflip(z, z_box)
    elif not inplace or not z.is_contiguous():
        z = z.clone(memory_format=torch.contiguous_format)
    if rng.random() < flip_prob:
        x, x_box = hflip(x, x_box)
    elif not inplace or not x.is_contiguous():
        x = x.clone(memory_format=torch.contiguous_format)
    color_jitter_(z, rng, jitter)
    color_jitter_(x, rng, jitter)
    three_augment_([z, x], rng)
    return normalize_(z), z_box, normalize_(x), x_box
