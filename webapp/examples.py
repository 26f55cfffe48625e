"""The example rows: held-out toy objects for toy-scale models, real photos for the others, each real photo
with its object mask made once and committed (so the examples work before any masker model is downloaded)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import zeroft
from zeroft.images import LoadedImage

from .paths import REAL_EXAMPLES, TOY_EXAMPLES


@dataclass(frozen=True)
class Example:
    """One example row: a photo, its prompt and, for real photos, the object mask made once and committed."""

    image: str  # path of the photo
    prompt: str
    mask: str | None = None  # path of an 8-bit mask (white = object) the size of the photo


def load_examples(folder: Path = TOY_EXAMPLES) -> list[Example]:
    """The examples listed in ``folder/examples.json`` (records: image, prompt, optional mask, identity)."""
    listing = folder / "examples.json"
    if not listing.is_file():
        return []
    return [Example(str(folder / e["image"]), e["prompt"], str(folder / e["mask"]) if e.get("mask") else None)
            for e in json.loads(listing.read_text())]


@functools.lru_cache(maxsize=1)
def _committed_masks() -> dict[tuple[tuple[int, int], str], str]:
    """(size, digest) of each example photo as zeroft decodes it → its committed mask file."""
    masks = {}
    for example in load_examples(TOY_EXAMPLES) + load_examples(REAL_EXAMPLES):
        if example.mask:
            rgb = zeroft.load_image(example.image).rgb
            masks[(rgb.size, zeroft.cache.image_digest(rgb))] = example.mask
    return masks


def committed_mask(photo: LoadedImage) -> np.ndarray | None:
    """The committed mask in [0, 1] of an example photo (by content, however it arrived), else None.

    It stands in for the automatic mask, so a real example works where the automatic masker's model
    has not been downloaded.
    """
    masks = _committed_masks()
    if not any(size == photo.rgb.size for size, _ in masks):  # most photos: no digest to compute
        return None
    path = masks.get((photo.rgb.size, zeroft.cache.image_digest(photo.rgb)))
    if path is None:
        return None
    return zeroft.prepare_mask(np.asarray(Image.open(path).convert("L"), np.float32) / 255.0, photo.rgb.size)
