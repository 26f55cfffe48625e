"""The app's editor glue: how the editor's value (the photo, stroke layers) and the session become the photo
and mask zeroft encodes.

The editor shows the photo with the automatic mask tinted pink on it. Strokes on its layer
edit that mask: the pink brush adds, the dark brush removes, the eraser takes strokes back.
(gradio 6.31's editor stores layers set from Python but does not draw them, hence the tint
on the background instead of a mask layer.) The decoded photo and the automatic mask stay
in the session's state; API calls, which have no state, send the plain photo and optional
stroke layers, and get the automatic mask when they paint nothing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import zeroft
from app_inputs import user_error
from zeroft.images import LoadedImage
from zeroft.masking import fit_mask

ADD = (255, 0, 200)  # brush colour that marks the object
REMOVE = (40, 40, 40)  # brush colour that marks background
TINT = 0.45  # opacity of the automatic mask's pink on the photo


def tinted(photo: Image.Image, mask: np.ndarray) -> Image.Image:
    rgba = np.asarray(photo.convert("RGBA"), dtype=np.float32)
    weight = (TINT * mask)[..., None]
    rgba[..., :3] = rgba[..., :3] * (1 - weight) + np.array(ADD, np.float32) * weight
    return Image.fromarray(rgba.round().astype(np.uint8), "RGBA")


def strokes(layers: list[LoadedImage], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(added, removed) masks in [0, 1] painted on the layers, fitted to the photo by zeroft's rule.

    Raises:
        gr.Error: a layer whose aspect ratio differs from the photo's (zeroft.masking.fit_mask).
    """
    added = np.zeros((size[1], size[0]), np.float32)
    removed = np.zeros_like(added)
    for layer in layers:
        rgb = np.asarray(layer.rgb, dtype=np.float32) / 255.0
        opacity = np.ones(rgb.shape[:2], np.float32) if layer.alpha is None else layer.alpha
        alpha = np.clip(opacity / 0.6, 0, 1)  # the brushes paint at 60 % opacity
        is_add = rgb[..., 0] > 0.5
        try:
            added = np.maximum(added, fit_mask(np.where(is_add, alpha, 0), size))
            removed = np.maximum(removed, fit_mask(np.where(is_add, 0, alpha), size))
        except zeroft.InputError as error:
            raise user_error(str(error)) from None
    return added, removed


def shown_digest(background: Image.Image | LoadedImage) -> str:
    """Identifies the (opaque) image the editor shows, whether built here or read back from the browser."""
    rgb = background.rgb if isinstance(background, LoadedImage) else background.convert("RGB")
    return zeroft.cache.image_digest(rgb)


def photo_and_mask(editor: dict | None, session: dict | None = None) -> tuple[LoadedImage, np.ndarray | None]:
    """The photo and the mask to encode; mask None means 'the photo's alpha, else automatic' (nothing painted, no session)."""
    if not editor or editor.get("background") is None:
        raise user_error("Upload a photo first.")
    shown = editor["background"]
    if session and session.get("shown") == shown_digest(shown):
        photo, base = session["photo"], session["auto"] if session["use_auto"] else None
    else:
        photo, base = shown, None
    layers = editor.get("layers") or []
    if base is None and not layers:
        return photo, None
    added, removed = strokes(layers, photo.rgb.size)
    mask = added if base is None else np.maximum(base, added)
    return photo, mask * (1 - removed)

