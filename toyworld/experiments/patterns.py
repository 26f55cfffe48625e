"""Can the toy world's generator draw each pattern at all? Judge's pattern confusion per source.

    python -m toyworld patterns [--checkpoint assets/zeroft-toy] [--work runs/toyworld]

Three ways of asking for the same object, on held-out and on training identities (one
reference per identity × the 8 contexts, fixed seeds), each image read by the evaluation's
judge:

- ``base, full caption``: the base text-to-image model (build stage 4) given the FULL caption
  ("two green dotted circles on a brown background"), no object photo;
- ``zeroft, full caption``: the zeroft UNet, the same caption, object guidance 0;
- ``zeroft, object photo``: the context-only prompt and the reference photo, at the
  checkpoint's default guidance (what ``python -m toyworld eval`` scores).

If the first two cannot draw a pattern from its name either, the pattern is lost in the
generator, not in the object encoder or the adapter. Prints JSON (confusion matrices, rows =
true pattern, columns = the judge's reading) and writes it to ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from bench.common import machine, report
from zeroft import ZeroFTPipeline
from zeroft.errors import InputError

from ..evaluate import EVALUATED_INTERVAL, generate, judge_images, load_judge, make_pairs
from ..world import PATTERNS, general_caption, split_identities


def confusion(judge, images, pairs) -> dict:
    """Pattern confusion matrix (rows: truth, columns: judged) and per-pattern accuracy."""
    judged = judge_images(judge, images)["pattern"]
    matrix = np.zeros((len(PATTERNS), len(PATTERNS)), dtype=int)
    for pair, reading in zip(pairs, judged):
        matrix[PATTERNS.index(pair.identity.pattern), reading] += 1
    totals = matrix.sum(1)
    return {
        "matrix": matrix.tolist(),
        "accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
        "per_pattern": {name: (float(matrix[i, i] / totals[i]) if totals[i] else None) for i, name in enumerate(PATTERNS)},
    }


@torch.no_grad()
def from_captions(pipe, pairs, guidance: float, steps: int, zeroft: bool, batch_size: int = 48) -> list:
    """One image per pair from its full caption (identity and context in words), seeded per pair."""
    images = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        captions = [general_caption(p.identity, p.context) for p in chunk]
        generators = [torch.Generator().manual_seed(p.seed) for p in chunk]
        if zeroft:
            out = pipe(captions, text_guidance=guidance, object_guidance=0.0, num_inference_steps=steps,
                       generator=generators, guidance_interval=EVALUATED_INTERVAL)
        else:
            out = pipe(captions, guidance_scale=guidance, num_inference_steps=steps, generator=generators,
                       height=64, width=64)
        images += out.images
    return images


def load_generators(checkpoint: str, work: str) -> tuple[ZeroFTPipeline, StableDiffusionPipeline]:
    """The zeroft checkpoint, and the build's base text-to-image model (build stage 4, not shipped)."""
    base_folder = Path(work) / "base" / "base"
    if not (base_folder / "model_index.json").is_file():
        raise InputError(f"No base model at {base_folder}: run `python -m toyworld build` first.")
    pipe = ZeroFTPipeline.from_pretrained(checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    base = StableDiffusionPipeline.from_pretrained(base_folder, safety_checker=None, requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    return pipe, base


def summary(results: dict) -> str:
    """One line per split and source: pattern accuracy, then per pattern."""
    lines = []
    for split, rows in results.items():
        for source, row in rows.items():
            if source != "pairs":
                per = ", ".join(f"{k} {v:.2f}" for k, v in row["per_pattern"].items() if v is not None)
                lines.append(f"{split:8s} {source:22s} pattern {row['accuracy']:.3f} ({per})")
    return "\n".join(lines)


def pattern_confusions(checkpoint: str, judge: str, work: str, out: str, steps: int | None = None,
                       seed: int = 0, identities: int | None = None) -> dict:
    """The three sources' pattern confusion on held-out and training identities; writes ``out``/patterns.json,
    prints, and returns it.

    Args:
        checkpoint: the zeroft checkpoint.
        judge: the judge's weights (judge.safetensors).
        work: the build folder holding the base model (``base/base``).
        out: folder for patterns.json.
        steps: sampler steps (default: the checkpoint's).
        identities: only the first N identities of each split (default: all).
    """
    pipe, base = load_generators(checkpoint, work)
    judge_model = load_judge(judge)
    defaults = pipe.zeroft_config.defaults
    steps = steps or defaults.steps
    train_ids, held_out = split_identities()
    results = {}
    for split, chosen in (("held-out", held_out), ("training", train_ids[::5])):
        pairs = make_pairs(chosen[:identities], 1, seed)
        results[split] = {
            "pairs": len(pairs),
            "base, full caption": confusion(judge_model, from_captions(base, pairs, defaults.text_guidance, steps, False),
                                            pairs),
            "zeroft, full caption": confusion(judge_model, from_captions(pipe, pairs, defaults.text_guidance, steps, True),
                                              pairs),
            "zeroft, object photo": confusion(
                judge_model, generate(pipe, pairs, defaults.text_guidance, defaults.object_guidance, steps), pairs),
        }
    result = {"benchmark": "toyworld_patterns", "checkpoint": str(checkpoint), "patterns": list(PATTERNS),
              "text_guidance": defaults.text_guidance, "object_guidance": defaults.object_guidance, "steps": steps,
              **machine(), "results": results}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patterns.json").write_text(json.dumps(result, indent=2) + "\n")
    return report(result, summary(results))
