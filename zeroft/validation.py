"""Allowed ranges of generation settings, checked in one place for the library, CLI and app.

Besides the fixed ranges (guidance, steps, images, prompt length), the work one request may
ask for is bounded: :func:`size_limits` bounds the output size by the backbone's native size
and the device, and :func:`check_time_budget` refuses a request whose estimated time
(:func:`estimate_seconds`) exceeds a budget, naming what to lower. ``ZeroFTPipeline`` enforces
both (``time_budget=``); the CLI checks the size before loading a model.

Example:
    >>> size_limits(64, "cpu")
    (32, 96)
    >>> round(estimate_seconds(steps=20, num_images=2, height=96, width=96, native_size=64,
    ...                        unit_seconds=0.01, branches=3), 2)
    2.7
"""

from __future__ import annotations

import math
from numbers import Real

from .errors import InputError

GUIDANCE_RANGE = (0.0, 30.0)
STEPS_RANGE = (1, 150)
NUM_IMAGES_RANGE = (1, 8)
SIZE_RANGE = (32, 2048)
MAX_PROMPT_CHARS = 1000


def check_guidance(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name} must be a number, not {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value}.")
    low, high = GUIDANCE_RANGE
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low:g} and {high:g}, not {value:g}.")
    return value


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)) or float(value) != int(value):
        raise InputError(f"{name} must be a whole number, not {value!r}.")
    value = int(value)
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, not {value}.")
    return value


def check_steps(value) -> int:
    return _check_int("steps", value, *STEPS_RANGE)


def check_num_images(value) -> int:
    return _check_int("number of images", value, *NUM_IMAGES_RANGE)


def check_size(name: str, value) -> int:
    value = _check_int(name, value, *SIZE_RANGE)
    if value % 8:
        raise InputError(f"{name} must be a multiple of 8, not {value}.")
    return value


def check_prompt(name: str, value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"The {name} must be text, not {type(value).__name__}.")
    if len(value) > MAX_PROMPT_CHARS:
        raise InputError(f"The {name} is {len(value)} characters long; at most {MAX_PROMPT_CHARS} are allowed.")
    if "\x00" in value:
        raise InputError(f"The {name} contains a NUL character.")
    return value


def check_seed(value) -> int | None:
    if value is None:
        return None
    return _check_int("seed", value, 0, 2**63 - 1)


# ---------------------------------------------------------------- work per request
#
# Output sides a backbone handles, as multiples of its native size (the size it was trained at:
# 512 px for SD1.5, 64 px for the toy model). Far above it a UNet repeats the object and the work
# grows with the pixels (the toy model at 1024 px took 248 s of a CPU); far below it the latents
# are a few pixels wide and the images are noise.
MIN_SIZE_FACTOR = 0.25
# A CPU gets a tighter bound than a GPU: at 2x native one CPU request takes minutes at SD scale.
MAX_SIZE_FACTOR = {"cpu": 1.5, "gpu": 2.0}


def native_size(unet_sample_size: int, vae_scale_factor: int, defaults=None) -> int:
    """The output side a backbone was made for, in pixels: what :func:`size_limits` scales with.

    The larger of the UNet's ``sample_size`` in pixels (diffusers' default output size) and the
    checkpoint's default size (``GenerationDefaults``: what it was trained and tuned at; the tiny
    test UNet says 32 px, its checkpoint 64).

    Args:
        unet_sample_size: ``unet.config.sample_size``, in latent pixels.
        vae_scale_factor: pixels per latent pixel (``pipe.vae_scale_factor``).
        defaults: the checkpoint's ``GenerationDefaults`` (anything with ``height`` and ``width``), or None.
    """
    native = unet_sample_size * vae_scale_factor
    return native if defaults is None else max(native, defaults.height, defaults.width)


def _device_kind(device) -> str:
    """"cpu" or "gpu" for a torch.device or a name such as "cuda:1"; MPS counts as a GPU."""
    name = getattr(device, "type", None) or str(device).partition(":")[0]
    return "cpu" if name == "cpu" else "gpu"


def _round8(value: float) -> int:
    return int(value) // 8 * 8


def size_limits(native_size: int, device="cpu") -> tuple[int, int]:
    """(smallest, largest) output side in pixels for a backbone of ``native_size`` on ``device``.

    Both are multiples of 8 inside :data:`SIZE_RANGE`: from a quarter of the native size up to
    1.5x it on a CPU and 2x it on a GPU (see :data:`MAX_SIZE_FACTOR`).

    Args:
        native_size: the side the backbone was trained at (``ZeroFTPipeline.native_size``).
        device: a ``torch.device`` or a device name ("cpu", "cuda", "cuda:1", "mps").

    Example:
        >>> size_limits(512, "cuda")
        (128, 1024)
        >>> size_limits(512, "cpu")
        (128, 768)
        >>> size_limits(64, "cpu")  # the toy model
        (32, 96)
    """
    if isinstance(native_size, bool) or not isinstance(native_size, int) or native_size <= 0:
        raise ValueError(f"native_size must be a positive whole number of pixels, not {native_size!r}")
    low = max(SIZE_RANGE[0], _round8(native_size * MIN_SIZE_FACTOR))
    high = min(SIZE_RANGE[1], max(low, _round8(native_size * MAX_SIZE_FACTOR[_device_kind(device)])))
    return low, high


def check_size_for(name: str, value, native_size: int, device="cpu") -> int:
    """:func:`check_size`, then the bound of :func:`size_limits` for this backbone and device.

    Raises:
        InputError: naming the allowed range and why it is that range.
    """
    value = check_size(name, value)
    low, high = size_limits(native_size, device)
    if not low <= value <= high:
        where = "a CPU" if _device_kind(device) == "cpu" else "a GPU"
        raise InputError(
            f"{name} must be between {low} and {high} pixels for this model on {where} "
            f"(it was trained at {native_size} px), not {value}."
        )
    return value


def estimate_seconds(*, steps: int, num_images: int, height: int, width: int, native_size: int,
                     unit_seconds: float, branches: int = 3) -> float:
    """Seconds a request should take: steps x images x guidance branches x pixels relative to native.

    ``unit_seconds`` is the cost of one unit of work on this device: one UNet evaluation of one
    image at the native size (``ZeroFTPipeline.measure_unit_seconds`` measures it). The UNet's
    cost grows with the latent's pixels; decoding and encoding are left out (one call each).

    Args:
        steps: UNet calls of the denoising loop (a PNDM scheduler makes one more than its steps).
        num_images: images generated in the request (all prompts together).
        height, width: output size in pixels.
        native_size: the backbone's native side in pixels.
        unit_seconds: measured or assumed seconds of one unit.
        branches: guidance branches per step, 1..3 (``zeroft.pipeline.needed_branches``); 3 is the worst case.
    """
    units = steps * num_images * branches * (height * width) / float(native_size * native_size)
    return units * unit_seconds


def check_time_budget(budget_seconds: float, *, steps: int, num_images: int, height: int, width: int,
                      native_size: int, unit_seconds: float, branches: int = 3) -> float:
    """Refuse a request whose :func:`estimate_seconds` exceeds ``budget_seconds``; return the estimate.

    The message names what to lower and by how much: the steps, the number of images or the size.

    Raises:
        InputError: the estimate is over the budget.

    Example:
        >>> check_time_budget(60, steps=20, num_images=1, height=512, width=512, native_size=512,
        ...                   unit_seconds=0.5, branches=3)
        30.0
        >>> check_time_budget(60, steps=20, num_images=4, height=512, width=512, native_size=512,
        ...                   unit_seconds=0.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        zeroft.errors.InputError: This request would take about 120 s ... Lower the steps (at most 10 fit), ...
    """
    if not budget_seconds > 0:
        raise InputError(f"The time budget must be a positive number of seconds, not {budget_seconds!r}.")
    seconds = estimate_seconds(steps=steps, num_images=num_images, height=height, width=width,
                               native_size=native_size, unit_seconds=unit_seconds, branches=branches)
    if seconds <= budget_seconds:
        return seconds
    fits = budget_seconds / seconds  # the fraction of this request that fits the budget
    remedies = []
    if int(steps * fits) >= 1:
        remedies.append(f"the steps (at most {int(steps * fits)} fit)")
    if int(num_images * fits) >= 1:
        remedies.append(f"the number of images (at most {int(num_images * fits)} fit)")
    scale = math.sqrt(fits)
    if _round8(height * scale) >= SIZE_RANGE[0] and _round8(width * scale) >= SIZE_RANGE[0]:
        remedies.append(f"the size (about {_round8(width * scale)}x{_round8(height * scale)} fits)")
    if remedies:
        advice = "Lower " + (", ".join(remedies[:-1]) + " or " + remedies[-1] if len(remedies) > 1 else remedies[0])
    else:
        advice = "Lower the steps, the number of images and the size together, or allow more time"
    raise InputError(
        f"This request would take about {seconds:.0f} s ({steps} step(s), {num_images} image(s) of "
        f"{width}x{height}), over the {budget_seconds:g} s limit. {advice}."
    )
