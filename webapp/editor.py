"""The app's editor glue: how the editor's value (the photo, stroke layers) and the visitor's state become
the photo and mask zeroft encodes.

The editor shows the photo with the automatic mask tinted pink on it. Strokes on its layer
edit that mask: the pink brush adds, the dark brush removes, the eraser takes strokes back.
(gradio 6.31's editor stores layers set from Python but does not draw them, hence the tint
on the background instead of a mask layer.)

The visitor's state remembers the last few images the server put into the editor (:class:`Shown`,
keyed by the digest of the image shown), each with the photo it was made from and its automatic
mask. Whatever the editor sends back, the photo under it is looked up by what it shows, so an event
that arrives late (a second upload while the first one's editor change is still queued) cannot pair
one photo with another's mask. API calls, which have no state, send the plain photo and optional
stroke layers, and get the photo's alpha or the automatic mask when they paint nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

import zeroft
from zeroft.images import LoadedImage
from zeroft.masking import ChosenMask, fit_mask

from .errors import user_error

ADD = (255, 0, 200)  # brush colour that marks the object
REMOVE = (40, 40, 40)  # brush colour that marks background
TINT = 0.45  # opacity of the automatic mask's pink on the photo
SHOWN_KEPT = 4  # images remembered per visitor: the one shown and the few a late event may still send


@dataclass(frozen=True)
class Shown:
    """One image the server put into a visitor's editor, and what it stands for."""

    photo: LoadedImage  # the photo as decoded from the upload (or the example file)
    auto: ChosenMask  # its automatic (or committed) mask, with where that came from
    use_auto: bool  # False after "Clear mask": only the strokes mark the object
    background: Image.Image  # the RGBA image shown: the photo, with the mask tinted on it where use_auto


def tinted(photo: Image.Image, mask: np.ndarray) -> Image.Image:
    rgba = np.asarray(photo.convert("RGBA"), dtype=np.float32)
    weight = (TINT * mask)[..., None]
    rgba[..., :3] = rgba[..., :3] * (1 - weight) + np.array(ADD, np.float32) * weight
    return Image.fromarray(rgba.round().astype(np.uint8), "RGBA")


def shown_digest(background: Image.Image | LoadedImage) -> str:
    """Identifies the (opaque) image the editor shows, whether built here or read back from the browser."""
    rgb = background.rgb if isinstance(background, LoadedImage) else background.convert("RGB")
    return zeroft.cache.image_digest(rgb)


def remember(session: dict | None, photo: LoadedImage, auto: ChosenMask, use_auto: bool) -> tuple[dict, Shown]:
    """The visitor's new state, with ``photo`` as shown now added to what was shown before (the oldest dropped)."""
    background = tinted(photo.rgb, auto.mask) if use_auto else photo.rgb.convert("RGBA")
    shown = Shown(photo, auto, use_auto, background)
    entries = dict((session or {}).get("shown", {}))
    digest = shown_digest(background)
    entries.pop(digest, None)
    entries[digest] = shown
    while len(entries) > SHOWN_KEPT:
        entries.pop(next(iter(entries)))
    return {"shown": entries, "latest": digest}, shown


def lookup(session: dict | None, background) -> Shown | None:
    """What the image ``background`` (from the editor) stands for, if the server showed it to this visitor."""
    if not session or background is None:
        return None
    return session.get("shown", {}).get(shown_digest(background))


def latest(session: dict | None) -> Shown | None:
    """The image the server showed this visitor last."""
    return session["shown"].get(session.get("latest")) if session and session.get("shown") else None


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


def photo_and_mask(editor: dict | None, session: dict | None = None) -> tuple[LoadedImage, ChosenMask | None]:
    """The photo and the mask to encode, with where the mask came from.

    The mask is None when nothing says what it is (an image the server did not show, nothing painted):
    the photo's alpha, else the automatic mask, decides. An untouched automatic mask keeps its source
    (``automatic:<masker>``); an edited or painted one is ``given``.
    """
    if not editor or editor.get("background") is None:
        raise user_error("Upload a photo first.")
    shown = lookup(session, editor["background"])
    photo = shown.photo if shown is not None else editor["background"]
    added, removed = strokes(editor.get("layers") or [], photo.rgb.size)
    painted = bool(added.any() or removed.any())
    if shown is None:
        return photo, ChosenMask(added * (1 - removed), "given") if painted else None
    if not painted:
        return photo, shown.auto if shown.use_auto else ChosenMask(np.zeros_like(added), "given")
    base = shown.auto.mask if shown.use_auto else np.zeros_like(added)
    return photo, ChosenMask(np.maximum(base, added) * (1 - removed), "given")
