"""The toy world's training budget: steps and batch sizes per stage (``Budget``), and the zeroft stage's trainer call.

``build`` trains every stage under one ``Budget``; the experiments (toyworld.experiments: ablations,
recipes, copying) retrain the zeroft stage under the paper's recipe with settings changed. All take the
trainer's settings from ``train_config`` (a train.config.TrainConfig for train.train.run), the experiments
with ``with_overrides`` applied.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from train.config import TrainConfig
from train.data import Regularization


@dataclass(frozen=True)
class Budget:
    """Steps per stage, sized to train on a 2-core CPU in hours, not days (build.json records the times)."""

    vae: int = 5000  # batch 16 (2000 steps left patterns blurred)
    encoder: int = 2500  # batch = the 60 training identities
    judge: int = 2000  # batch 64 (1200 steps read patterns at 0.90 on clean renderings)
    judge_eval_images: int = 512  # held-out renderings the judge's recorded accuracy is measured on
    guidance_grid: tuple[tuple[float, ...], tuple[float, ...]] = ((2.0, 3.0, 5.0, 7.5), (1.5, 3.0, 5.0))  # w_text, w_obj
    base: int = 5000  # batch base_batch
    zeroft: int = 26000  # batch zeroft_batch. With true-to-outline masks, 26,000 steps beat 14,000 on TRAINING
    # identities (0.840 vs 0.774 identity, 288 pairs); with the old masker they had not (toyworld/results/toyworld-26000)
    general_images: int = 20000
    domain_per_identity: int = 40
    checkpoint_every: int = 500  # also the points of the accuracy-vs-steps curve
    guidance_pairs_per_identity: int = 3  # per identity in train_ids[::sweep_identity_stride], × 8 contexts: 288 pairs for views and guidance
    sweep_identity_stride: int = 5  # the sweeps' identities: every 5th of the 60 training identities (12)
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
# budget: docs/performance.md, "Toy-world training steps", and docs/experiments/2026-11-27-gpu-lease-h200.md.)
GPU = Budget(base=2000, base_batch=128, base_lr=4e-4, zeroft=3500, zeroft_batch=256, zeroft_lr=2e-4,
             checkpoint_every=250)
BUDGETS = {"cpu": Budget(), "gpu": GPU}

QUICK = Budget(vae=3, encoder=3, judge=3, base=3, zeroft=2, general_images=64, domain_per_identity=2,
               checkpoint_every=1, guidance_pairs_per_identity=1, sampler_steps=2, judge_eval_images=32,
               guidance_grid=((3.0, 7.5), (3.0, 5.0)),
               sweep_identity_stride=30)  # 2 identities: 16 pairs per sweep row, enough to run every row


VALIDATION_PROMPTS = ("one object on a white background", "two objects on a gray background",
                      "one object on a brown background", "two objects on a black background")


def train_config(work: Path, budget: Budget, seed: int, validation: list[str], output: Path,
                  resume: str = "latest", device: str = "cpu", workers: int = 0,
                  init: Path | None = None) -> TrainConfig:
    """The paper's recipe on the toy world, for train.train.run: the build's base model, encoder and streams in
    ``work``, ``budget``'s zeroft steps and batch, training states in ``output`` and the export in ``output``/final.

    Args:
        validation: reference photos of the validation grid (held-out identities).
        resume: "latest" or a saved training state (build.zeroft_resume).
        device: "cpu" trains on the CPU even beside a GPU.
        workers: processes decoding the streams.
        init: the zeroft checkpoint training starts from (a grown model, see grow.py) instead of the base plus a
            fresh adapter.
    """
    return TrainConfig(
        base_model=work / "base" / "base", encoder=work / "encoder" / "encoder",
        domain_data=work / "streams" / "domain", general_data=work / "streams" / "general",
        resolution=64, train_batch_size=budget.zeroft_batch, max_train_steps=budget.zeroft,
        learning_rate=budget.zeroft_lr, lr_warmup_steps=min(200, budget.zeroft // 10),
        regularization=Regularization(mix_ratio=0.3, cross_reference=0.5), train="whole",
        use_ema=True, ema_decay=0.999, masker="border", background_fill="gray", seed=seed,
        checkpointing_steps=budget.checkpoint_every, checkpoints_total_limit=1000,  # every state: the curve's points
        resume=resume, output_dir=output, export_dir=output / "final",
        validation_images=tuple(validation), validation_prompts=VALIDATION_PROMPTS,
        validation_steps=max(budget.checkpoint_every * 2, 1), validation_inference_steps=budget.sampler_steps,
        validation_text_guidance=5.0, validation_object_guidance=3.0,
        dataloader_num_workers=workers, cpu=device == "cpu", init_checkpoint=init,
    )


def with_overrides(config: TrainConfig, overrides: dict) -> TrainConfig:
    """``config`` with ``overrides`` (setting: value) replaced, an ablation's change to the recipe.

    A setting is a TrainConfig field or one of the paper's regularizers (a train.data.Regularization field), named
    flat as train.train's flags and ``TrainConfig.summary`` name them.
    """
    regularizers = {f.name for f in fields(Regularization)}
    regularization = {name: value for name, value in overrides.items() if name in regularizers}
    own = {name: value for name, value in overrides.items() if name not in regularizers}
    return replace(config, regularization=replace(config.regularization, **regularization), **own)
