"""``python -m train.train``: the paper's regularized joint training with accelerate.

Runs the same on one CPU, one GPU, several GPUs or machines (``accelerate launch`` or
``torchrun``; launch configs in train/configs/). ``run(config)`` trains from a
:class:`train.config.TrainConfig`; ``main(argv)`` is the command line (train.args) around it.
Steps of ``run``: build the models, the data and the optimizer; resume; then for each step
render samples (train.data), compute the denoising loss (train.losses) and update; checkpoint
atomically (train.checkpointing); render validation grids (train.validation); export a zeroft
checkpoint (train.export). The base model's family, Stable Diffusion 1.x, SDXL or FLUX.1, is read from its
``model_index.json`` (zeroft.backbones); SDXL adds the pooled text and size conditions to every step; FLUX.1
trains its object attention (``--train adapter``) with the rectified-flow loss (train.losses.flow_matching_loss).

Example:
    >>> from train.config import TrainConfig
    >>> from train.train import run
    >>> final = run(TrainConfig(base_model="tiny/base", encoder="tiny/encoder", domain_data="domain",
    ...                         general_data="general", output_dir="runs/x", max_train_steps=2))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file
from tqdm.auto import tqdm

from zeroft.adapter import adapter_parameters, install_object_attention, load_object_attention, uses_patch_tokens
from zeroft.backbones import Backbone, backbone_of_index, get_backbone
from zeroft.config import ADAPTER_NAME, EncoderConfig, ZeroFTConfig
from zeroft.encoder import ObjectEncoder
from zeroft.errors import InputError

from .args import parse_args
from .checkpointing import checkpoint_step, clean_partial, load_training_state, resolve_resume, save_training_state
from .config import TrainConfig
from .data import MixedTrainingData, collate, global_indices, open_streams, time_ids
from .export import ema_weights, export_checkpoint, trainable_parameters, validation_pipeline
from .losses import (LatentCache, TextEncoderCache, conditions_on_text_time, diffusion_loss, encode_latents,
                     flow_matching_loss, step_generator)
from .validation import render_validation

logger = get_logger(__name__)


@dataclass
class Models:
    base: DiffusionPipeline  # the diffusers base pipeline: frozen VAE, text encoders, tokenizers (its encode_prompt)
    unet: torch.nn.Module  # the denoiser the object attention lives in: the UNet, or FLUX.1's transformer
    encoder: ObjectEncoder
    noise_scheduler: DDPMScheduler | None  # the UNet's training noise schedule; None for FLUX (flow matching)
    base_source: Path | None  # the local base folder, None for a Hub id (then the export refers to it)
    encoder_config: EncoderConfig
    backbone: Backbone  # the base model's family (zeroft.backbones), read from its model_index.json

    @property
    def vae(self) -> torch.nn.Module:
        return self.base.vae

    @property
    def scheduler(self):
        """The base pipeline's sampler, kept for validation and export."""
        return self.base.scheduler

    @property
    def text_parts(self) -> dict:
        """The family's text encoders and tokenizers by component name (SDXL: two of each)."""
        return {name: getattr(self.base, name) for name in (*self.backbone.text_encoders, *self.backbone.tokenizers)}

    @property
    def frozen(self) -> list[torch.nn.Module]:
        return [self.vae, *(getattr(self.base, name) for name in self.backbone.text_encoders), self.encoder]


def build_accelerator(config: TrainConfig) -> Accelerator:
    output_dir = Path(config.output_dir)
    return Accelerator(
        cpu=config.cpu or not torch.cuda.is_available(),  # without this, CPU multi-process runs would not synchronise
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )


def build_models(config: TrainConfig) -> Models:
    """The base model in its family's diffusers class, the object encoder and the UNet with object attention;
    everything but the trained part frozen."""
    backbone = backbone_of_index(DiffusionPipeline.load_config(str(config.base_model)))
    flow = backbone.denoiser != "unet"  # FLUX.1: a transformer trained by flow matching
    if flow and config.train == "whole":
        raise InputError(f"{backbone.label}'s {backbone.denoiser} (12B parameters) is not tuned whole: use --train "
                         "lora (a LoRA of its attention with the object attention) or --train adapter.")
    if not flow and config.train == "lora":
        raise InputError(f"--train lora is for FLUX.1's transformer; {backbone.label} tunes its whole UNet "
                         "(--train whole) or the object attention (--train adapter).")
    if flow and config.prediction_type:
        raise InputError(f"--prediction_type is for Stable Diffusion's noise schedules; {backbone.label} is trained "
                         "by flow matching (--weighting_scheme).")
    base = backbone.base_class().from_pretrained(str(config.base_model), **backbone.base_arguments(),
                                                 use_safetensors=True)
    noise_scheduler = None
    if not flow:
        scheduler_config = dict(base.scheduler.config)
        if config.prediction_type:
            scheduler_config["prediction_type"] = config.prediction_type
            base.scheduler = base.scheduler.__class__.from_config(scheduler_config)
        noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    encoder_config = config.encoder_config()
    encoder = ObjectEncoder.from_config(encoder_config)
    unet = getattr(base, backbone.denoiser)
    if config.init_checkpoint:
        init = Path(config.init_checkpoint)
        init_config = ZeroFTConfig.load(init)
        if init_config.backbone != backbone.name:
            raise InputError(f"--init_checkpoint {init} is a {get_backbone(init_config.backbone).label} checkpoint; "
                             f"the base model is {backbone.label}.")
        if init_config.projection != config.projection:
            raise InputError(f"--init_checkpoint {init} has the {init_config.projection} object projection; this run "
                             f"trains {config.projection} (--projection {init_config.projection} to continue it).")
        if init_config.unet_tuned:
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(init / "unet", use_safetensors=True)
            base.unet = unet  # the base's own UNet is not kept in memory beside it
        load_object_attention(unet, load_file(str(init / ADAPTER_NAME)))
    else:
        install_object_attention(unet, encoder.width(config.projection), config.num_tokens, seed=config.seed,
                                 projection=config.projection, resampler_width=config.resampler_width)
    base_path = Path(config.base_model)
    models = Models(base, unet, encoder, noise_scheduler, base_path.resolve() if base_path.is_dir() else None,
                    encoder_config, backbone)
    for frozen in models.frozen:
        frozen.requires_grad_(False).eval()
    unet.requires_grad_(config.train == "whole")
    if config.train == "lora":
        add_lora(unet, config.lora_rank, config.seed)
    for parameter in adapter_parameters(unet):
        parameter.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return models


LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")  # the attention projections diffusers' FLUX LoRA example tunes


def add_lora(transformer, rank: int, seed: int) -> None:
    """A trainable LoRA (peft, rank = alpha = ``rank``, Gaussian A, zero B: the model is unchanged at step 0) on every
    attention projection of ``transformer`` (not the object attention's own to_k_ip / to_v_ip)."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise InputError("--train lora needs peft: pip install peft (or the train extra)") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=list(LORA_TARGETS)))
    for name, parameter in transformer.named_parameters():
        parameter.requires_grad_(".lora_" in name)


def build_data(config: TrainConfig, encoder: ObjectEncoder) -> MixedTrainingData:
    sources = [None if s is None else str(s) for s in (config.domain_data, config.general_data)]
    domain, general = open_streams(*sources, *config.columns(), config.split)
    return MixedTrainingData(domain, general, encoder, config.resolution, config.regularization, config.seed,
                             config.masker)


def build_optimizer(config: TrainConfig, parameters):
    if config.use_8bit_adam:
        if not torch.cuda.is_available():
            raise InputError("--use_8bit_adam needs bitsandbytes on a CUDA GPU; this machine has none.")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(parameters, lr=config.learning_rate, weight_decay=config.adam_weight_decay)
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.adam_weight_decay)


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


def training_step(models: Models, unet, batch, text_cache: TextEncoderCache, generator, weight_dtype,
                  weighting_scheme: str = "none", latent_cache: LatentCache | None = None) -> torch.Tensor:
    """The denoising loss of one micro-batch: text conditions, object embeddings (ϕ where dropped), noise;
    for SDXL also the pooled text embedding and the size conditions of each sample; for FLUX.1 the flow-matching
    loss with its pooled text. ``latent_cache``: the images' VAE posteriors, kept (--cache_latents)."""
    device = next(unet.parameters()).device
    text = text_cache(batch["caption"], device)
    hidden = text.pop("encoder_hidden_states").to(weight_dtype)
    added = {name: value.to(weight_dtype) for name, value in text.items()}  # SDXL: text_embeds (B, P)
    if text_cache.pooled:
        added["time_ids"] = time_ids(batch).to(device, weight_dtype)  # (B, 6)
    count = len(batch["caption"])
    if models.noise_scheduler is None:  # FLUX.1: ϕ is a black image's embedding, as at inference
        embeds = models.encoder.black_embedding().float().to(device).repeat(count, 1)  # (B, D)
        encode = models.encoder
    elif uses_patch_tokens(models.unet):  # Plus: patch tokens; ϕ the tokens of an all-zero normalised image, as at inference
        embeds = models.encoder.null_tokens().float().to(device).repeat(count, 1, 1)  # (B, T, W)
        encode = models.encoder.tokens
    else:
        embeds = torch.zeros(count, models.encoder.embed_dim, device=device)  # (B, D); ϕ = zeros
        encode = models.encoder
    if batch["use_object"].any():
        chosen = batch["use_object"]
        embeds[chosen.to(device)] = encode(batch["condition"][chosen]).float().to(device)
    keys = list(zip(batch["stream"], batch["record"]))
    latents = encode_latents(models.vae, batch["pixel_values"], generator, latent_cache, keys).to(weight_dtype)
    if models.noise_scheduler is None:
        pixels = latents.shape[-1] * models.base.vae_scale_factor
        _, image_ids = models.base.prepare_latents(count, latents.shape[1], pixels, pixels, weight_dtype, device, None,
                                                   latents=latents)  # the packed grid's position ids
        return flow_matching_loss(unet, latents, image_ids, {"encoder_hidden_states": hidden, **added},
                                  embeds.to(weight_dtype), generator, weighting_scheme,
                                  guidance=1.0 if models.unet.config.guidance_embeds else None)
    return diffusion_loss(unet, models.noise_scheduler, latents, hidden, embeds.to(weight_dtype), generator,
                          added_cond_kwargs=added)


def run_validation(config: TrainConfig, accelerator, models, unet, step, ema) -> Path | None:
    if not (config.validation_images and config.validation_prompts) or not accelerator.is_main_process:
        return None
    unwrapped = accelerator.unwrap_model(unet)
    unwrapped.eval()
    try:
        with ema_weights(ema, unwrapped):
            pipe = validation_pipeline(models, unwrapped, config)
            grid = render_validation(pipe, list(config.validation_images), list(config.validation_prompts),
                                     config.seed, config.validation_inference_steps, config.validation_text_guidance,
                                     config.validation_object_guidance)
    finally:
        unwrapped.train()
    folder = Path(config.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    grid.save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            import numpy as np

            tracker.writer.add_image("validation", np.asarray(grid), step, dataformats="HWC")
    logger.info(f"validation grid: {path}")
    return path


@dataclass
class Training:
    """What the training loop works on, built by :func:`prepare_training`."""

    models: Models
    data: MixedTrainingData
    unet: torch.nn.Module  # models.unet as accelerate prepared it
    parameters: list  # the trained ones, also what the EMA tracks
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    ema: object | None  # diffusers EMAModel when config.use_ema
    weight_dtype: torch.dtype


def prepare_training(config: TrainConfig, accelerator: Accelerator) -> Training:
    """Models, data, optimizer, LR schedule and EMA, placed and prepared by accelerate."""
    models = build_models(config)
    data = build_data(config, models.encoder)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    for frozen in models.frozen:
        frozen.to(accelerator.device, dtype=weight_dtype)
    if weight_dtype == torch.float16 and models.backbone.vae_fp32_under_fp16 and models.vae.config.force_upcast:
        models.vae.to(dtype=torch.float32)  # as diffusers' SDXL training example keeps SDXL's VAE
    parameters = trainable_parameters(models.unet)
    optimizer = build_optimizer(config, parameters)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.max_train_steps * accelerator.num_processes)
    if accelerator.state.deepspeed_plugin is not None:
        # No data loader goes through prepare(), so DeepSpeed cannot infer its micro-batch size.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.train_batch_size
    unet, optimizer, lr_scheduler = accelerator.prepare(models.unet, optimizer, lr_scheduler)
    ema = None
    if config.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(parameters, decay=config.ema_decay, foreach=accelerator.device.type == "cuda")
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    return Training(models, data, unet, parameters, optimizer, lr_scheduler, ema, weight_dtype)


def resume_training(config: TrainConfig, accelerator: Accelerator, ema) -> int:
    """Restore the training state ``config.resume`` names, if any; returns the step training continues from."""
    try:
        resume_from = resolve_resume(config.output_dir, None if config.resume is None else str(config.resume))
    except FileNotFoundError as error:
        raise InputError(f"--resume: {error}.") from None
    if resume_from is None:
        return 0
    start_step = checkpoint_step(resume_from)
    if start_step > config.max_train_steps:  # would export later weights labelled with fewer steps
        raise InputError(f"{resume_from} is at step {start_step}, past --max_train_steps {config.max_train_steps}: "
                         f"resume from an earlier checkpoint-N (N <= {config.max_train_steps}) or raise the steps.")
    load_training_state(accelerator, resume_from, ema)
    logger.info(f"resumed from {resume_from} at step {start_step}")
    return start_step


def train_steps(config: TrainConfig, accelerator: Accelerator, training: Training,
                start_step: int) -> tuple[float, float, Path | None]:
    """Steps ``start_step`` to ``config.max_train_steps``, saving and validating on the way.

    Returns:
        (samples per second over all processes, seconds this session trained, the last validation grid or None).
    """
    batches = torch.utils.data.DataLoader(
        training.data, batch_sampler=RankBatches(start_step, config.max_train_steps, config.gradient_accumulation_steps,
                                          accelerator.process_index, accelerator.num_processes,
                                          config.train_batch_size),
        collate_fn=collate, num_workers=config.dataloader_num_workers,
    )
    text_cache = TextEncoderCache(training.models.base, pooled=conditions_on_text_time(training.models.unet),
                                  flux=training.models.noise_scheduler is None)
    latent_cache = LatentCache(training.models.vae) if config.cache_latents else None
    progress = tqdm(range(start_step, config.max_train_steps), initial=start_step, total=config.max_train_steps,
                    disable=not accelerator.is_local_main_process, desc="training")
    training.unet.train()
    started, samples_seen, last_grid = time.perf_counter(), 0, None
    iterator = iter(batches)
    for step in range(start_step, config.max_train_steps):
        losses = []
        for micro in range(config.gradient_accumulation_steps):
            batch = next(iterator)
            with accelerator.accumulate(training.unet):
                generator = step_generator(config.seed, step, micro, accelerator.process_index)
                loss = training_step(training.models, training.unet, batch, text_cache, generator,
                                     training.weight_dtype, config.weighting_scheme, latent_cache)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(training.parameters, config.max_grad_norm)
                training.optimizer.step()
                training.lr_scheduler.step()
                training.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().item())
            samples_seen += len(batch["caption"])
        if training.ema is not None:
            training.ema.step(training.parameters)
        done = step + 1
        progress.update(1)
        mean_loss = sum(losses) / len(losses)
        progress.set_postfix(loss=f"{mean_loss:.4f}")
        if done % config.log_every == 0 or done == config.max_train_steps:
            accelerator.log({"loss": mean_loss, "lr": training.lr_scheduler.get_last_lr()[0]}, step=done)
        if done % config.checkpointing_steps == 0 or done == config.max_train_steps:
            save_training_state(accelerator, config.output_dir, done, config.checkpoints_total_limit)
        if config.validation_steps and done % config.validation_steps == 0:
            grid = run_validation(config, accelerator, training.models, training.unet, done, training.ema)
            last_grid = grid or last_grid
    progress.close()
    seconds = time.perf_counter() - started
    throughput = samples_seen * accelerator.num_processes / max(seconds, 1e-9)
    logger.info(f"trained {config.max_train_steps - start_step} steps in {seconds:.1f} s ({throughput:.2f} samples/s)")
    return throughput, seconds, last_grid


def run(config: TrainConfig) -> Path | None:
    """Train as ``config`` says and export a zeroft checkpoint.

    Args:
        config: every setting of the run (the flags of ``python -m train.train``).

    Returns:
        The exported checkpoint folder on the main process, None on the others.

    Raises:
        zeroft.errors.InputError: a setting this machine or the output folder cannot honour
            (``use_8bit_adam`` without CUDA, a ``resume`` folder that is no complete training state,
            a resumed state past ``max_train_steps``). The config's own values were checked when it was built.
    """
    accelerator = build_accelerator(config)
    set_seed(config.seed, device_specific=False)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        for removed in clean_partial(config.output_dir):
            logger.info(f"removed an interrupted save: {removed}")
    accelerator.wait_for_everyone()

    # 1. Models, data, optimizer
    training = prepare_training(config, accelerator)

    # 2. Resume
    start_step = resume_training(config, accelerator, training.ema)
    if accelerator.is_main_process and config.report_to != "none":
        accelerator.init_trackers("zeroft", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                    for k, v in config.summary().items()})

    # 3. Train
    throughput, seconds, last_grid = train_steps(config, accelerator, training, start_step)

    # 4. Final validation and export
    if not config.validation_steps or config.max_train_steps % config.validation_steps:
        last_grid = run_validation(config, accelerator, training.models, training.unet, config.max_train_steps,
                                   training.ema) or last_grid
    export = None
    if accelerator.is_main_process:
        export = export_checkpoint(config, accelerator, training.models, training.unet, training.ema, last_grid,
                                   throughput=throughput, seconds=seconds)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return export


def main(argv=None) -> Path | None:
    """``python -m train.train``: parse the flags, train; a user error is one ``error:`` line and exit status 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        return run(parse_args(argv))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
