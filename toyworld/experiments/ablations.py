"""``python -m toyworld ablations``: the paper's ablations, retrained on the toy world at one budget.

Every variant starts from the same pretrained parts as the embedded checkpoint (VAE, encoder,
base model, streams from ``build``) and trains for the same number of steps; the full recipe
is retrained at that budget too, so every row of the comparison had the same compute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from train.train import run as train_run

from ..budget import Budget, train_config, with_overrides

VARIANTS = {  # overrides of the recipe (budget.with_overrides): setting → value
    "recipe": {},  # r = 0.3, ω = 0.5, ϕ for general images, whole network
    "no_cross_reference": {"cross_reference": 0.0},
    "no_embedding_dropping": {"drop_general_object": False},
    "r=0": {"mix_ratio": 0.0},
    "r=1": {"mix_ratio": 1.0},
    "adapter_only": {"train": "adapter"},
}


def run_ablations(work: Path, steps: int, seed: int = 0, only: list[str] | None = None,
                  variants: dict[str, dict] = VARIANTS, folder: str = "ablations") -> dict:
    """Train every variant of ``variants`` (or those in ``only``) not yet trained in ``work``/``folder``, and record
    each in ablations.json there with its overrides, steps, checkpoint and training speed; returns the whole record."""
    budget = Budget(zeroft=steps, checkpoint_every=max(steps // 4, 1))
    examples = sorted((Path("assets") / "examples").glob("object-*.png"))[:2]
    path = work / folder / "ablations.json"
    # Rows of earlier runs stay (``--only`` adds or replaces its variants, it does not drop the others).
    report = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, overrides in variants.items():
        if only and name not in only:
            continue
        output = work / folder / name
        final = output / "final" / "zeroft_config.json"
        started = time.perf_counter()
        if not final.is_file():
            train_run(with_overrides(train_config(work, budget, seed, [str(p) for p in examples], output), overrides))
        training = json.loads(final.read_text())["training"]
        report[name] = {"overrides": overrides, "steps": steps, "checkpoint": str(output / "final"),
                        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
                        "samples_per_second": training["samples_per_second"],
                        "train_seconds": round(steps * training["batch_size"] / training["samples_per_second"], 1)}
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report
