"""``python -m toyworld ablations``: the paper's ablations, retrained on the toy world at one budget.

Every variant starts from the same pretrained parts as the embedded checkpoint (VAE, encoder,
base model, streams from ``build``) and trains for the same number of steps; the full recipe
is retrained at that budget too, so every row of the comparison had the same compute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from train.train import main as train_main

from .recipe import Budget, zeroft_arguments

VARIANTS = {
    "recipe": [],  # r = 0.3, ω = 0.5, ϕ for general images, whole network
    "no_cross_reference": ["--cross_reference", "0"],
    "no_embedding_dropping": ["--no-drop_general_object"],
    "r=0": ["--mix_ratio", "0"],
    "r=1": ["--mix_ratio", "1"],
    "adapter_only": ["--train", "adapter"],
}


def run_ablations(work: Path, steps: int, seed: int = 0, only: list[str] | None = None) -> dict:
    budget = Budget(zeroft=steps, checkpoint_every=max(steps // 4, 1))
    examples = sorted((Path("assets") / "examples").glob("object-*.png"))[:2]
    path = work / "ablations" / "ablations.json"
    # Rows of earlier runs stay (``--only`` adds or replaces its variants, it does not drop the others).
    report = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, extra in VARIANTS.items():
        if only and name not in only:
            continue
        output = work / "ablations" / name
        final = output / "final" / "zeroft_config.json"
        started = time.perf_counter()
        if not final.is_file():
            train_main(zeroft_arguments(work, budget, seed, [str(p) for p in examples], output, extra))
        training = json.loads(final.read_text())["training"]
        report[name] = {"overrides": extra, "steps": steps, "checkpoint": str(output / "final"),
                        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
                        "samples_per_second": training["samples_per_second"],
                        "train_seconds": round(steps * training["batch_size"] / training["samples_per_second"], 1)}
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report
