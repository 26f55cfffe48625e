"""Guidance with separate text and object weights, and the batching of its UNet branches.

    ε̂ = ε(∅,ϕ) + w_text·[ε(c,ϕ) − ε(∅,ϕ)] + w_obj·[ε(c,o) − ε(c,ϕ)]

where c is the prompt, ∅ the negative prompt, o the object embedding and ϕ the null object
embedding (all zeros, what training drops to). This generalises the paper's classifier-free
guidance ε̂ = w·ε(x,c) + (1−w)·ε(x,∅) (Jia et al., 2023, sec. 3.2, with c = (text, object)) to
one weight per condition, after Brooks et al. (2023, InstructPix2Pix, eq. 3). Pure functions:
both pipeline families (zeroft.pipeline, zeroft.pipeline_xl) evaluate the branches in one
batched UNet call built by :func:`batch_branches`.

Guidance on an interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval
Improves Sample and Distribution Quality"): with ``guidance_interval=(σ_lo, σ_hi)``, ε̂ as above
only at steps whose noise level σ lies in (σ_lo, σ_hi]; at the others one conditional branch,
ε̂ = ε(c,o), is evaluated (:func:`step_branches`). σ is the scheduler's own noise level,
σ = √((1 − ᾱ_t) / ᾱ_t) (:func:`noise_levels`), so an interval means the same for any scheduler
and step count. The paper's SD-XL interval is (0.28, 5.42].
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from .errors import InputError

PAPER_SDXL_INTERVAL = (0.28, 5.42)  # Kynkäänniemi et al. 2024, sec. 5, for SD-XL

TEXT_STATES = "encoder_hidden_states"  # the key of the text tokens in a condition dict


def combine_guidance(
    eps: dict[str, torch.Tensor], text_guidance: float, object_guidance: float
) -> torch.Tensor:
    """ε̂ = ε(∅,ϕ) + w_text·[ε(c,ϕ) − ε(∅,ϕ)] + w_obj·[ε(c,o) − ε(c,ϕ)].

    ``eps`` holds the branches that were evaluated, keyed "uncond" (∅,ϕ), "text" (c,ϕ) and
    "object" (c,o); see :func:`needed_branches`. A branch whose term has weight zero is not
    evaluated and stands in for by its neighbour, which keeps the arithmetic bit-identical to
    diffusers' two-branch guidance in the cases that reduce to it.
    """
    uncond, text, obj = eps.get("uncond"), eps.get("text"), eps.get("object")
    if text is None:
        text = uncond if uncond is not None else obj
    if uncond is None:
        uncond = text
    if obj is None:
        obj = text
    return uncond + text_guidance * (text - uncond) + object_guidance * (obj - text)


def needed_branches(text_guidance: float, object_guidance: float) -> list[str]:
    """The UNet branches whose coefficient in ε̂ is not zero.

    Coefficients: (∅,ϕ) → 1 − w_text; (c,ϕ) → w_text − w_obj; (c,o) → w_obj. With equal
    weights this is ordinary two-branch guidance, as fast as diffusers' own.
    """
    branches = []
    if text_guidance != 1.0:
        branches.append("uncond")
    if text_guidance != object_guidance:
        branches.append("text")
    if object_guidance != 0.0:
        branches.append("object")
    return branches  # never empty: w_text = 1 and w_obj = w_text leave the (c,o) branch


def batch_branches(
    branches: list[str],
    positive: dict[str, torch.Tensor],
    negative: dict[str, torch.Tensor],
    object_embeds: torch.Tensor,
    null_embeds: torch.Tensor,
    size_conditions: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict]:
    """The UNet's text tokens and ``added_cond_kwargs`` for ``branches``, stacked in that order.

    Args:
        branches: from :func:`needed_branches`.
        positive, negative: the prompt's and the negative prompt's conditions, each a dict of
            (N, ...) tensors: ``encoder_hidden_states`` (N, T, C), and for SDXL ``text_embeds``
            (N, P), the pooled text embedding, which goes with its branch's text.
        object_embeds, null_embeds: o and ϕ, (N, D), or (N, T, W) patch tokens for IP-Adapter Plus.
        size_conditions: conditions every branch shares, (N, ...) each (SDXL's ``time_ids``).

    Returns:
        (encoder_hidden_states (k·N, T, C), added_cond_kwargs with ``image_embeds`` [(k·N, 1, ...)]).
    """
    conditions = {"uncond": (negative, null_embeds), "text": (positive, null_embeds), "object": (positive, object_embeds)}
    text = {key: torch.cat([conditions[b][0][key] for b in branches]) for key in positive}  # (k·N, ...) each
    hidden = text.pop(TEXT_STATES)
    added = dict(text)
    for key, value in (size_conditions or {}).items():
        added[key] = torch.cat([value] * len(branches))
    objects = torch.cat([conditions[b][1] for b in branches])  # (k·N, D) or (k·N, T, W)
    added["image_embeds"] = [objects.unsqueeze(1).to(hidden.dtype)]  # (k·N, 1, ...): one image per prompt
    return hidden, added


def check_interval(interval) -> tuple[float, float] | None:
    """``interval`` as (σ_lo, σ_hi) floats with 0 ≤ σ_lo < σ_hi < ∞, or None (guidance at every step) for
    ``interval`` None, False or "off" (what turns off a checkpoint's default interval).

    Raises:
        InputError: not two numbers, NaN or infinite, negative, or σ_lo ≥ σ_hi.
    """
    if interval is None or interval is False or (isinstance(interval, str) and interval.strip().lower() == "off"):
        return None
    try:
        low, high = interval
    except (TypeError, ValueError):
        raise InputError(f"The guidance interval must be two noise levels (low, high), not {interval!r}.") from None
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
            raise InputError(f"The guidance interval's {name} end must be a finite number, not {value!r}.")
    low, high = float(low), float(high)
    if low < 0:
        raise InputError(f"The guidance interval's low end must be 0 or more, not {low:g}.")
    if low >= high:
        raise InputError(f"The guidance interval's low end ({low:g}) must be below its high end ({high:g}).")
    return low, high


def noise_levels(scheduler, timesteps: torch.Tensor) -> list[float]:
    """σ = √((1 − ᾱ_t) / ᾱ_t) at each of ``timesteps``, from the scheduler's ``alphas_cumprod``
    (interpolated linearly for fractional timesteps, as Karras schedules make them).

    A flow-matching scheduler (FLUX.1's FlowMatchEulerDiscreteScheduler: x_t = (1 − s)·x + s·ε, t = 1000·s) has no
    ᾱ: its s is turned into the same noise-to-signal ratio, σ = s / (1 − s) (infinite at s = 1, the first step,
    which no finite interval holds).

    Raises:
        InputError: a scheduler with neither ``alphas_cumprod`` nor flow-matching sigmas.
    """
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None and hasattr(scheduler, "sigmas") and "shift" in getattr(scheduler, "config", {}):
        flow = (timesteps.double().cpu() / scheduler.config.num_train_timesteps).clamp(0, 1)
        return [s / (1 - s) if s < 1 else math.inf for s in flow.tolist()]
    if alphas is None:
        raise InputError(f"Guidance on an interval needs a DDPM-family or flow-matching scheduler; "
                         f"{type(scheduler).__name__} has neither.")
    alphas = alphas.double().cpu()
    t = timesteps.double().cpu().clamp(0, len(alphas) - 1)
    below = t.floor().long()
    above = (below + 1).clamp(max=len(alphas) - 1)
    weight = t - below
    alpha = alphas[below] * (1 - weight) + alphas[above] * weight
    return ((1 - alpha) / alpha).sqrt().tolist()


def branches_per_step(scheduler, timesteps: torch.Tensor, branches: list[str],
                      interval: tuple[float, float] | None) -> list[list[str]]:
    """:func:`step_branches` at each of ``timesteps`` (the scheduler's σ is read only when there is an interval)."""
    if interval is None:
        return [branches] * len(timesteps)
    return [step_branches(branches, sigma, interval) for sigma in noise_levels(scheduler, timesteps)]


def guided_share(scheduler, steps: int, text_guidance: float, object_guidance: float,
                 interval: tuple[float, float] | None) -> float:
    """f: the share of the sampler's steps (``scheduler.set_timesteps(steps)``) at which every guidance branch runs;
    guidance then costs (1 + 2f)/2 of two-branch guidance where three branches are needed."""
    scheduler.set_timesteps(steps)
    branches = needed_branches(text_guidance, object_guidance)
    per_step = branches_per_step(scheduler, scheduler.timesteps, branches, interval)
    return sum(running == branches for running in per_step) / len(per_step)


def step_branches(branches: list[str], sigma: float, interval: tuple[float, float] | None) -> list[str]:
    """The branches to evaluate at a step of noise level ``sigma``: all of ``branches`` inside
    ``interval`` (σ_lo < σ ≤ σ_hi) or with no interval; outside it the one conditional branch, (c,o)
    where it is among ``branches``, else (c,ϕ) (no object given), for which :func:`combine_guidance`
    returns that branch itself."""
    if interval is None or interval[0] < sigma <= interval[1]:
        return branches
    return ["object"] if "object" in branches else ["text"] if "text" in branches else branches[-1:]
