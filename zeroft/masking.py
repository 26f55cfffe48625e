"""Object masks: automatic foreground masks, user masks, and the paper's x ⊗ m.

Two automatic maskers, chosen by a spec string recorded in each checkpoint:

- ``"rembg:<model>"``: a salient-object network through rembg. The default, ``rembg:u2net``,
  is U²-Net (Apache-2.0, usable commercially). ``isnet-general-use`` (Apache-2.0) and
  ``birefnet-general`` (MIT) are sharper and larger. rembg's own default, ``bria-rmbg``, is
  non-commercial (CC BY-NC 4.0) and is deliberately not used here. Model files are
  downloaded by rembg on first use into ``$U2NET_HOME`` (default ``~/.u2net``).
- ``"border"``: no network at all. The background colour is the median of the image border
  and the object is what differs from it, with enclosed holes filled. Right for product shots
  on plain backgrounds and for zeroft's synthetic toy world; wrong for cluttered photos.

Which mask a photo gets is decided in one place, :func:`choose_mask`: the user's mask, else the
photo's own transparency, else the automatic masker; it returns the mask fitted to the photo and
checked, with where it came from. The pipeline, the CLI, the app, train.prepare and train.data
all call it. Automatic masks are kept in one cache for the process, :data:`mask_cache`, keyed by
the photo's content and the masker's spec, which the pipelines and the app share.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .cache import LRUCache, image_digest
from .errors import InputError, ModelUnavailableError
from .images import ImageInput, LoadedImage, load_mask

DEFAULT_MASKER = "rembg:u2net"  # the one default; presets, configs, the CLI, the app and train/ name it
# Below this fraction of the photo a mask is treated as empty: nothing to encode.
MIN_MASK_AREA = 1e-3
# Fill colours for the masked-out background, as 0..255 RGB.
BACKGROUND_FILLS = {"gray": (128, 128, 128), "white": (255, 255, 255), "black": (0, 0, 0)}


def fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a mask to a photo of ``size`` (width, height), clipped to [0, 1].

    Raises:
        InputError: the mask is not single-channel, or its aspect ratio differs from the photo's
            (a mask drawn on another photo; stretching it would silently mask the wrong pixels).
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise InputError(f"The mask must be a single-channel image, not shape {mask.shape}.")
    height, width = mask.shape
    if (width, height) != tuple(size):
        photo_ratio, mask_ratio = size[0] / size[1], width / height
        if abs(photo_ratio - mask_ratio) > 0.02 * photo_ratio:
            raise InputError(
                f"The mask is {width}x{height} but the photo is {size[0]}x{size[1]}: "
                "their shapes differ. Draw the mask on this photo."
            )
        mask = np.asarray(Image.fromarray(mask).resize(tuple(size), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(mask, 0.0, 1.0)


class EmptyMaskError(InputError):
    """A mask that marks nothing; ``source`` says where it came from ("given", "alpha", "automatic:<masker>"),
    so that a front end with other controls than the CLI's flags (the app's brush) can word its own advice."""

    def __init__(self, message: str, source: str | None):
        super().__init__(message)
        self.source = source


def _empty_mask_message(source: str | None) -> str:
    """What to tell a person whose mask marks nothing, by where the mask came from.

    Each message advises something other than what just failed; the command-line flags are
    named in parentheses, for the CLI's users (the app words its own, from EmptyMaskError.source).
    """
    if source == "given":
        return ("The given mask is empty: nothing in it marks the object in white. Paint over the object, "
                "or give no mask (leave out --mask) to use the photo's transparency or the automatic mask.")
    if source == "alpha":
        return ("The object mask is empty: the photo's transparency, used as its mask, hides the whole photo. "
                "Give a mask of the object (--mask), or use a copy of the photo without transparency "
                "to get the automatic mask.")
    if source is not None and source.startswith("automatic:"):
        spec = source.partition(":")[2]
        others = [s for s in ("border", DEFAULT_MASKER) if s != spec]
        return (f"The automatic mask is empty: the {spec} masker found no object in this photo. Paint a mask "
                "over the object (--mask on the command line), or try another masker "
                f"(--masker {' or '.join(others)}).")
    return "The object mask is empty: give a mask that marks the object in white."


def is_empty(mask: np.ndarray) -> bool:
    """Whether a mask marks too little of its photo to encode (under :data:`MIN_MASK_AREA` of it at 0.5)."""
    return float((np.asarray(mask) >= 0.5).mean()) < MIN_MASK_AREA


def prepare_mask(mask: np.ndarray, size: tuple[int, int], binary: bool = False,
                 source: str | None = None) -> np.ndarray:
    """Resize a mask to a photo and check that it marks something.

    Args:
        mask: (h, w) float array in [0, 1]; 1 marks the object.
        size: the photo's (width, height).
        binary: threshold at 0.5 instead of keeping soft edges.
        source: where the mask came from (:attr:`ChosenMask.source`: "given", "alpha" or
            "automatic:<masker>"), so that an empty mask's message says what to do instead.

    Returns:
        (height, width) float32 mask in [0, 1].

    Raises:
        EmptyMaskError: the mask is empty.
        InputError: its aspect ratio differs from the photo's.
    """
    mask = fit_mask(mask, size)
    if binary:
        mask = (mask >= 0.5).astype(np.float32)
    if is_empty(mask):
        raise EmptyMaskError(_empty_mask_message(source), source)
    return mask


@dataclass(frozen=True)
class ChosenMask:
    """A reference photo's mask and where it came from, as :func:`choose_mask` decided."""

    mask: np.ndarray  # (H, W) float32 in [0, 1] at the photo's size; empty only where choose_mask allowed it
    source: str  # "given" (the user's mask), "alpha" (the photo's transparency) or "automatic:<masker spec>"


# Automatic masks of the whole process, keyed by (photo digest, masker spec): every pipeline and the app
# share it, so a photo the app masked on upload is not masked again when it is generated from. Keys are
# content hashes (zeroft.cache); a mask at most 2048² float32 is 16 MiB, so 64 hold at most 1 GiB.
mask_cache = LRUCache(64)


def choose_mask(photo: LoadedImage, mask: ImageInput | np.ndarray | ChosenMask | None = None,
                masker: Masker | None = None, cache: LRUCache | None = None, *,
                allow_empty: bool = False) -> ChosenMask:
    """The mask of a reference photo by zeroft's one rule, fitted to the photo and checked, with its source.

    The rule: the user's mask, else the photo's alpha, else the automatic ``masker``. The source is
    what ``GenerationSettings.masks`` records and what an empty mask's message is worded by.

    Args:
        photo: the photo as :func:`zeroft.images.load_image` returns it.
        mask: the user's mask (path, bytes, PIL, array), or None. A :class:`ChosenMask` keeps its own
            source (the app's untouched automatic mask stays "automatic:...").
        masker: the automatic masker, used only when there is neither a user mask nor an alpha channel.
        cache: where automatic masks are kept, keyed by the photo's content and the masker's spec
            (:data:`mask_cache` for the process's own); None masks afresh.
        allow_empty: return an empty mask instead of refusing it (an editor that shows it to be
            painted on, train.prepare that flags it).

    Returns:
        :class:`ChosenMask` whose mask is (H, W) float32 in [0, 1] at the photo's size.

    Raises:
        EmptyMaskError: the mask marks nothing (unless ``allow_empty``); its ``source`` says which branch.
        InputError: a mask whose aspect ratio differs from the photo's.

    Example:
        >>> from PIL import Image
        >>> from zeroft.images import load_image
        >>> photo = Image.new("RGB", (64, 64), (0, 0, 255))
        >>> photo.paste((255, 0, 0), (16, 16, 48, 48))
        >>> choose_mask(load_image(photo), masker=Masker("border")).source
        'automatic:border'
        >>> cutout = photo.convert("RGBA")
        >>> cutout.putalpha(0)  # transparent, but for the object
        >>> cutout.paste((255, 0, 0, 255), (16, 16, 48, 48))
        >>> choose_mask(load_image(cutout), masker=Masker("border")).source
        'alpha'
    """
    if isinstance(mask, ChosenMask):
        raw, source = mask.mask, mask.source
    elif mask is not None:
        raw, source = load_mask(mask), "given"
    elif photo.alpha is not None:
        raw, source = photo.alpha, "alpha"
    elif masker is None:
        raise ValueError("the photo has no mask and no alpha channel, and no automatic masker was given")
    else:
        source = f"automatic:{masker.spec}"
        if cache is None:
            raw = masker(photo.rgb)
        else:
            raw = cache.get_or_create((image_digest(photo.rgb), masker.spec), lambda: masker(photo.rgb))
    if allow_empty:
        return ChosenMask(mask=fit_mask(raw, photo.rgb.size), source=source)
    return ChosenMask(mask=prepare_mask(raw, photo.rgb.size, source=source), source=source)


def apply_mask(image: Image.Image, mask: np.ndarray, fill: str) -> Image.Image:
    """The paper's x ⊗ m: keep the object, replace the background by a flat ``fill`` colour.

    Soft mask values blend, so anti-aliased edges stay smooth. ``fill="none"`` returns the
    photo unchanged (for encoders trained on unmasked photos).
    """
    if fill == "none":
        return image
    if fill not in BACKGROUND_FILLS:
        raise ValueError(f"background fill must be one of {sorted(BACKGROUND_FILLS) + ['none']}, not {fill!r}")
    pixels = np.asarray(image, dtype=np.float32)
    weight = mask[..., None]
    background = np.asarray(BACKGROUND_FILLS[fill], dtype=np.float32)
    return Image.fromarray((pixels * weight + background * (1.0 - weight)).round().astype(np.uint8))


def mask_bbox(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the object, widened by ``margin`` × its size, clipped to the photo."""
    rows = np.flatnonzero((mask >= 0.5).any(axis=1))
    cols = np.flatnonzero((mask >= 0.5).any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad_y, pad_x = round((bottom - top) * margin), round((right - left) * margin)
    height, width = mask.shape
    return max(0, left - pad_x), max(0, top - pad_y), min(width, right + pad_x), min(height, bottom + pad_y)


def border_mask(image: Image.Image, tolerance: float = 0.12, softness: float = 0.06) -> np.ndarray:
    """Foreground = pixels whose colour differs from the median border colour, holes filled.

    Only background-coloured regions that reach the photo's edge count as background: a region
    of near-background colour inside the object (dark stripes on a dark backdrop, a black patch
    on a black dog) is part of the object, also where it cuts the outline in gaps narrower than
    about 8% of the photo's short side. Without this, the toy world's dark stripes on a black or
    brown background were cut out of the mask (mask IoU as low as 0.47 against the true
    silhouette) and the encoder saw a different pattern and outline.

    Args:
        image: RGB photo.
        tolerance: colour distance (fraction of the RGB cube diagonal) still counted as background.
        softness: width of the soft ramp above ``tolerance``, for smooth edges.
    """
    from scipy import ndimage

    pixels = np.asarray(image, dtype=np.float32) / 255.0
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - background, axis=-1) / np.sqrt(3.0)
    mask = np.clip((distance - tolerance) / softness, 0.0, 1.0).astype(np.float32)
    solid = mask >= 0.5
    # Close gaps narrower than ~8% of the photo's short side (stripes that cut the outline), then
    # fill what the closed outline encloses. A square window keeps the closing linear in the
    # photo's size (a disk took 28 s at 2048 px); padding keeps objects at the edge from eroding.
    size = 2 * max(1, round(0.04 * min(solid.shape))) + 1
    padded = np.pad(solid.astype(np.uint8), size)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(padded, size=size), size=size)[size:-size, size:-size]
    filled = ndimage.binary_fill_holes(closed.astype(bool) | solid)
    mask[filled & ~solid] = 1.0
    return mask


class Masker:
    """Automatic object masks from a spec string (see the module docstring).

    Example:
        >>> from PIL import Image
        >>> photo = Image.new("RGB", (64, 64), (0, 0, 255))
        >>> photo.paste((255, 0, 0), (16, 16, 48, 48))
        >>> mask = Masker("border")(photo)
        >>> float(mask[32, 32]), float(mask[0, 0])
        (1.0, 0.0)
    """

    def __init__(self, spec: str = DEFAULT_MASKER):
        kind, _, model = spec.partition(":")
        if kind == "rembg" and model:
            self.kind, self.model = "rembg", model
        elif spec == "border":
            self.kind, self.model = "border", None
        else:
            # InputError (a ValueError): a spec comes from a person, on the command line or in a config
            raise InputError(f"unknown masker {spec!r}: use 'border' or 'rembg:<model>' (e.g. {DEFAULT_MASKER!r})")
        self.spec = spec
        self.calls = 0  # observable: the caches promise a repeated photo is never masked twice
        self._session = None
        self._lock = threading.Lock()

    def check_available(self) -> None:
        """Fail with a plain message when the rembg model is not on disk and downloads are off
        (HF_HUB_OFFLINE=1). Called when an automatic mask is first needed (a photo that carries its
        mask, or comes with one, needs no masker model), and by front ends that want to know early.

        Where to look is rembg's own rule (zeroft.fence.rembg_model_file).
        """
        from huggingface_hub import is_offline_mode

        from .fence import rembg_knows, rembg_model_file

        if self.kind != "rembg" or not is_offline_mode():
            return
        if not rembg_knows(self.model) or rembg_model_file(self.model) is not None:
            return  # an unknown model (or no rembg at all) is named by the first mask; a found one is fine
        home = os.environ.get("U2NET_HOME", os.path.expanduser("~/.u2net"))
        raise ModelUnavailableError(
            f"The rembg model {self.model!r} is not on this machine and downloads are off (HF_HUB_OFFLINE=1). "
            f"Place {self.model}.onnx in {home}, or draw the mask yourself, or use the 'border' masker."
        )

    def _rembg_session(self):
        with self._lock:
            if self._session is None:
                self.check_available()  # offline and not on disk: say so, rather than rembg's failed download
                try:
                    from rembg import new_session
                except ImportError as error:
                    raise RuntimeError("The rembg masker needs the rembg package: pip install rembg") from error
                try:
                    self._session = new_session(self.model)
                except Exception as error:
                    home = os.environ.get("U2NET_HOME", os.path.expanduser("~/.u2net"))
                    raise ModelUnavailableError(
                        f"Could not load the rembg model {self.model!r} ({type(error).__name__}: {error}). "
                        f"rembg downloads it on first use into {home}; without network access, place "
                        f"{self.model}.onnx there, or draw the mask yourself, or use the 'border' masker."
                    ) from error
            return self._session

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Return an (H, W) float32 soft mask in [0, 1] for an RGB photo."""
        self.calls += 1
        if self.kind == "border":
            return border_mask(image)
        from rembg import remove

        matte = remove(image, session=self._rembg_session(), only_mask=True)
        return np.asarray(matte.convert("L").resize(image.size), dtype=np.float32) / 255.0
