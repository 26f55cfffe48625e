"""Command-line flags of ``python -m train.train``: they fill a :class:`train.config.TrainConfig`.

Every flag's meaning is in its help text; its name is the name of the TrainConfig field it sets
(the regularizers' flags set the fields of ``TrainConfig.regularization``), and its default is
that field's default, read from the dataclass. The values are checked by TrainConfig, not here.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from zeroft.flags import ArgumentParser

from .config import (BACKGROUND_FILL_CHOICES, ENCODER_VIEWS, MIXED_PRECISIONS, PREDICTION_TYPES, REPORTERS,
                     TRAINED_PARTS, WEIGHTING_SCHEMES, TrainConfig, default_of)
from .data import Regularization

REGULARIZATION_FLAGS = tuple(f.name for f in fields(Regularization))


def _flag(group, name: str, **kwargs) -> None:
    """Add ``--name``; its default is that of the TrainConfig (or Regularization) field ``name``."""
    group.add_argument(f"--{name}", default=default_of(name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m train.train`` (train.flag_table documents it)."""
    p = ArgumentParser(
        prog="python -m train.train",
        description="Train a zeroft checkpoint with the paper's regularized joint training (Jia et al., 2023).",
    )
    models = p.add_argument_group("models")
    models.add_argument("--base_model", required=True,
                        help="diffusers Stable Diffusion 1.x or SDXL pipeline, local folder or Hub id (the family is read "
                             "from its model_index.json)")
    _flag(models, "encoder", help="object encoder: open_clip model name, hf-hub:org/name, or a local open_clip folder")
    _flag(models, "encoder_pretrained", help="open_clip pretrained tag")
    _flag(models, "background_fill", choices=BACKGROUND_FILL_CHOICES,
          help="colour replacing the masked-out background of the condition photo")
    _flag(models, "encoder_views", choices=ENCODER_VIEWS,
          help="average the object embedding over these views of each photo (zeroft.encoder.VIEWS)")
    _flag(models, "crop_to_object", action=argparse.BooleanOptionalAction,
          help="crop the condition photo to the object's box before encoding")
    _flag(models, "num_tokens", type=int, help="object tokens per photo (4 = IP-Adapter layout; 16 for Plus)")
    _flag(models, "projection", choices=("linear", "plus"),
          help="linear: the encoder's pooled embedding (IP-Adapter); plus: its patch tokens through a Perceiver "
               "resampler (IP-Adapter Plus)")
    _flag(models, "resampler_width", type=int, help="plus: the resampler's inner width, a multiple of 64")
    _flag(models, "init_checkpoint",
          help="start from this zeroft checkpoint's adapter (and unet/, if tuned) instead of fresh weights")
    _flag(models, "prediction_type", choices=PREDICTION_TYPES, help="override the base scheduler's prediction type")
    _flag(models, "lora_rank", type=int, help="--train lora: rank of the LoRA on the transformer's attention")
    _flag(models, "weighting_scheme", choices=WEIGHTING_SCHEMES,
          help="FLUX.1: how the flow-matching loss draws σ and weights it (none: uniform σ; logit_normal, mode: "
               "σ densities; sigma_sqrt, cosmap: loss weights), as diffusers' FLUX training examples")

    data = p.add_argument_group("data")
    _flag(data, "domain_data", help="domain-specific records (image, caption, identity, mask?)")
    _flag(data, "general_data", help="general-domain records (image, caption)")
    _flag(data, "split", help="split of Hub datasets")
    for stream in ("domain", "general"):
        _flag(data, f"{stream}_image_column", help=f"{stream} records: column with the photo")
        _flag(data, f"{stream}_caption_column", help=f"{stream} records: column with the caption")
    _flag(data, "domain_identity_column", help="domain records: column naming the object")
    _flag(data, "domain_mask_column", help="domain records: optional column with the object mask")
    _flag(data, "resolution", type=int, help="training image size (short side, centre crop); SD 1.x: 512, SDXL: 1024")
    _flag(data, "masker", help="automatic mask for domain records without a mask column: border | rembg:<model>")
    _flag(data, "dataloader_num_workers", type=int, help="worker processes decoding samples")

    reg = p.add_argument_group("the paper's regularizers (sec. 3.4)")
    _flag(reg, "mix_ratio", type=float, help="r: probability a sample is domain-specific")
    _flag(reg, "cross_reference", type=float,
          help="ω: probability of taking the object embedding from ANOTHER photo of the identity (eq. 3)")
    _flag(reg, "drop_general_object", action=argparse.BooleanOptionalAction,
          help="eq. 4: general-domain samples use the null embedding ϕ (--no-drop_general_object "
               "conditions them on their own photo, as IP-Adapter does)")
    _flag(reg, "drop_text", type=float, help="probability of dropping only the caption")
    _flag(reg, "drop_object", type=float, help="probability of dropping only the object")
    _flag(reg, "drop_both", type=float, help="probability of dropping both conditions")
    _flag(reg, "mask_condition", action=argparse.BooleanOptionalAction,
          help="encode the masked photo x ⊗ m (--no-mask_condition encodes the raw photo)")

    opt = p.add_argument_group("optimisation")
    _flag(opt, "train", choices=TRAINED_PARTS,
          help="whole: UNet + object attention + projection (the paper's default); adapter: the latter two; "
               "lora (FLUX.1): a LoRA of the transformer's attention + the adapter")
    _flag(opt, "train_batch_size", type=int, help="per process")
    _flag(opt, "gradient_accumulation_steps", type=int, help="micro-batches per optimizer step")
    _flag(opt, "max_train_steps", type=int, help="optimizer steps in all")
    _flag(opt, "learning_rate", type=float, help="AdamW learning rate (1e-5 suits whole-UNet tuning)")
    _flag(opt, "lr_scheduler", help="diffusers scheduler name: constant, constant_with_warmup, cosine, linear, ...")
    _flag(opt, "lr_warmup_steps", type=int, help="linear warm-up steps")
    _flag(opt, "adam_weight_decay", type=float, help="AdamW weight decay")
    _flag(opt, "max_grad_norm", type=float, help="gradient clipping norm (0: off)")
    _flag(opt, "mixed_precision", choices=MIXED_PRECISIONS,
          help="autocast precision (fp16 on GPUs; bf16 on recent GPUs and CPUs)")
    _flag(opt, "cpu", action="store_true", help="train on the CPU even when a CUDA GPU is present")
    _flag(opt, "gradient_checkpointing", action="store_true", help="recompute activations to save memory")
    _flag(opt, "cache_latents", action="store_true",
          help="keep each training image's VAE posterior in memory (2 GiB at most): an image drawn again skips the VAE")
    _flag(opt, "use_8bit_adam", action="store_true", help="bitsandbytes AdamW8bit (CUDA only)")
    _flag(opt, "use_ema", action="store_true", help="keep an EMA of the trained weights and export it")
    _flag(opt, "ema_decay", type=float, help="EMA decay per step")
    _flag(opt, "seed", type=int, help="decides every random draw: data, noise, timesteps")

    run = p.add_argument_group("run")
    run.add_argument("--output_dir", required=True, help="checkpoints, logs, validation grids")
    _flag(run, "export_dir", help="final zeroft checkpoint (default: OUTPUT_DIR/final)")
    _flag(run, "checkpointing_steps", type=int, help="save the training state every N steps")
    _flag(run, "checkpoints_total_limit", type=int, help="keep the last K training states")
    _flag(run, "resume", help="'latest' or a checkpoint folder")
    _flag(run, "report_to", choices=REPORTERS, help="TensorBoard logs go to OUTPUT_DIR/logs")
    _flag(run, "log_every", type=int, help="log the loss every N steps")
    _flag(run, "validation_images", nargs="*", help="reference photos for the validation grid")
    _flag(run, "validation_prompts", nargs="*", help="prompts for the validation grid")
    _flag(run, "validation_steps", type=int, help="render the grid every N steps (0: only at the end)")
    _flag(run, "validation_inference_steps", type=int,
          help="sampler steps of validation images; also the exported default")
    _flag(run, "validation_text_guidance", type=float, help="w_text of validation images; also the exported default")
    _flag(run, "validation_object_guidance", type=float, help="w_obj of validation images; also the exported default")
    _flag(run, "push_to_hub", metavar="REPO", help="upload the final checkpoint to this Hub repo")
    _flag(run, "hub_token", help="Hub token (default: the logged-in one)")
    return p


def parse_args(argv=None) -> TrainConfig:
    """The TrainConfig the command line ``argv`` (default: ``sys.argv[1:]``) asks for.

    Raises:
        zeroft.errors.InputError: a value TrainConfig refuses (argparse itself exits on unknown flags).
    """
    values = vars(build_parser().parse_args(argv))
    regularization = Regularization(**{name: values.pop(name) for name in REGULARIZATION_FLAGS})
    return TrainConfig(**values, regularization=regularization)
