"""Turning the trained models into a ZeroFTPipeline (validation) and a checkpoint folder (export)."""

from __future__ import annotations

import copy
import shutil
from contextlib import contextmanager
from pathlib import Path

from zeroft.checkpoint import push_to_hub, save_checkpoint
from zeroft.config import EncoderConfig, GenerationDefaults, ZeroFTConfig
from zeroft.pipeline import ZeroFTPipeline


def zeroft_config(args, models, regularization=None, training: dict | None = None) -> ZeroFTConfig:
    local_base = models.base_source is not None
    encoder: EncoderConfig = models.encoder_config
    if encoder.path is not None:
        encoder = EncoderConfig(model_name=encoder.model_name, pretrained=None, path="encoder",
                                background_fill=encoder.background_fill, crop_to_object=encoder.crop_to_object,
                                crop_margin=encoder.crop_margin, views=encoder.views)
    size = args.resolution
    return ZeroFTConfig(
        base_model="base" if local_base else args.base_model,
        encoder=encoder,
        image_embed_dim=models.encoder.embed_dim,
        cross_attention_dim=models.unet.config.cross_attention_dim,
        num_tokens=args.num_tokens,
        unet_tuned=args.train == "whole",
        masker=args.masker,
        defaults=GenerationDefaults(text_guidance=args.validation_text_guidance,
                                    object_guidance=args.validation_object_guidance,
                                    steps=args.validation_inference_steps, height=size, width=size),
        training=training or {},
    )


def validation_pipeline(models, unet, args) -> ZeroFTPipeline:
    """A pipeline over the models being trained (shared, not copied)."""
    return ZeroFTPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=unet,
        scheduler=copy.deepcopy(models.scheduler), object_encoder=models.encoder,
        zeroft_config=zeroft_config(args, models),
    )


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


def export_checkpoint(args, accelerator, models, unet, ema, regularization, grid: Path | None,
                      throughput: float, seconds: float) -> Path:
    """Write the final zeroft checkpoint (EMA weights if kept), its model card, and upload it if asked."""
    unwrapped = accelerator.unwrap_model(unet)
    training = {
        "recipe": "Jia et al. 2023 regularized joint training (zeroft train.train)",
        "domain_data": args.domain_data, "general_data": args.general_data,
        "mix_ratio_r": regularization.mix_ratio, "cross_reference_omega": regularization.cross_reference,
        "drop_general_object": regularization.drop_general_object, "drop_text": regularization.drop_text,
        "drop_object": regularization.drop_object, "drop_both": regularization.drop_both,
        "mask_condition": regularization.mask_condition, "trained": args.train, "steps": args.max_train_steps,
        "batch_size": args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes,
        "learning_rate": args.learning_rate, "resolution": args.resolution, "ema": args.use_ema,
        "mixed_precision": args.mixed_precision, "processes": accelerator.num_processes, "seed": args.seed,
        "samples_per_second": round(throughput, 3), "train_seconds_last_session": round(seconds, 1),
    }
    if args.init_checkpoint:  # training started from this checkpoint's weights, not from the base
        training["init_checkpoint"] = str(args.init_checkpoint)
    folder = Path(args.export_dir or Path(args.output_dir) / "final")
    if grid is not None:
        training["validation_grid"] = "validation.png"
    config = zeroft_config(args, models, regularization, training)
    pipe = ZeroFTPipeline(vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer,
                          unet=unwrapped, scheduler=models.scheduler, object_encoder=models.encoder,
                          zeroft_config=config)
    with ema_weights(ema, unwrapped):
        save_checkpoint(pipe, folder, unet_tuned=args.train == "whole")
    if grid is not None:
        shutil.copyfile(grid, folder / "validation.png")
        card = folder / "README.md"
        card.write_text(card.read_text() + "\n## Validation grid\n\n![validation grid](validation.png)\n")
    if args.push_to_hub:
        push_to_hub(folder, args.push_to_hub, token=args.hub_token)
    return folder
