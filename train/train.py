"""``python -m train.train``: the paper's regularized joint training with accelerate.

Runs the same on one CPU, one GPU, several GPUs or machines (``accelerate launch`` or
``torchrun``; launch configs in train/configs/). Steps of ``main``: build the models, the data
and the optimizer; resume; then for each step render samples (train.data), compute the
denoising loss (train.losses) and update; checkpoint atomically (train.checkpointing);
render validation grids (train.validation); export a zeroft checkpoint (train.export).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file
from tqdm.auto import tqdm

from zeroft.adapter import adapter_parameters, install_object_attention, load_object_attention
from zeroft.config import ADAPTER_NAME, EncoderConfig, ZeroFTConfig
from zeroft.encoder import ObjectEncoder

from .args import parse_args
from .checkpointing import checkpoint_step, clean_partial, load_training_state, resolve_resume, save_training_state
from .data import MixedTrainingData, Regularization, collate, global_indices, open_streams
from .export import ema_weights, export_checkpoint, trainable_parameters, validation_pipeline
from .losses import TextEncoderCache, diffusion_loss, encode_latents, step_generator
from .sources import Columns
from .validation import render_validation

logger = get_logger(__name__)


@dataclass
class Models:
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    unet: torch.nn.Module
    encoder: ObjectEncoder
    scheduler: object  # the base pipeline's sampler, kept for validation and export
    noise_scheduler: DDPMScheduler
    base_source: Path | None  # the local base folder, None for a Hub id (then the export refers to it)
    encoder_config: EncoderConfig


def build_accelerator(args) -> Accelerator:
    return Accelerator(
        cpu=args.cpu or not torch.cuda.is_available(),  # without this, CPU multi-process runs would not synchronise
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "logs")),
    )


def _encoder_config(args) -> EncoderConfig:
    local = Path(args.encoder)
    return EncoderConfig(
        model_name="local" if local.is_dir() else args.encoder,
        pretrained=None if local.is_dir() else args.encoder_pretrained,
        path=str(local.resolve()) if local.is_dir() else None,
        background_fill=args.background_fill, crop_to_object=args.crop_to_object, views=args.encoder_views,
    )


def build_models(args) -> Models:
    base = StableDiffusionPipeline.from_pretrained(
        args.base_model, safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False, use_safetensors=True,
    )
    config = dict(base.scheduler.config)
    if args.prediction_type:
        config["prediction_type"] = args.prediction_type
        base.scheduler = base.scheduler.__class__.from_config(config)
    noise_scheduler = DDPMScheduler.from_config(config)
    encoder_config = _encoder_config(args)
    encoder = ObjectEncoder.from_config(encoder_config)
    unet = base.unet
    if args.init_checkpoint:
        init = Path(args.init_checkpoint)
        if ZeroFTConfig.load(init).unet_tuned:
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(init / "unet", use_safetensors=True)
        load_object_attention(unet, load_file(str(init / ADAPTER_NAME)))
    else:
        install_object_attention(unet, encoder.embed_dim, args.num_tokens, seed=args.seed)
    for frozen in (base.vae, base.text_encoder, encoder):
        frozen.requires_grad_(False).eval()
    unet.requires_grad_(args.train == "whole")
    for parameter in adapter_parameters(unet):
        parameter.requires_grad_(True)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    base_path = Path(args.base_model)
    return Models(base.vae, base.text_encoder, base.tokenizer, unet, encoder, base.scheduler, noise_scheduler,
                  base_path.resolve() if base_path.is_dir() else None, encoder_config)


def build_data(args, encoder: ObjectEncoder) -> tuple[MixedTrainingData, Regularization]:
    regularization = Regularization(
        mix_ratio=args.mix_ratio, cross_reference=args.cross_reference, drop_general_object=args.drop_general_object,
        drop_text=args.drop_text, drop_object=args.drop_object, drop_both=args.drop_both,
        mask_condition=args.mask_condition,
    )
    domain_columns = Columns(args.domain_image_column, args.domain_caption_column, args.domain_identity_column,
                             args.domain_mask_column)
    general_columns = Columns(args.general_image_column, args.general_caption_column)
    domain, general = open_streams(args.domain_data, args.general_data, domain_columns, general_columns, args.split)
    data = MixedTrainingData(domain, general, encoder, args.resolution, regularization, args.seed, args.masker)
    return data, regularization


def build_optimizer(args, parameters):
    if args.use_8bit_adam:
        if not torch.cuda.is_available():
            raise SystemExit("--use_8bit_adam needs bitsandbytes on a CUDA GPU; this machine has none.")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(parameters, lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    return torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.adam_weight_decay)


class RankBatches(torch.utils.data.Sampler):
    """Index lists of this rank's micro-batches from ``start_step`` on (see train.data.global_indices)."""

    def __init__(self, start_step, max_steps, accumulation, rank, world, batch):
        self.start, self.max, self.accumulation = start_step, max_steps, accumulation
        self.rank, self.world, self.batch = rank, world, batch

    def __iter__(self):
        for step in range(self.start, self.max):
            for micro in range(self.accumulation):
                yield global_indices(step, micro, self.accumulation, self.rank, self.world, self.batch)

    def __len__(self):
        return (self.max - self.start) * self.accumulation


def training_step(models: Models, unet, batch, text_cache: TextEncoderCache, generator, weight_dtype) -> torch.Tensor:
    """The denoising loss of one micro-batch: text tokens, object embeddings (ϕ where dropped), noise."""
    device = next(unet.parameters()).device
    hidden = text_cache(batch["caption"], device).to(weight_dtype)
    embeds = torch.zeros(len(batch["caption"]), models.encoder.embed_dim, device=device)
    if batch["use_object"].any():
        chosen = batch["use_object"]
        embeds[chosen.to(device)] = models.encoder(batch["condition"][chosen]).float().to(device)
    latents = encode_latents(models.vae, batch["pixel_values"], generator).to(weight_dtype)
    return diffusion_loss(unet, models.noise_scheduler, latents, hidden, embeds.to(weight_dtype), generator)


def run_validation(args, accelerator, models, unet, step, ema) -> Path | None:
    if not (args.validation_images and args.validation_prompts) or not accelerator.is_main_process:
        return None
    unwrapped = accelerator.unwrap_model(unet)
    unwrapped.eval()
    try:
        with ema_weights(ema, unwrapped):
            pipe = validation_pipeline(models, unwrapped, args)
            grid = render_validation(pipe, args.validation_images, args.validation_prompts, args.seed,
                                     args.validation_inference_steps, args.validation_text_guidance,
                                     args.validation_object_guidance)
    finally:
        unwrapped.train()
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    grid.save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            import numpy as np

            tracker.writer.add_image("validation", np.asarray(grid), step, dataformats="HWC")
    logger.info(f"validation grid: {path}")
    return path


def main(argv=None) -> Path | None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = build_accelerator(args)
    set_seed(args.seed, device_specific=False)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        for removed in clean_partial(args.output_dir):
            logger.info(f"removed an interrupted save: {removed}")
    accelerator.wait_for_everyone()

    # 1. Models, data, optimizer
    models = build_models(args)
    data, regularization = build_data(args, models.encoder)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    for frozen in (models.vae, models.text_encoder, models.encoder):
        frozen.to(accelerator.device, dtype=weight_dtype)
    parameters = trainable_parameters(models.unet)
    optimizer = build_optimizer(args, parameters)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    if accelerator.state.deepspeed_plugin is not None:
        # No data loader goes through prepare(), so DeepSpeed cannot infer its micro-batch size.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = args.train_batch_size
    unet, optimizer, lr_scheduler = accelerator.prepare(models.unet, optimizer, lr_scheduler)
    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(parameters, decay=args.ema_decay, foreach=accelerator.device.type == "cuda")
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    # 2. Resume
    start_step = 0
    resume_from = resolve_resume(args.output_dir, args.resume)
    if resume_from is not None:
        start_step = checkpoint_step(resume_from)
        if start_step > args.max_train_steps:  # would export later weights labelled with fewer steps
            raise SystemExit(f"{resume_from} is at step {start_step}, past --max_train_steps {args.max_train_steps}: "
                             f"resume from an earlier checkpoint-N (N <= {args.max_train_steps}) or raise the steps.")
        load_training_state(accelerator, resume_from, ema)
        logger.info(f"resumed from {resume_from} at step {start_step}")
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("zeroft", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                    for k, v in vars(args).items()})

    # 3. Train
    batches = torch.utils.data.DataLoader(
        data, batch_sampler=RankBatches(start_step, args.max_train_steps, args.gradient_accumulation_steps,
                                        accelerator.process_index, accelerator.num_processes, args.train_batch_size),
        collate_fn=collate, num_workers=args.dataloader_num_workers,
    )
    text_cache = TextEncoderCache(models.tokenizer, models.text_encoder)
    progress = tqdm(range(start_step, args.max_train_steps), initial=start_step, total=args.max_train_steps,
                    disable=not accelerator.is_local_main_process, desc="training")
    unet.train()
    started, samples_seen, last_grid = time.perf_counter(), 0, None
    iterator = iter(batches)
    for step in range(start_step, args.max_train_steps):
        losses = []
        for micro in range(args.gradient_accumulation_steps):
            batch = next(iterator)
            with accelerator.accumulate(unet):
                generator = step_generator(args.seed, step, micro, accelerator.process_index)
                loss = training_step(models, unet, batch, text_cache, generator, weight_dtype)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().item())
            samples_seen += len(batch["caption"])
        if ema is not None:
            ema.step(parameters)
        done = step + 1
        progress.update(1)
        mean_loss = sum(losses) / len(losses)
        progress.set_postfix(loss=f"{mean_loss:.4f}")
        if done % args.log_every == 0 or done == args.max_train_steps:
            accelerator.log({"loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=done)
        if done % args.checkpointing_steps == 0 or done == args.max_train_steps:
            save_training_state(accelerator, args.output_dir, done, args.checkpoints_total_limit)
        if args.validation_steps and done % args.validation_steps == 0:
            last_grid = run_validation(args, accelerator, models, unet, done, ema) or last_grid
    progress.close()
    seconds = time.perf_counter() - started
    throughput = samples_seen * accelerator.num_processes / max(seconds, 1e-9)
    logger.info(f"trained {args.max_train_steps - start_step} steps in {seconds:.1f} s ({throughput:.2f} samples/s)")

    # 4. Final validation and export
    if not args.validation_steps or args.max_train_steps % args.validation_steps:
        last_grid = run_validation(args, accelerator, models, unet, args.max_train_steps, ema) or last_grid
    export = None
    if accelerator.is_main_process:
        export = export_checkpoint(args, accelerator, models, unet, ema, regularization, last_grid,
                                   throughput=throughput, seconds=seconds)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return export


if __name__ == "__main__":
    main()
