"""The backbone families zeroft runs on, and what differs between them when loading and saving.

A checkpoint records its family in ``zeroft_config.json`` (``backbone``); everything that
depends on it when reading or writing a base model lives in one :class:`Backbone` record, so
zeroft.locate, zeroft.assemble, zeroft.checkpoint and train/ never branch on the family's name. The pipeline class of each
family is chosen in zeroft.loading (this module imports no pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


WEIGHT_STEMS = ("diffusion_pytorch_model", "model")  # the weight file names of diffusers' and transformers' models
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json",
                   "spiece.model")  # CLIP's BPE files; T5's SentencePiece model (FLUX.1's tokenizer_2)


@dataclass(frozen=True)
class Backbone:
    """One family of diffusers text-to-image pipelines that zeroft's object attention fits."""

    name: str  # as written in zeroft_config.json's "backbone"
    label: str  # for messages and model cards
    base_pipeline: str  # the diffusers pipeline class the base model loads as (model_index.json's _class_name)
    text_encoders: tuple[str, ...]  # quantized with the UNet; SDXL conditions on two
    tokenizers: tuple[str, ...]
    passed_as_none: tuple[str, ...]  # parts of the base zeroft never loads (its encoder is its own; no safety checker)
    base_kwargs: tuple[tuple[str, object], ...] = ()  # extra constructor/from_pretrained arguments of the base
    native_size: int = 512  # the side the family's released weights were trained at
    vae_fp32_under_fp16: bool = False  # its pipelines honour the VAE's force_upcast (SDXL's VAE overflows in fp16)
    denoiser: str = "unet"  # the base pipeline's part the object attention goes into
    denoiser_class: str = "UNet2DConditionModel"  # its diffusers class
    sample_size: int | None = None  # latent side of the default output; None: the denoiser config's sample_size

    def base_class(self):
        """The diffusers pipeline class (imported on use: diffusers' lazy module loads it then)."""
        import diffusers

        return getattr(diffusers, self.base_pipeline)

    def base_arguments(self) -> dict:
        """What the base pipeline is built or loaded with besides its parts: None for each part zeroft never
        loads, and the family's own arguments (SD: ``requires_safety_checker=False``)."""
        return {**{part: None for part in self.passed_as_none}, **dict(self.base_kwargs)}

    @property
    def weight_parts(self) -> tuple[str, ...]:
        """The networks whose safetensors weights a local base folder must hold."""
        return (self.denoiser, "vae", *self.text_encoders)

    def hub_file_patterns(self, unet_tuned: bool = False) -> list[str]:
        """The files of a Hub base model of this family that zeroft reads, as ``snapshot_download`` patterns.

        The index, the scheduler's config, the tokenizers, and each network's config and safetensors weights
        (sharded too); the UNet only when the checkpoint does not bring its own. Nothing else is fetched:
        SDXL base 1.0's ``vae_1_0/`` (335 MB), fp16 and ONNX copies and single-file checkpoints are never read.
        README.md's ``preload_from_hub`` lists the same files for the app's default (tests/test_app_gpu.py).
        """
        weights = [f"{stem}{tail}" for stem in WEIGHT_STEMS
                   for tail in (".safetensors", ".safetensors.index.json", "-*-of-*.safetensors")]
        networks = [part for part in self.weight_parts if not (part == self.denoiser and unet_tuned)]
        return (["model_index.json", "scheduler/scheduler_config.json"]
                + [f"{tokenizer}/{name}" for tokenizer in self.tokenizers for name in TOKENIZER_FILES]
                + [f"{part}/{name}" for part in networks for name in ("config.json", *weights)])


BACKBONES = {
    "sd": Backbone(
        name="sd", label="Stable Diffusion 1.x", base_pipeline="StableDiffusionPipeline",
        text_encoders=("text_encoder",), tokenizers=("tokenizer",),
        passed_as_none=("safety_checker", "feature_extractor", "image_encoder"),
        base_kwargs=(("requires_safety_checker", False),), native_size=512,
    ),
    "sdxl": Backbone(
        name="sdxl", label="Stable Diffusion XL", base_pipeline="StableDiffusionXLPipeline",
        text_encoders=("text_encoder", "text_encoder_2"), tokenizers=("tokenizer", "tokenizer_2"),
        passed_as_none=("feature_extractor", "image_encoder"), native_size=1024, vae_fp32_under_fp16=True,
    ),
    # FLUX.1 [dev] / [schnell]: a 12B transformer; text by CLIP ViT-L/14 (pooled) and T5-XXL (tokens).
    "flux": Backbone(
        name="flux", label="FLUX.1", base_pipeline="FluxPipeline",
        text_encoders=("text_encoder", "text_encoder_2"), tokenizers=("tokenizer", "tokenizer_2"),
        passed_as_none=("image_encoder", "feature_extractor"), native_size=1024,
        denoiser="transformer", denoiser_class="FluxTransformer2DModel",
        sample_size=128,  # FluxPipeline.default_sample_size: 1024 px with the 8x VAE
    ),
}


def get_backbone(name: str) -> Backbone:
    """The :class:`Backbone` called ``name``.

    Raises:
        InputError: a family zeroft does not support.
    """
    if name not in BACKBONES:
        raise InputError(f"Unknown backbone {name!r}; zeroft supports {', '.join(sorted(BACKBONES))}.")
    return BACKBONES[name]


def backbone_of_index(model_index: dict) -> Backbone:
    """The backbone of a diffusers base model, from its ``model_index.json`` contents.

    Example:
        >>> backbone_of_index({"_class_name": "StableDiffusionXLPipeline"}).name
        'sdxl'

    Raises:
        InputError: a pipeline class zeroft cannot put object attention into.
    """
    class_name = model_index.get("_class_name")
    for backbone in BACKBONES.values():
        if class_name == backbone.base_pipeline:
            return backbone
    supported = ", ".join(b.base_pipeline for b in BACKBONES.values())
    raise InputError(f"The base model is a {class_name}; zeroft builds on {supported}.")
