"""Image decoding for the data hot path: encoded bytes -> uint8 HWC RGB, identical to Pillow.

JPEGs are decoded with simplejpeg (libjpeg-turbo, accurate DCT and upsampling). Measured on the
shared sample frames (LaSOT, OTB, VOT, COCO; ``scripts/bench_data.py --decoders``) it is the
fastest of Pillow, torchvision.io.decode_jpeg, OpenCV and simplejpeg (1.08 vs 1.19 / 1.24 / 1.89 ms
per frame) and byte-identical to ``Image.open(f).convert("RGB")``, the reference decode, on every
frame. CMYK/YCCK JPEGs and other formats are converted by Pillow.

Decoding is **strict**: a frame that is not a complete, valid image raises ``OSError``; it is never
decoded leniently. libjpeg-turbo in strict mode rejects corrupt entropy-coded data (Pillow would
decode it with a grey or smeared lower part, without a word), so every JPEG, CMYK ones included,
passes simplejpeg's strict decode. PNG chunk checksums are verified (Pillow's ``verify``), and
Pillow raises on truncated or undecodable data of every format (``LOAD_TRUNCATED_IMAGES`` stays off).
"""
from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

__all__ = ["decode_image", "decode_image_pil", "decode_image_reduced", "image_size", "read_frame"]

# Colour spaces whose RGB conversion matches Pillow's (CMYK/YCCK conversions differ: Pillow converts those).
_SIMPLE_SPACES = ("YCbCr", "Gray", "RGB")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_image_pil(data: bytes) -> np.ndarray:
    """Reference decode: Pillow ``Image.open(...).convert("RGB")`` -> uint8 HWC (lenient on corrupt JPEG data)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def decode_image(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode encoded image bytes to uint8 HWC RGB; ``OSError`` if they are not a complete, valid image."""
    if len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8:
        try:
            # EXIF rotation is ignored, as Pillow's plain open/convert does (boxes refer to stored pixels).
            if simplejpeg.decode_jpeg_header(data)[2] in _SIMPLE_SPACES:
                return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
            # CMYK/YCCK: the strict decode is the integrity check; Pillow's conversion gives the pixels.
            simplejpeg.decode_jpeg(data, colorspace="CMYK", strict=True)
        except ValueError as e:  # simplejpeg reports libjpeg errors and (strict) warnings as ValueError
            raise OSError(f"corrupt JPEG data ({e})") from e
    elif bytes(data[:8]) == _PNG_MAGIC:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # every chunk's CRC: catches damage that still inflates
        except (SyntaxError, ValueError, OSError) as e:
            raise OSError(f"corrupt PNG data ({e})") from e
    try:  # OSError (truncated file, broken data stream, not an image) propagates as is
        return decode_image_pil(bytes(data))
    except (SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot decode image: {e}") from e


def read_frame(path: str) -> np.ndarray:
    """Read and decode an image file to uint8 HWC RGB."""
    with open(path, "rb") as fh:
        return decode_image(fh.read())


def image_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(W, H) from the header alone (no pixels decoded); OSError if it is not an image."""
    if len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8:
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(w), int(h)
        except ValueError as e:
            raise OSError(f"corrupt JPEG header ({e})") from e
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return im.size
    except (SyntaxError, ValueError, Image.DecompressionBombError, OSError) as e:
        raise OSError(f"cannot read image header: {e}") from e


def decode_image_reduced(data: bytes | bytearray | memoryview, scale: float) -> tuple[np.ndarray, float]:
    """Decode at the smallest JPEG DCT scale 1/8, 1/4 or 1/2 that is >= ``scale``; returns (image, factor).

    For a crop that shrinks the frame by ``scale`` (output px per frame px), decoding at a factor >= ``scale``
    skips most of the IDCT, upsampling and colour-conversion work (entropy decoding remains). Only 1/8, 1/4 and
    1/2 are used: measured at 1280x720, libjpeg-turbo's other M/8 IDCTs have no SIMD path and decode slower than
    the full size (3/8: 0.8x of 1/2's speed; 5/8..7/8: slower than 8/8). Pixel edges scale exactly
    (``x_small = x * factor``), so crop parameters carry over by dividing their scale by the factor; the pixels
    are *not* those of a full decode followed by the crop (the IDCT averages where bilinear sampling picks),
    which is why this is an option (``DataConfig.reduced_decode``) and the default decode stays bit-exact.
    Region (ROI) decoding is not offered by simplejpeg, Pillow, OpenCV or torchvision (libjpeg-turbo's partial
    decoding API is not exposed), so the whole frame is decoded at the reduced size. Strict like
    ``decode_image``; non-JPEG data, CMYK, and ``scale > 1/2`` decode at full size (factor 1.0).
    """
    if scale > 0.5 or len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return decode_image(data), 1.0
    try:
        h, w, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in _SIMPLE_SPACES:
            return decode_image(data), 1.0
        m = next(k for k in (1, 2, 4) if k / 8 >= scale)
        img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False,
                                     min_height=-(-h * m // 8), min_width=-(-w * m // 8), strict=True)
    except ValueError as e:
        raise OSError(f"corrupt JPEG data ({e})") from e
    # simplejpeg picks the smallest libjpeg factor giving at least that size (M/8 itself for these M);
    # recover the factor actually used from the output size.
    for k in range(m, 17):
        if img.shape[1] == -(-w * k // 8) and img.shape[0] == -(-h * k // 8):
            return img, k / 8
    return decode_image(data), 1.0  # an unexpected size: fall back to the exact decode
