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

import ctypes
import ctypes.util
import functools
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

__all__ = ["decode_image", "decode_image_pil", "decode_image_reduced", "decode_region", "region_decoding",
           "image_size", "read_frame"]

log = logging.getLogger(__name__)

# Colour spaces whose RGB conversion matches Pillow's (CMYK/YCCK conversions differ: Pillow converts those).
_SIMPLE_SPACES = ("YCbCr", "Gray", "RGB")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_image_pil(data: bytes) -> np.ndarray:
    """Reference decode: Pillow ``Image.open(...).convert("RGB")`` -> uint8 HWC (lenient on corrupt JPEG data)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def decode_image(data: bytes | bytearray | memoryview, fast: bool = False) -> np.ndarray:
    """Decode encoded image bytes to uint8 HWC RGB; ``OSError`` if they are not a complete, valid image.

    ``fast``: libjpeg-turbo's fast integer IDCT and fast (non-"fancy") chroma upsampling for JPEGs, not bit-exact
    (``DataConfig.fast_jpeg``; scripts/bench_data.py measures its pixel difference and speed-up).
    """
    if len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8:
        try:
            # EXIF rotation is ignored, as Pillow's plain open/convert does (boxes refer to stored pixels).
            if simplejpeg.decode_jpeg_header(data)[2] in _SIMPLE_SPACES:
                return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=fast, fastupsample=fast, strict=True)
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


def decode_image_reduced(data: bytes | bytearray | memoryview, scale: float,
                         fast: bool = False) -> tuple[np.ndarray, float]:
    """Decode at the smallest JPEG DCT scale 1/8, 1/4 or 1/2 that is >= ``scale``; returns (image, factor).

    For a crop that shrinks the frame by ``scale`` (output px per frame px), decoding at a factor >= ``scale``
    skips most of the IDCT, upsampling and colour-conversion work (entropy decoding remains). Only 1/8, 1/4 and
    1/2 are used: measured at 1280x720, libjpeg-turbo's other M/8 IDCTs have no SIMD path and decode slower than
    the full size (3/8: 0.8x of 1/2's speed; 5/8..7/8: slower than 8/8). Pixel edges scale exactly
    (``x_small = x * factor``), so crop parameters carry over by dividing their scale by the factor; the pixels
    are *not* those of a full decode followed by the crop (the IDCT averages where bilinear sampling picks),
    which is why this is an option (``DataConfig.reduced_decode``) and the default decode stays bit-exact.
    The whole frame is decoded at the reduced size (``decode_region`` decodes at full size only). Strict like
    ``decode_image``; non-JPEG data, CMYK, and ``scale > 1/2`` decode at full size (factor 1.0). ``fast``: as in
    ``decode_image``.
    """
    if scale > 0.5 or len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return decode_image(data, fast), 1.0
    try:
        h, w, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in _SIMPLE_SPACES:
            return decode_image(data), 1.0
        m = next(k for k in (1, 2, 4) if k / 8 >= scale)
        img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=fast, fastupsample=fast,
                                     min_height=-(-h * m // 8), min_width=-(-w * m // 8), strict=True)
    except ValueError as e:
        raise OSError(f"corrupt JPEG data ({e})") from e
    # simplejpeg picks the smallest libjpeg factor giving at least that size (M/8 itself for these M);
    # recover the factor actually used from the output size.
    for k in range(m, 17):
        if img.shape[1] == -(-w * k // 8) and img.shape[0] == -(-h * k // 8):
            return img, k / 8
    return decode_image(data, fast), 1.0  # an unexpected size: fall back to the full decode


# --------------------------------------------------------------------------------------------------------------
# Region decoding: only the rows and columns a crop reads, bit-identical to the full decode there.
# --------------------------------------------------------------------------------------------------------------
_LIBJPEG_FUNCTIONS = ("jpeg_std_error", "jpeg_CreateDecompress", "jpeg_destroy_decompress", "jpeg_mem_src",
                      "jpeg_read_header", "jpeg_start_decompress", "jpeg_crop_scanline", "jpeg_skip_scanlines",
                      "jpeg_read_scanlines", "jpeg_finish_decompress")


def _libjpeg_candidates() -> list[str]:
    """libjpeg-turbo libraries to try: $LORAT_LIBJPEG, the one Pillow's wheels bundle, then the system's."""
    import PIL

    pil = Path(PIL.__file__).parent
    found = [os.environ.get("LORAT_LIBJPEG", "")]
    found += sorted(str(p) for p in (pil.parent / "pillow.libs").glob("libjpeg*.so*"))  # Linux wheels
    found += sorted(str(p) for p in (pil / ".dylibs").glob("libjpeg*.dylib"))  # macOS wheels
    found.append(ctypes.util.find_library("jpeg") or "")
    return [f for f in found if f]


def _self_test(decode: Callable[[bytes, tuple[int, int, int, int]], np.ndarray]) -> str | None:
    """None if region decodes of a test image equal the full decode's pixels (simplejpeg), else what differs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:100]
    img = np.stack([xx * 2, yy * 3, (xx + yy) % 256], -1).astype(np.int16) + rng.integers(-40, 40, (72, 100, 3))
    for sub in ("420", "422", "444", "Gray"):
        src = np.clip(img, 0, 255).astype(np.uint8)
        data = simplejpeg.encode_jpeg(np.ascontiguousarray(src[..., :1]) if sub == "Gray" else src, 90,
                                      colorspace="GRAY" if sub == "Gray" else "RGB", colorsubsampling=sub.lower())
        full = decode_image(data)
        for box in ((0, 0, 100, 72), (1, 3, 37, 50), (16, 16, 33, 17), (40, 20, 100, 72), (99, 71, 100, 72)):
            if not np.array_equal(decode(data, box), full[box[1]:box[3], box[0]:box[2]]):
                return f"{sub} region {box} differs from the full decode"
    return None


@functools.cache
def _region_decoder() -> tuple[Callable | None, str | None]:
    """(decode(data, box) function, None) if region decoding works here, else (None, why not). Loaded once."""
    try:
        from lorat_scale.data import _jpeg_region
    except ImportError as e:
        why = f"the _jpeg_region extension was not built ({e}; it needs a C compiler at install time)"
        log.warning("region decoding unavailable, frames are decoded whole (the same pixels, slower): %s", why)
        return None, why
    why = "no libjpeg-turbo library found (Pillow's wheels bundle one; or set LORAT_LIBJPEG)"
    for path in _libjpeg_candidates():
        try:
            lib = ctypes.CDLL(path)
            addrs = tuple(ctypes.cast(getattr(lib, f), ctypes.c_void_p).value for f in _LIBJPEG_FUNCTIONS)
            _jpeg_region.init(addrs)
        except (OSError, AttributeError) as e:  # not loadable, not libjpeg-turbo >= 1.5, or ABI not stated
            why = f"{path}: {e}"
            continue

        def decode(data: bytes | bytearray | memoryview, box: tuple[int, int, int, int],
                   header: tuple | None = None) -> np.ndarray:
            """Pixels [y0:y1, x0:x1] of a YCbCr/RGB/Gray JPEG (``header``: its decode_jpeg_header, if parsed
            already); ValueError from libjpeg if the data is corrupt."""
            h, w, space, _ = header or simplejpeg.decode_jpeg_header(data)
            x0, y0, x1, y1 = box
            ch = 1 if space == "Gray" else 3
            out = np.empty((y1 - y0, x1 - x0, ch), np.uint8)
            _jpeg_region.decode(data, w, h, x0, y0, x1, y1, ch, out)
            return np.repeat(out, 3, axis=2) if ch == 1 else out  # gray -> RGB replicates, as libjpeg does

        try:
            problem = _self_test(decode)
        except ValueError as e:  # libjpeg refused the test image: this library does not work here
            problem = f"test decode failed ({e})"
        if problem is None:
            log.debug("region decoding with %s", path)
            return decode, None
        why = f"{path}: {problem}"
    log.warning("region decoding unavailable, frames are decoded whole (the same pixels, slower): %s", why)
    return None, why


def region_decoding() -> str | None:
    """None if ``decode_region`` decodes regions only (else it decodes whole frames): the reason why not."""
    return _region_decoder()[1]


def decode_region(data: bytes | bytearray | memoryview, box: tuple[int, int, int, int]) -> np.ndarray:
    """``decode_image(data)[y0:y1, x0:x1]`` for the integer ``box`` (x0, y0, x1, y1), decoding only what it needs.

    JPEGs are decoded with libjpeg-turbo's partial decoding: rows above ``y0`` are skipped (entropy-decoded only),
    columns outside ``[x0, x1)`` are not transformed, and decoding stops after row ``y1 - 1``. The pixels are the
    full decode's, bit for bit (checked on a test image when the decoder loads). Strict like ``decode_image`` for
    the data it reads; damage below the region, or inside it where libjpeg notices it only at the end marker (as
    with garbage in the entropy-coded data), is not seen unless the region reaches the last row
    (``lorat-scale check-data --decode`` decodes whole frames and finds it). Other formats, CMYK JPEGs, and
    machines without the decoder (``region_decoding()`` says why) decode the whole frame.
    """
    decode, _ = _region_decoder()
    if decode is not None and len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8:
        try:
            header = simplejpeg.decode_jpeg_header(data)
            if header[2] in _SIMPLE_SPACES:
                return decode(data, box, header)
        except ValueError as e:
            raise OSError(f"corrupt JPEG data ({e})") from e
    x0, y0, x1, y1 = box
    return decode_image(data)[y0:y1, x0:x1]
