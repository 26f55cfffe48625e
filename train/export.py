"""Turning the trained models into a zeroft pipeline (validation) and a checkpoint folder (export).

The pipeline class is the base model's family's (``zeroft.loading.PIPELINE_CLASSES``): ZeroFTPipeline
for Stable Diffusion 1.x, ZeroFTXLPipeline for SDXL, ZeroFTFluxPipeline for FLUX.1, built from that family's text
encoders and tokenizers.
"""

from __future__ import annotations

import copy
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from zeroft.adapter import object_token_width
from zeroft.checkpoint import push_to_hub, save_checkpoint
from zeroft.config import EncoderConfig, GenerationDefaults, ZeroFTConfig
from zeroft.generation import ZeroFTMixin
from zeroft.loading import PIPELINE_CLASSES

from .config import RECIPE, TrainConfig

VALIDATION_GRID = "validation.png"  # the last validation grid, beside the exported weights


def zeroft_config(config: TrainConfig, models, training: dict | None = None) -> ZeroFTConfig:
    """The checkpoint config of the models being trained; a local base or encoder becomes a sub-folder."""
    encoder: EncoderConfig = models.encoder_config
    if encoder.path is not None:  # save_checkpoint copies a local encoder into encoder/
        encoder = replace(encoder, pretrained=None, path="encoder")
    size = config.resolution
    return ZeroFTConfig(
        base_model="base" if models.base_source is not None else str(config.base_model),
        backbone=models.backbone.name,
        encoder=encoder,
        projection=config.projection,
        image_embed_dim=models.encoder.width(config.projection),
        cross_attention_dim=object_token_width(models.unet),
        num_tokens=config.num_tokens,
        unet_tuned=config.train == "whole",
        masker=config.masker,
        defaults=GenerationDefaults(text_guidance=config.validation_text_guidance,
                                    object_guidance=config.validation_object_guidance,
                                    steps=config.validation_inference_steps, height=size, width=size),
        training=training or {},
    )


def training_pipeline(models, unet, scheduler, config: ZeroFTConfig) -> ZeroFTMixin:
    """The zeroft pipeline of the base model's family over the models being trained (shared, not copied)."""
    return PIPELINE_CLASSES[models.backbone.name](vae=models.vae, scheduler=scheduler, object_encoder=models.encoder,
                                                  zeroft_config=config, **{models.backbone.denoiser: unet},
                                                  **models.text_parts)


def validation_pipeline(models, unet, config: TrainConfig) -> ZeroFTMixin:
    """A pipeline over the models being trained, with its own copy of the sampler."""
    return training_pipeline(models, unet, copy.deepcopy(models.scheduler), zeroft_config(config, models))


def trainable_parameters(module) -> list:
    """The parameters the optimizer and the EMA track (all of the UNet, or only the object attention)."""
    return [p for p in module.parameters() if p.requires_grad]


@contextmanager
def ema_weights(ema, module):
    """Inside the block ``module`` holds the EMA weights (when ``ema`` is not None); its own come back after."""
    if ema is None:
        yield
        return
    ema.store(trainable_parameters(module))
    ema.copy_to(trainable_parameters(module))
    try:
        yield
    finally:
        ema.restore(trainable_parameters(module))


def training_record(config: TrainConfig, processes: int, throughput: float, seconds: float,
                    grid: Path | None) -> dict:
    """What ``zeroft_config.json``'s ``training`` (and so the model card) records: the recipe, the settings
    (:meth:`TrainConfig.summary`), and what this run measured."""
    record = {"recipe": RECIPE, **config.summary(), "processes": processes,
              "batch_size": config.train_batch_size * config.gradient_accumulation_steps * processes,
              "samples_per_second": round(throughput, 3), "train_seconds_last_session": round(seconds, 1)}
    if grid is not None:  # copied next to the weights; zeroft.model_card shows it
        record["validation_grid"] = VALIDATION_GRID
    return record


def export_checkpoint(config: TrainConfig, accelerator, models, unet, ema, grid: Path | None,
                      throughput: float, seconds: float) -> Path:
    """Write the final zeroft checkpoint (EMA weights if kept), its model card, and upload it if asked."""
    unwrapped = accelerator.unwrap_model(unet)
    training = training_record(config, accelerator.num_processes, throughput, seconds, grid)
    folder = config.final_dir
    pipe = training_pipeline(models, unwrapped, models.scheduler, zeroft_config(config, models, training))
    with ema_weights(ema, unwrapped):
        save_checkpoint(pipe, folder, unet_tuned=config.train == "whole")
    if grid is not None:
        shutil.copyfile(grid, folder / VALIDATION_GRID)
    if config.push_to_hub:
        push_to_hub(folder, config.push_to_hub, token=config.hub_token)
    return folder
