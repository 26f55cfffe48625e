"""Guidance with separate text and object weights, and the batching of its UNet branches.

    ε̂ = ε(∅,ϕ) + w_text·[ε(c,ϕ) − ε(∅,ϕ)] + w_obj·[ε(c,o) − ε(c,ϕ)]

where c is the prompt, ∅ the negative prompt, o the object embedding and ϕ the null object
embedding (all zeros, what training drops to). This generalises the paper's classifier-free
guidance ε̂ = w·ε(x,c) + (1−w)·ε(x,∅) (Jia et al., 2023, sec. 3.2, with c = (text, object)) to
one weight per condition, after Brooks et al. (2023, InstructPix2Pix, eq. 3). Pure functions:
both pipeline families (zeroft.pipeline, zeroft.pipeline_xl) evaluate the branches in one
batched UNet call built by :func:`batch_branches`.
"""

from __future__ import annotations

import torch

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
        object_embeds, null_embeds: o and ϕ, (N, D).
        size_conditions: conditions every branch shares, (N, ...) each (SDXL's ``time_ids``).

    Returns:
        (encoder_hidden_states (k·N, T, C), added_cond_kwargs with ``image_embeds`` [(k·N, 1, D)]).
    """
    conditions = {"uncond": (negative, null_embeds), "text": (positive, null_embeds), "object": (positive, object_embeds)}
    text = {key: torch.cat([conditions[b][0][key] for b in branches]) for key in positive}  # (k·N, ...) each
    hidden = text.pop(TEXT_STATES)
    added = dict(text)
    for key, value in (size_conditions or {}).items():
        added[key] = torch.cat([value] * len(branches))
    objects = torch.cat([conditions[b][1] for b in branches])  # (k·N, D)
    added["image_embeds"] = [objects[:, None, :].to(hidden.dtype)]  # (k·N, 1, D)
    return hidden, added
