"""The toy world's training recipe: steps and batch sizes per stage (``Budget``), and the zeroft stage's trainer call.

``build`` trains every stage under one ``Budget``; ``ablations`` retrains the zeroft stage under
the paper's recipe with one setting changed. Both take the trainer's settings from ``zeroft_arguments``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Budget:
    """Steps per stage, sized to train on a 2-core CPU in hours, not days (build.json records the times)."""

    vae: int = 5000  # batch 16 (2000 steps left patterns blurred)
    encoder: int = 2500  # batch = the 60 training identities
    judge: int = 2000  # batch 64 (1200 steps read patterns at 0.90 on clean renderings)
    base: int = 5000  # batch base_batch
    zeroft: int = 26000  # batch zeroft_batch. With true-to-outline masks, 26,000 steps beat 14,000 on TRAINING
    # identities (0.840 vs 0.774 identity, 288 pairs); with the old masker they had not (toyworld/results/toyworld-26000)
    general_images: int = 20000
    domain_per_identity: int = 40
    checkpoint_every: int = 500  # also the points of the accuracy-vs-steps curve
    guidance_pairs_per_identity: int = 3  # per identity in train_ids[::5], × 8 contexts: 288 pairs for views and guidance
    # (1 gave 96 pairs, which could not tell w_text 7.5 from 5.0 apart: 0.771 vs 0.760)
    sampler_steps: int = 20
    base_batch: int = 32
    base_lr: float = 2e-4
    zeroft_batch: int = 32
    zeroft_lr: float = 1e-4
    unet: str = "v1"  # models.UNETS


# One GPU: these tiny models are launch-bound there, so a step costs about the same at batch 32 as at 256. The GPU
# budget takes bigger batches and fewer steps (about the CPU budget's samples; learning rates raised by about the
# square root of the batch ratio) and checkpoints more often. (Measured step times and the one GPU run on this
# budget: docs/toyworld-notes-from-code.md.)
GPU = Budget(base=2000, base_batch=128, base_lr=4e-4, zeroft=3500, zeroft_batch=256, zeroft_lr=2e-4,
             checkpoint_every=250)
BUDGETS = {"cpu": Budget(), "gpu": GPU}

QUICK = Budget(vae=3, encoder=3, judge=3, base=3, zeroft=2, general_images=64, domain_per_identity=2,
               checkpoint_every=1, guidance_pairs_per_identity=1, sampler_steps=2)


def zeroft_arguments(work: Path, budget: Budget, seed: int, validation: list[str], output: Path,
                     extra: list[str] = (), resume: str = "latest", device: str = "cpu", workers: int = 0,
                     init: Path | None = None) -> list[str]:
    """train.train arguments of the paper's recipe on the toy world (ablations append overrides); ``init``: the
    zeroft checkpoint training starts from (a grown model, see grow.py) instead of the base plus fresh adapter."""
    return [
        "--base_model", str(work / "base" / "base"), "--encoder", str(work / "encoder" / "encoder"),
        "--domain_data", str(work / "streams" / "domain"), "--general_data", str(work / "streams" / "general"),
        "--resolution", "64", "--train_batch_size", str(budget.zeroft_batch), "--max_train_steps", str(budget.zeroft),
        "--learning_rate", str(budget.zeroft_lr), "--lr_warmup_steps", str(min(200, budget.zeroft // 10)),
        "--mix_ratio", "0.3", "--cross_reference", "0.5", "--train", "whole", "--use_ema", "--ema_decay", "0.999",
        "--masker", "border", "--background_fill", "gray", "--seed", str(seed),
        "--checkpointing_steps", str(budget.checkpoint_every), "--checkpoints_total_limit", "1000",
        "--resume", resume, "--output_dir", str(output), "--export_dir", str(output / "final"),
        "--validation_images", *validation,
        "--validation_prompts", "one object on a white background", "two objects on a gray background",
        "one object on a brown background", "two objects on a black background",
        "--validation_steps", str(max(budget.checkpoint_every * 2, 1)),
        "--validation_inference_steps", str(budget.sampler_steps),
        "--validation_text_guidance", "5.0", "--validation_object_guidance", "3.0",
        "--dataloader_num_workers", str(workers), *(["--cpu"] if device == "cpu" else []),
        *(["--init_checkpoint", str(init)] if init is not None else []), *extra,
    ]
