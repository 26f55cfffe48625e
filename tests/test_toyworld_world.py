"""The toy world's renderings: a held-out split that stays out, captions that match renderings, visible patterns."""

import numpy as np
import pytest

from toyworld.world import (BACKGROUNDS, COLOURS, PATTERNS, SHAPES, Context, all_contexts, all_identities,
                            context_caption, general_caption, random_pose, render, sample_scene, split_identities)
from zeroft import Masker


def test_held_out_split_keeps_every_attribute_in_training():
    train, held_out = split_identities()
    assert len(train) == 60 and len(held_out) == 12 and not set(train) & set(held_out)
    assert split_identities() == (train, held_out)
    for field, values in (("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS)):
        assert {getattr(i, field) for i in train} == set(values)


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected regions of True."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        while stack:
            y, x = stack.pop()
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return count


def _colour_fraction(image, colour, tolerance=30):
    pixels = np.asarray(image, dtype=np.int32)
    return float((np.abs(pixels - np.array(colour)).max(-1) < tolerance).mean())


@pytest.mark.parametrize("index", range(12))
def test_captions_match_renderings(index):
    rng = np.random.default_rng(index)
    identity, context, pose = sample_scene(rng, all_identities())
    image, mask = render(identity, context, pose)
    caption = general_caption(identity, context)
    assert caption.startswith(context.count) and f"on a {context.background} background" in caption
    # the background colour fills the border, the body colour is on the object
    border = np.concatenate([np.asarray(image)[0], np.asarray(image)[-1]])
    assert np.abs(np.median(border, 0) - np.array(BACKGROUNDS[context.background])).max() < 10
    assert _colour_fraction(image, COLOURS[identity.colour]) > 0.01
    # as many separate objects as the caption says
    assert _components(np.asarray(mask) > 127) == {"one": 1, "two": 2}[context.count]


def test_patterns_are_visible():
    context = Context("gray", "one")
    pose = random_pose(np.random.default_rng(0), "one")
    plain, _ = render(all_identities()[0].__class__("square", "red", "plain"), context, pose)
    striped, _ = render(all_identities()[0].__class__("square", "red", "striped"), context, pose)
    dark = tuple(int(v * 0.4) for v in COLOURS["red"])
    assert _colour_fraction(plain, dark, 20) < 0.005 < _colour_fraction(striped, dark, 20)


def test_border_masker_recovers_the_silhouette_on_dark_backgrounds():
    """The pipeline's automatic mask of a reference matches the true silhouette: dark stripes
    and dots on a black or brown background stay inside the object (training used true masks)."""
    masker, rng = Masker("border"), np.random.default_rng(3)
    for identity in all_identities():
        if identity.pattern == "plain":
            continue
        for background in ("black", "brown"):
            image, mask = render(identity, Context(background, "one"), random_pose(rng, "one"))
            truth, found = np.asarray(mask) >= 128, masker(image) >= 0.5
            assert (truth & found).sum() / (truth | found).sum() > 0.75, (identity, background)


def test_context_captions_cover_every_context():
    captions = {context_caption(c) for c in all_contexts()}
    assert len(captions) == 8 and "two objects on a white background" in captions
