"""``python -m toyworld tokens``: pooled object tokens against patch tokens (IP-Adapter Plus), the paper's recipe.

Two variants of the zeroft stage train from the base of the recipes table (``toyworld.experiments.recipes``: the
shipped VAE and object encoder, ``--base-steps`` of build stage 4), for the same steps, batch and seed:

- ``paper_recipe``: the recipe as shipped, the encoder's pooled 64-d embedding projected to 4 tokens (the recipes
  table's row 2, trained again so that both rows come from this run);
- ``paper_recipe_plus``: the same recipe with the encoder's patch tokens (for the toy's ResNet tower, the 4 x 4 grid
  of its next-to-last stage and its mean: zeroft.encoder.ObjectEncoder.tokens) through diffusers'
  IPAdapterPlusImageProjection to 16 tokens (``PLUS``).

``toyworld.experiments.conflicts`` scores both on the main evaluation's held-out pairs, masked and unmasked, with
each variant's own ceiling, exactly as it scores the recipes table.
"""

from __future__ import annotations

from pathlib import Path

from .conflicts import evaluate_recipes
from .recipes import train_recipes

FOLDER = "tokens"
# The Plus variant's resampler: 16 queries (every public Plus file), 2 heads of 64 (diffusers' fixed head width)
# over the toy's 64-wide cross-attention.
PLUS = {"projection": "plus", "num_tokens": 16, "resampler_width": 128}
VARIANTS = {"paper_recipe": {}, "paper_recipe_plus": PLUS}


def run_tokens(work: Path, checkpoint: Path, judge: Path, out: Path, base_steps: int, steps: int,
               references: int = 3, seed: int = 0, train_only: bool = False) -> dict:
    """Train both variants (``work``/tokens; the base is shared with ``python -m toyworld recipes`` in the same
    ``work``) and, unless ``train_only``, score them into ``out``; returns the record."""
    report = train_recipes(work, checkpoint, judge.parent, base_steps, steps, seed, None, VARIANTS, FOLDER)
    if not train_only:
        report["evaluation"] = evaluate_recipes(work, judge, checkpoint, out, references, seed,
                                                variants=VARIANTS, folder=FOLDER)
    return report
