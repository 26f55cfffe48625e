"""Allowed ranges of generation settings, checked in one place for the library, CLI and app."""

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
