"""An uploaded image, whatever route it came by: its bytes read with a cap before anything decodes them,
then decoded by ``zeroft.load_image``, as the CLI decodes files (16-bit, palette and EXIF-rotated
photos, bombs and broken files are handled one way)."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import numpy as np
from PIL import Image

import zeroft
from zeroft.images import LoadedImage

from .errors import user_error

MAX_UPLOAD = 20 * 2**20  # bytes: the cap on every file the app decodes, whatever route it came by


def upload_bytes(item, what: str) -> bytes:
    """The raw bytes of one uploaded image, at most MAX_UPLOAD of them, read before anything decodes them.

    ``item`` is a file in gradio's cache (a path, or FileData with a path), the editor's blob bytes, or
    FileData whose url is a base64 ``data:`` URL (gradio itself would decode those with no size limit).
    """
    limit, too_large = MAX_UPLOAD, f"The {what} is larger than {MAX_UPLOAD // 2**20} MB."
    url = getattr(item, "url", None)
    if isinstance(item, (bytes, bytearray)):
        data = bytes(item)
    elif isinstance(url, str) and url.startswith("data:"):
        encoded = url.partition(",")[2]
        if len(encoded) // 4 * 3 > limit + 3:  # refuse before decoding the base64 itself
            raise user_error(too_large)
        try:
            data = base64.b64decode(encoded)
        except (binascii.Error, ValueError):
            raise user_error(f"The {what} is not valid base64 data.") from None
    else:
        path = Path(item) if isinstance(item, (str, os.PathLike)) else Path(getattr(item, "path", None) or "")
        if not str(path) or not path.is_file():
            raise user_error(f"The {what} did not arrive; upload it again.")
        if path.stat().st_size > limit:
            raise user_error(too_large)
        data = path.read_bytes()
    if len(data) > limit:
        raise user_error(too_large)
    return data


def decode_upload(item, what: str = "photo") -> LoadedImage:
    """One uploaded image through ``zeroft.load_image`` (the CLI's reader), errors as plain messages."""
    try:
        return zeroft.load_image(upload_bytes(item, what), what)
    except zeroft.InputError as error:
        raise user_error(str(error)) from None


def as_image(photo: LoadedImage) -> Image.Image:
    """The decoded photo as one PIL image that ``zeroft.load_image`` reads back identically (RGBA when it has alpha)."""
    if photo.alpha is None:
        return photo.rgb
    rgba = photo.rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((photo.alpha * 255).round().astype(np.uint8), "L"))
    return rgba
