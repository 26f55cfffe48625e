"""Validation grids: fixed reference photos × fixed prompts, rendered with fixed seeds.

Row i shows reference photo i, then one image per prompt. The same seeds at every validation
step make grids from different steps directly comparable.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from zeroft.generation import ZeroFTMixin
from zeroft.grid import make_grid


@torch.no_grad()
def render_validation(pipe: ZeroFTMixin, images: list, prompts: list[str], seed: int,
                      steps: int, text_guidance: float, object_guidance: float) -> Image.Image:
    """One row per reference photo: the photo, then one image per prompt (seed fixed per cell)."""
    pipe.set_progress_bar_config(disable=True)
    defaults = pipe.zeroft_config.defaults
    rows = []
    for row, photo in enumerate(images):
        reference = Image.open(photo) if isinstance(photo, (str, Path)) else photo
        cells = [reference]
        for column, prompt in enumerate(prompts):
            out = pipe(prompt, object_image=photo, num_inference_steps=steps, text_guidance=text_guidance,
                       object_guidance=object_guidance, seed=seed + 1000 * row + column,
                       height=defaults.height, width=defaults.width)
            cells.append(out.images[0])
        rows.append(cells)
    return make_grid(rows, max(defaults.height, 64))
