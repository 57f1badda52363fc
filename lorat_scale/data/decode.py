"""Image decoding for the data hot path: encoded bytes -> uint8 HWC RGB, identical to Pillow.

JPEGs are decoded with simplejpeg (libjpeg-turbo, accurate DCT and upsampling). Measured on the
shared sample frames (LaSOT, OTB, VOT, COCO; ``scripts/bench_data.py --decoders``) it is the
fastest of Pillow, torchvision.io.decode_jpeg, OpenCV and simplejpeg (1.08 vs 1.19 / 1.24 / 1.89 ms
per frame) and byte-identical to ``Image.open(f).convert("RGB")``, the reference decode, on every
frame. CMYK/YCCK JPEGs, other formats, and anything simplejpeg refuses go through Pillow.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    import simplejpeg
except ImportError:  # optional at run time: Pillow gives the same pixels, only slower
    simplejpeg = None

__all__ = ["decode_image", "decode_image_pil", "decode_image_reduced", "image_size", "read_frame"]

# Colour spaces whose RGB conversion matches Pillow's (CMYK/YCCK conversions differ: Pillow decodes those).
_SIMPLE_SPACES = ("YCbCr", "Gray", "RGB")


def decode_image_pil(data: bytes) -> np.ndarray:
    """Reference decode: Pillow ``Image.open(...).convert("RGB")`` -> uint8 HWC."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def decode_image(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode encoded image bytes to uint8 HWC RGB (simplejpeg for JPEG, else Pillow); OSError if corrupt."""
    if simplejpeg is not None and len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8:
        try:
            # strict: truncated/corrupt data raises instead of returning a partly grey image. EXIF
            # rotation is ignored, as Pillow's plain open/convert does (boxes refer to stored pixels).
            if simplejpeg.decode_jpeg_header(data)[2] in _SIMPLE_SPACES:
                return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
        except ValueError:
            pass  # Pillow decides: it decodes what it can and raises OSError on corrupt data
    try:
        return decode_image_pil(bytes(data))
    except (SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot decode image: {e}") from e


def read_frame(path: str) -> np.ndarray:
    """Read and decode an image file to uint8 HWC RGB."""
    with open(path, "rb") as fh:
        return decode_image(fh.read())


def image_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(W, H) from the header alone (no pixels decoded); OSError if it is not an image."""
    if simplejpeg is not None and len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8:
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(w), int(h)
        except ValueError:
            pass
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return im.size
    except (SyntaxError, ValueError, Image.DecompressionBombError, OSError) as e:
        raise OSError(f"cannot read image header: {e}") from e


def decode_image_reduced(data: bytes | bytearray | memoryview, scale: float) -> tuple[np.ndarray, float]:
    """Decode at the smallest JPEG DCT scale 1/8, 1/4 or 1/2 that is >= ``scale``; returns (image, factor).

    For a crop that shrinks the frame by ``scale`` (output px per frame px), decoding at a factor >= ``scale``
    skips most of the IDCT, upsampling and colour-conversion work (entropy decoding remains). Only 1/8, 1/4 and
    1/2 are used: measured at 1280x720 (``scripts/bench_data.py``), libjpeg-turbo's other M/8 IDCTs have no SIMD
    path and decode slower than the full size (3/8: 0.9x of 1/2's speed; 5/8..7/8: slower than 8/8). Pixel edges scale exactly (``x_small = x * M/8``),
    so crop parameters carry over by dividing their scale by M/8; the pixels are *not* those of a full
    decode followed by the crop (the IDCT averages where bilinear sampling picks), which is why this is an
    option (``DataConfig.reduced_decode``) and the default decode stays bit-exact. Region (ROI) decoding is
    not offered by simplejpeg or Pillow, so the whole frame is decoded at the reduced size. Non-JPEG data and
    ``scale >= 1`` decode at full size (factor 1.0).
    """
    if (scale >= 1.0 or simplejpeg is None or len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8):
        return decode_image(data), 1.0
    try:
        h, w, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in _SIMPLE_SPACES:
            return decode_image(data), 1.0
        m = next((k for k in (1, 2, 4) if k / 8 >= scale), 8)
        if m == 8:
            return decode_image(data), 1.0
        img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False,
                                     min_height=-(-h * m // 8), min_width=-(-w * m // 8), strict=True)
    except ValueError as e:
        raise OSError(f"cannot decode image: {e}") from e
    # simplejpeg picks the smallest libjpeg factor giving at least that size (M/8 itself for these M);
    # recover the factor actually used from the output size.
    for k in range(m, 17):
        if img.shape[1] == -(-w * k // 8) and img.shape[0] == -(-h * k // 8):
            return img, k / 8
    return decode_image(data), 1.0  # an unexpected size: fall back to the exact decode
