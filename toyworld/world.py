"""The toy world: procedural objects with an identity, a pose and a context, rendered at 64×64.

An object identity is (shape, colour, pattern): 4 × 6 × 3 = 72 identities, of which 12 are held
out and never rendered for training (every attribute value still appears in training; only the
combination is new). Pose varies per rendering (position, size, rotation). The context is set
by text: background colour and count ("one" or "two" copies). Everything is a pure function of
a seed: ``render(identity, context, pose)`` and the random draws around it.

Captions:
- general-domain: everything, e.g. "two red striped circles on a gray background";
- domain-specific: the context only, e.g. "two objects on a gray background", so the identity
  can only come from the object embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product, zip_longest

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4  # draw at 256 px and downsample: anti-aliased edges
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230),
           "yellow": (235, 210, 40), "magenta": (210, 50, 200), "cyan": (40, 205, 215)}
PATTERNS = ("plain", "striped", "dotted")
BACKGROUNDS = {"black": (25, 25, 25), "white": (235, 235, 235), "gray": (128, 128, 128), "brown": (120, 80, 45)}
COUNTS = ("one", "two")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
RARE_TOKEN = "sks"  # in the vocabulary, never in a training caption: the per-object fine-tuning baseline's identifier
HELD_OUT_SEED = 2023


@dataclass(frozen=True)
class Identity:
    shape: str
    colour: str
    pattern: str

    @property
    def words(self) -> str:
        return f"{self.colour} {self.pattern} {self.shape}"

    @property
    def name(self) -> str:
        return f"{self.colour}-{self.pattern}-{self.shape}"


@dataclass(frozen=True)
class Context:
    background: str
    count: str


@dataclass(frozen=True)
class Pose:
    """Centres (one or two, in pixels), object size in pixels, rotation in degrees."""

    centres: tuple[tuple[float, float], ...]
    size: float
    rotation: float


def all_identities() -> list[Identity]:
    return [Identity(s, c, p) for s, c, p in product(SHAPES, COLOURS, PATTERNS)]


def split_identities(held_out: int = 12) -> tuple[list[Identity], list[Identity]]:
    """(training, held-out) identities; every attribute value stays in training at least twice."""
    identities = all_identities()
    rng = np.random.default_rng(HELD_OUT_SEED)
    while True:
        chosen = set(rng.choice(len(identities), held_out, replace=False).tolist())
        train = [x for i, x in enumerate(identities) if i not in chosen]
        if all(sum(getattr(x, field) == value for x in train) >= 2
               for field, values in (("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS)) for value in values):
            return train, [x for i, x in enumerate(identities) if i in chosen]


def shapes_in_turn(items: list, shape_of=lambda item: item.shape) -> list:
    """``items`` reordered so that shapes take turns (first of each shape, then second, ...), order kept within a shape."""
    by_shape: dict[str, list] = {}
    for item in items:
        by_shape.setdefault(shape_of(item), []).append(item)
    return [item for group in zip_longest(*by_shape.values()) for item in group if item is not None]


def all_contexts() -> list[Context]:
    return [Context(b, n) for b, n in product(BACKGROUNDS, COUNTS)]


def general_caption(identity: Identity, context: Context) -> str:
    shape = identity.shape if context.count == "one" else PLURAL[identity.shape]
    return f"{context.count} {identity.colour} {identity.pattern} {shape} on a {context.background} background"


def context_caption(context: Context, noun: str = "object") -> str:
    nouns = noun if context.count == "one" else noun + "s"
    return f"{context.count} {nouns} on a {context.background} background"


def vocabulary() -> list[str]:
    words = {"one", "two", "on", "a", "background", "object", "objects", RARE_TOKEN}
    words |= set(SHAPES) | set(PLURAL.values()) | set(COLOURS) | set(PATTERNS) | set(BACKGROUNDS)
    return sorted(words)


def random_pose(rng: np.random.Generator, count: str) -> Pose:
    rotation = float(rng.uniform(0, 360))
    if count == "one":
        size = float(rng.uniform(26, 36))
        margin = size / 2 + 2
        centres = ((float(rng.uniform(margin, SIZE - margin)), float(rng.uniform(margin, SIZE - margin))),)
    else:
        size = float(rng.uniform(18, 24))
        margin = size / 2 + 1
        # left copy entirely in the left half, right copy in the right half: they never overlap
        left = (float(rng.uniform(margin, SIZE / 2 - size / 2)), float(rng.uniform(margin, SIZE - margin)))
        right = (float(rng.uniform(SIZE / 2 + size / 2, SIZE - margin)), float(rng.uniform(margin, SIZE - margin)))
        centres = (left, right)
    return Pose(centres, size, rotation)


def _shape_polygon(shape: str, cx: float, cy: float, size: float, rotation: float) -> list[tuple[float, float]]:
    r = size / 2
    if shape == "square":
        points = [(-r * 0.85, -r * 0.85), (r * 0.85, -r * 0.85), (r * 0.85, r * 0.85), (-r * 0.85, r * 0.85)]
    elif shape == "triangle":
        points = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in (-90, 30, 150)]
    elif shape == "cross":
        a, b = r, r * 0.36
        points = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    else:
        raise ValueError(shape)
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _pattern_layer(pattern: str, cx: float, cy: float, size: float, rotation: float, scale: int) -> Image.Image:
    """A mask (L) of the pattern marks around one object, in supersampled pixels."""
    layer = Image.new("L", (SIZE * scale, SIZE * scale), 0)
    if pattern == "plain":
        return layer
    draw = ImageDraw.Draw(layer)
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    span = size * 0.8
    if pattern == "striped":
        step, width = max(size / 4.0, 5.0), max(size / 8.0, 2.5)
        offset = -span
        while offset <= span:
            corners = [(offset - width / 2, -span), (offset + width / 2, -span), (offset + width / 2, span), (offset - width / 2, span)]
            draw.polygon([((cx + x * cos - y * sin) * scale, (cy + x * sin + y * cos) * scale) for x, y in corners], fill=255)
            offset += step
    else:  # dotted
        step, radius = max(size / 3.6, 5.5), max(size / 11.0, 1.8)
        for i in range(-3, 4):
            for j in range(-3, 4):
                x, y = i * step, j * step
                px, py = (cx + x * cos - y * sin) * scale, (cy + x * sin + y * cos) * scale
                draw.ellipse([px - radius * scale, py - radius * scale, px + radius * scale, py + radius * scale], fill=255)
    return layer


def render(identity: Identity, context: Context, pose: Pose) -> tuple[Image.Image, Image.Image]:
    """(RGB image, L mask of the object(s)) at SIZE×SIZE."""
    scale = SUPERSAMPLE
    big = SIZE * scale
    body = COLOURS[identity.colour]
    mark = tuple(int(v * 0.4) for v in body)  # a darker shade: visible, and never a background colour
    image = Image.new("RGB", (big, big), BACKGROUNDS[context.background])
    mask = Image.new("L", (big, big), 0)
    for cx, cy in pose.centres:
        silhouette = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(silhouette)
        if identity.shape == "circle":
            r = pose.size / 2 * scale
            draw.ellipse([cx * scale - r, cy * scale - r, cx * scale + r, cy * scale + r], fill=255)
        else:
            polygon = _shape_polygon(identity.shape, cx, cy, pose.size, pose.rotation)
            draw.polygon([(x * scale, y * scale) for x, y in polygon], fill=255)
        image.paste(body, (0, 0), silhouette)
        marks = Image.fromarray(np.minimum(np.asarray(_pattern_layer(identity.pattern, cx, cy, pose.size, pose.rotation, scale)),
                                           np.asarray(silhouette)))
        image.paste(mark, (0, 0), marks)
        mask = Image.fromarray(np.maximum(np.asarray(mask), np.asarray(silhouette)))
    return (image.resize((SIZE, SIZE), Image.Resampling.LANCZOS),
            mask.resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def sample_scene(rng: np.random.Generator, identities: list[Identity]) -> tuple[Identity, Context, Pose]:
    identity = identities[int(rng.integers(len(identities)))]
    context = Context(list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))], COUNTS[int(rng.integers(2))])
    return identity, context, random_pose(rng, context.count)


def position_bin(pose: Pose) -> int:
    """3×3 grid cell of the (first) object's centre: what 'pose copying' compares."""
    x, y = pose.centres[0]
    return min(2, int(y / (SIZE / 3))) * 3 + min(2, int(x / (SIZE / 3)))


def rotation_bin(shape: str, rotation: float) -> int:
    """Rotation modulo the shape's symmetry, in 4 bins (circles: stripes and dots still turn)."""
    period = {"circle": 90.0, "square": 90.0, "cross": 90.0, "triangle": 120.0}[shape]
    return int((rotation % period) / (period / 4)) % 4
