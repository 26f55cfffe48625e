"""The trainer's settings: :class:`TrainConfig`, one frozen dataclass, and the checks on its values.

Every flag of ``python -m train.train`` is a field here, under the flag's own name; the paper's
regularizers are one nested :class:`~train.data.Regularization`, whose fields are also flags.
Defaults are defined once: here, or where zeroft already decides them (the encoder's in
:class:`zeroft.config.EncoderConfig`, the masker's in :mod:`zeroft.masking`, the column names in
:class:`train.sources.Columns`, the regularizers' in :class:`train.data.Regularization`);
train/args.py reads them from these fields. Construction checks every value and raises
:class:`zeroft.errors.InputError`, so ``run(TrainConfig(...))`` and the command line refuse the
same settings with the same sentence.

Example:
    >>> from train.config import TrainConfig
    >>> from train.data import Regularization
    >>> config = TrainConfig(base_model="base", output_dir="runs/x", general_data="general",
    ...                      regularization=Regularization(mix_ratio=0.0))
    >>> config.summary()["mix_ratio_r"], config.max_train_steps
    (0.0, 10000)
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from diffusers.optimization import SchedulerType

from zeroft.config import PROJECTIONS, EncoderConfig, ZeroFTConfig
from zeroft.encoder import VIEWS
from zeroft.errors import InputError
from zeroft.masking import BACKGROUND_FILLS, DEFAULT_MASKER, Masker
from zeroft.validation import check_guidance, check_steps

from .data import Regularization, check_streams
from .sources import Columns

# zeroft.masking.apply_mask also takes "none": the photo is encoded with its background kept.
BACKGROUND_FILL_CHOICES = (*BACKGROUND_FILLS, "none")
ENCODER_VIEWS = tuple(VIEWS)
PREDICTION_TYPES = ("epsilon", "v_prediction")  # what DDPMScheduler's prediction_type accepts for SD-family UNets
# whole: UNet + object attention + projection; adapter: the latter two; lora: a LoRA of the denoiser's attention + the
# adapter (FLUX.1's stand-in for whole-network tuning at 12B parameters)
TRAINED_PARTS = ("whole", "adapter", "lora")
# FLUX.1's rectified-flow loss: how σ is drawn and the loss weighted (diffusers.training_utils, as its FLUX and SD3
# training examples name them): uniform σ ("none"), logit-normal σ, "mode" sampling, or sigma_sqrt / cosmap weights.
WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")
MIXED_PRECISIONS = ("no", "fp16", "bf16")  # the autocast dtypes run() maps to a weight dtype
REPORTERS = ("tensorboard", "none")

RECIPE = "Jia et al. 2023 regularized joint training (zeroft train.train)"

# Recorded under the names zeroft_config.json has always used; readers of exported checkpoints
# (bench/, the toy world, tests) look them up by these names.
_RECORDED_AS = {"mix_ratio": "mix_ratio_r", "cross_reference": "cross_reference_omega", "train": "trained",
                "max_train_steps": "steps", "use_ema": "ema"}
# Not recorded: where this run writes, how often it saves and logs, the upload and its token. None of
# them changes the trained weights (a resumed run ends bit-identical), and a token must never be written.
_NOT_RECORDED = frozenset({"output_dir", "export_dir", "resume", "checkpointing_steps", "checkpoints_total_limit",
                           "report_to", "log_every", "dataloader_num_workers", "push_to_hub", "hub_token"})


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything one training run of ``train.train.run`` takes; see the module docstring."""

    # models
    base_model: str | Path  # diffusers SD 1.x or SDXL pipeline, local folder or Hub id (family from model_index.json)
    encoder: str | Path = EncoderConfig.model_name  # open_clip model name, hf-hub:org/name, or a local open_clip folder
    encoder_pretrained: str | None = EncoderConfig.pretrained  # open_clip tag; ignored for a local encoder folder
    background_fill: str = EncoderConfig.background_fill  # replaces the masked-out background (BACKGROUND_FILL_CHOICES)
    encoder_views: str = EncoderConfig.views  # views of each photo the object embedding averages (zeroft.encoder.VIEWS)
    crop_to_object: bool = EncoderConfig.crop_to_object  # the object fills the encoder's view instead of its photo
    num_tokens: int = ZeroFTConfig.num_tokens  # object tokens per photo; 4 is the IP-Adapter layout diffusers loads
    projection: str = ZeroFTConfig.projection  # linear: pooled embedding; plus: patch tokens through a resampler
    resampler_width: int = 768  # plus: the resampler's inner width, a multiple of 64 (h94's SD1.5 Plus file: 768)
    init_checkpoint: str | Path | None = None  # start from this zeroft checkpoint's adapter (and unet/) instead of fresh
    prediction_type: str | None = None  # overrides the base scheduler's (PREDICTION_TYPES); None keeps the base's
    weighting_scheme: str = "none"  # FLUX.1: σ sampling / loss weighting of the flow-matching loss (WEIGHTING_SCHEMES)
    lora_rank: int = 16  # --train lora: rank (and alpha) of the LoRA on the transformer's attention projections

    # data
    domain_data: str | Path | None = None  # domain-specific records (image, caption, identity, mask?)
    general_data: str | Path | None = None  # general-domain records (image, caption)
    split: str = "train"  # split of Hub datasets
    domain_image_column: str = Columns.image  # the column names of the two streams (see train.sources)
    domain_caption_column: str = Columns.caption
    general_image_column: str = Columns.image
    general_caption_column: str = Columns.caption
    domain_identity_column: str = Columns.identity  # names the object; cross-reference needs two photos per identity
    domain_mask_column: str = Columns.mask  # optional; records without it get the automatic mask
    resolution: int = 512  # training image size (short side, centre crop); the SD 1.x native size (SDXL: 1024)
    masker: str = DEFAULT_MASKER  # automatic mask: "border" | "rembg:<model>" (see zeroft.masking)
    dataloader_num_workers: int = 0  # worker processes decoding samples; 0 decodes in the training process

    # the paper's regularizers (sec. 3.4)
    regularization: Regularization = field(default_factory=Regularization)

    # optimisation
    train: str = "whole"  # what is trained (TRAINED_PARTS); the paper finds whole-network tuning better
    train_batch_size: int = 8  # per process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_train_steps: int = 10000  # optimizer steps in all, counted across resumes
    learning_rate: float = 1e-5  # AdamW; 1e-5 suits whole-UNet tuning, the adapter alone takes more
    lr_scheduler: str = "constant_with_warmup"  # a diffusers scheduler name (diffusers.optimization.SchedulerType)
    lr_warmup_steps: int = 500  # linear warm-up steps
    adam_weight_decay: float = 1e-2  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping norm; 0 turns clipping off
    mixed_precision: str = "no"  # autocast precision (MIXED_PRECISIONS): fp16 on GPUs, bf16 on recent GPUs and CPUs
    cpu: bool = False  # train on the CPU even when a CUDA GPU is present
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more time
    cache_latents: bool = False  # keep each training image's VAE posterior (train.losses.LatentCache, byte-bounded)
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit: less optimizer memory, CUDA only
    use_ema: bool = False  # keep an EMA of the trained weights; validation and export use it
    ema_decay: float = 0.999  # EMA decay per step
    seed: int = 0  # decides every random draw: data, noise, timesteps (what makes a resume bit-identical)

    # run
    output_dir: str | Path  # training states, logs, validation grids
    export_dir: str | Path | None = None  # the final zeroft checkpoint; None: OUTPUT_DIR/final
    checkpointing_steps: int = 500  # save the training state every N steps (and at the last)
    checkpoints_total_limit: int = 3  # keep the last K training states
    resume: str | Path | None = None  # "latest" (the newest state, if any) or a checkpoint folder; None starts fresh
    report_to: str = "tensorboard"  # REPORTERS; TensorBoard logs go to OUTPUT_DIR/logs
    log_every: int = 10  # log the loss every N steps
    validation_images: tuple[str | Path, ...] = ()  # reference photos of the validation grid, one row each
    validation_prompts: tuple[str, ...] = ()  # prompts of the validation grid, one column each
    validation_steps: int = 0  # render the grid every N steps; 0 only at the end
    validation_inference_steps: int = 25  # sampler steps of validation images; also the exported default
    validation_text_guidance: float = 5.0  # w_text of validation images; also the exported default
    validation_object_guidance: float = 3.0  # w_obj of validation images; also the exported default
    push_to_hub: str | None = None  # upload the final checkpoint to this Hub repo
    hub_token: str | None = None  # Hub token; None uses the logged-in one

    def __post_init__(self):
        # argparse hands lists; a frozen config holds tuples, so equal settings compare equal however given
        object.__setattr__(self, "validation_images", tuple(self.validation_images))
        object.__setattr__(self, "validation_prompts", tuple(self.validation_prompts))
        self._check_choices()
        self._check_numbers()
        self._check_data()

    def _check_choices(self) -> None:
        for name, allowed in (("background_fill", BACKGROUND_FILL_CHOICES), ("encoder_views", ENCODER_VIEWS),
                              ("projection", PROJECTIONS),
                              ("train", TRAINED_PARTS), ("mixed_precision", MIXED_PRECISIONS),
                              ("weighting_scheme", WEIGHTING_SCHEMES),
                              ("report_to", REPORTERS), ("lr_scheduler", tuple(s.value for s in SchedulerType))):
            _check_choice(name, getattr(self, name), allowed)
        if self.prediction_type is not None:
            _check_choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        Masker(self.masker)  # parses the spec (InputError when unknown); a rembg model loads on the first mask
        for name in ("base_model", "output_dir"):
            if not str(getattr(self, name)):
                raise InputError(f"{name} must not be empty.")

    def _check_numbers(self) -> None:
        for name, low in (("num_tokens", 1), ("lora_rank", 1), ("resolution", 8), ("dataloader_num_workers", 0), ("train_batch_size", 1),
                          ("gradient_accumulation_steps", 1), ("max_train_steps", 1), ("lr_warmup_steps", 0),
                          ("seed", 0), ("checkpointing_steps", 1), ("checkpoints_total_limit", 1), ("log_every", 1),
                          ("validation_steps", 0)):
            _check_int(name, getattr(self, name), low)
        for name, low, high in (("learning_rate", 0.0, math.inf), ("adam_weight_decay", 0.0, math.inf),
                                ("max_grad_norm", 0.0, math.inf), ("ema_decay", 0.0, 1.0)):
            _check_float(name, getattr(self, name), low, high)
        if self.learning_rate == 0:
            raise InputError("learning_rate must be above 0, not 0.")
        _check_int("resampler_width", self.resampler_width, 64)
        if self.resampler_width % 64:
            raise InputError(f"resampler_width must be a multiple of 64 (diffusers reads 64-wide heads), not "
                             f"{self.resampler_width}.")
        check_steps(self.validation_inference_steps)
        check_guidance("validation_text_guidance", self.validation_text_guidance)
        check_guidance("validation_object_guidance", self.validation_object_guidance)
        if self.use_8bit_adam and self.cpu:
            raise InputError("use_8bit_adam needs bitsandbytes on a CUDA GPU, but cpu=True trains on the CPU.")

    def _check_data(self) -> None:
        if not isinstance(self.regularization, Regularization):
            raise InputError(f"regularization must be a train.data.Regularization, not {self.regularization!r}.")
        check_streams(self.domain_data is not None, self.general_data is not None, self.regularization.mix_ratio)

    @property
    def final_dir(self) -> Path:
        """Where the exported zeroft checkpoint goes."""
        return Path(self.export_dir) if self.export_dir is not None else Path(self.output_dir) / "final"

    def encoder_config(self) -> EncoderConfig:
        """The object encoder this run trains against: a local open_clip folder, or an open_clip name and tag."""
        local = Path(self.encoder)
        if local.is_dir():
            return EncoderConfig(model_name="local", pretrained=None, path=str(local.resolve()),
                                 background_fill=self.background_fill, crop_to_object=self.crop_to_object,
                                 views=self.encoder_views)
        return EncoderConfig(model_name=str(self.encoder), pretrained=self.encoder_pretrained,
                             background_fill=self.background_fill, crop_to_object=self.crop_to_object,
                             views=self.encoder_views)

    def columns(self) -> tuple[Columns, Columns]:
        """Column names of the domain-specific and the general-domain stream."""
        return (Columns(self.domain_image_column, self.domain_caption_column, self.domain_identity_column,
                        self.domain_mask_column),
                Columns(self.general_image_column, self.general_caption_column))

    def summary(self) -> dict[str, Any]:
        """The settings that decide the trained weights, as JSON values: what ``zeroft_config.json``'s
        ``training`` and the model card record. Keys are the field names (the regularizers' unnested),
        except the few in ``_RECORDED_AS``; run bookkeeping (``_NOT_RECORDED``) is left out."""
        record: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _NOT_RECORDED:
                continue
            value = getattr(self, f.name)
            for name, item in (asdict(value).items() if is_dataclass(value) else [(f.name, value)]):
                record[_RECORDED_AS.get(name, name)] = _json_value(item)
        return record


def default_of(name: str) -> Any:
    """The default of the setting ``name``: a TrainConfig field or, for the regularizers, a Regularization field.

    Raises:
        KeyError: no such setting, or it has no default (``base_model``, ``output_dir``).
    """
    for cls in (TrainConfig, Regularization):
        for f in fields(cls):
            if f.name == name and f.name != "regularization":
                if f.default is not MISSING:
                    return f.default
                if f.default_factory is not MISSING:
                    return f.default_factory()
                raise KeyError(f"{name} is required; it has no default")
    raise KeyError(f"no setting named {name}")


def _json_value(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    return value


def _check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; not {value!r}.")


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, not {value!r}.")
    if value < low:
        raise InputError(f"{name} must be at least {low}, not {value}.")


def _check_float(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value!r}.")
    if not low <= value <= high:
        bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise InputError(f"{name} must be {bounds}, not {value:g}.")
