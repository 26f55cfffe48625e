"""Reading user photos and masks into clean RGB images, refusing bad input with a plain message.

Owns every decision about what an input image may be: file formats, colour modes (CMYK,
16-bit, palette, alpha), EXIF orientation, size limits and decompression bombs. The rest of
zeroft only ever sees an 8-bit RGB ``PIL.Image`` plus, when the photo had one, its alpha
channel as a float mask.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

# Smaller than this cannot show an object; CLIP encoders see 224 px anyway.
MIN_SIDE = 16
# Longer sides are downscaled on load: the encoder sees 224 px and masking is O(pixels).
MAX_SIDE = 2048
# Refuse before decoding: a 200 MB bitmap behind a 50 kB PNG is a decompression bomb.
MAX_PIXELS = 64_000_000
# Upload cap for raw bytes; a real photo is a few MB.
MAX_FILE_BYTES = 50 * 1024 * 1024

ImageInput = Union[str, os.PathLike, bytes, io.IOBase, Image.Image, np.ndarray]


@dataclass
class LoadedImage:
    """An input photo after validation."""

    rgb: Image.Image  # 8-bit RGB, EXIF rotation applied, at most MAX_SIDE on its longer side
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1] when the photo had real transparency


def _open(source: ImageInput, what: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise InputError(f"The {what} {str(path)!r} is a folder; give the path of an image file "
                             "(PNG, JPEG, WebP, ...).")
        if not path.is_file():
            raise InputError(f"The {what} file {str(path)!r} does not exist.")
        if path.stat().st_size == 0:
            raise InputError(f"The {what} file {path.name!r} is empty.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"The {what} file {path.name!r} is larger than {MAX_FILE_BYTES // 2**20} MB.")
        opener = path
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise InputError(f"The {what} is empty (0 bytes).")
        if len(source) > MAX_FILE_BYTES:
            raise InputError(f"The {what} is larger than {MAX_FILE_BYTES // 2**20} MB.")
        opener = io.BytesIO(source)
    elif hasattr(source, "read"):
        opener = source
    else:
        raise InputError(f"The {what} must be a file path, bytes, a PIL image or an array, not {type(source).__name__}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(opener)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if isinstance(error, UnidentifiedImageError):
            raise InputError(f"The {what} is not an image file zeroft can read (PNG, JPEG, WebP, ...).") from None
        raise InputError(f"The {what} is too large to decode safely (over {MAX_PIXELS:,} pixels).") from None
    except OSError as error:
        raise InputError(f"The {what} could not be read: {error}.") from None
    return image


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise InputError(
            f"The {what} is {width}x{height} pixels, over the {MAX_PIXELS:,}-pixel limit; "
            "refusing to decode it (it could be a decompression bomb)."
        )


def _decode(image: Image.Image, what: str) -> Image.Image:
    """Decode pixel data now, so that a truncated or corrupt file fails here with a message."""
    _check_pixels(*image.size, what)
    if image.format == "JPEG" and max(image.size) > 2 * MAX_SIDE:
        # JPEG can decode at 1/2, 1/4, 1/8 scale directly: far less memory for huge photos.
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"The {what} is corrupt or truncated and could not be decoded ({error}).") from None
    return image


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """I;16 / I / F images: scale to 0..255 instead of clipping (PIL's convert clips)."""
    array = np.asarray(image).astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError("The image contains NaN or infinite pixel values.")
    if image.mode == "F":
        peak = 1.0 if array.max() <= 1.0 else 255.0
    else:
        peak = 65535.0 if array.max() > 255 else 255.0
    array = np.clip(array / peak * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(array, mode="L")


def _array_to_image(array: np.ndarray, what: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"The {what} array must be HxW, HxWx3 or HxWx4, not shape {tuple(array.shape)}.")
    if array.size == 0:
        raise InputError(f"The {what} array is empty.")
    _check_pixels(array.shape[1], array.shape[0], what)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"The {what} contains NaN or infinite values.")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"The {what} array has integer values outside 0..255.")
        array = array.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _downscale(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def load_image(source: ImageInput, what: str = "photo", max_side: int = MAX_SIDE) -> LoadedImage:
    """Read a photo from a path, bytes, a file object, a PIL image or an array.

    Args:
        source: the photo. Arrays may be uint8, uint16, bool or float (0..1 or 0..255).
        what: how error messages name the input ("photo", "reference photo 2", ...).
        max_side: longer sides above this are downscaled (aspect ratio kept).

    Returns:
        A :class:`LoadedImage`; ``alpha`` is set only when the photo had transparency that is
        not fully opaque, so that it can serve as the object mask.

    Raises:
        InputError: unreadable, corrupt, truncated, too small, too large or NaN-valued input.
    """
    if isinstance(source, np.ndarray):
        image = _array_to_image(source, what)
    else:
        image = _decode(_open(source, what), what)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the user the photo itself
        pass
    if image.width < MIN_SIDE or image.height < MIN_SIDE:
        raise InputError(
            f"The {what} is {image.width}x{image.height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed."
        )
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_bit_depth_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    alpha = None
    if image.mode == "RGBA":
        alpha_channel = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        if alpha_channel.min() < 1.0:
            alpha = alpha_channel
    rgb = image.convert("RGB")  # CMYK, YCbCr, LAB, L and 1 convert with PIL's colour maths
    if max(rgb.size) > max_side:
        rgb = _downscale(rgb, max_side)
        if alpha is not None:
            alpha = np.asarray(
                Image.fromarray(alpha).resize(rgb.size, Image.Resampling.BILINEAR), dtype=np.float32
            )
    return LoadedImage(rgb=rgb, alpha=alpha)


def load_mask(source: ImageInput) -> np.ndarray:
    """Read a user-drawn mask as an (H, W) float32 array in [0, 1].

    White (or opaque, for images with transparency) marks the object. RGB masks are read by
    luminance; RGBA masks by alpha when it varies, else by luminance.
    """
    if isinstance(source, np.ndarray):
        array = np.asarray(source)
        if array.ndim == 3 and array.shape[-1] == 4 and array[..., 3].min() < array[..., 3].max():
            array = array[..., 3]  # painted strokes: where alpha > 0
        elif array.ndim == 3 and array.shape[-1] in (3, 4):
            array = array[..., :3].astype(np.float64).mean(-1)
        elif array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2 or array.size == 0:
            raise InputError(f"The mask array must be HxW, not shape {tuple(np.shape(source))}.")
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise InputError("The mask contains NaN or infinite values.")
        if array.max() > 1.0:
            array = array / (65535.0 if array.max() > 255 else 255.0)
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    image = _decode(_open(source, "mask"), "mask")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_bit_depth_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < alpha.max():
            return alpha.astype(np.float32) / 255.0
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
