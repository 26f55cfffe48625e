"""Building a ready pipeline from a zeroft checkpoint: ``assemble_pipeline`` checks every file first
(zeroft.locate), then builds the base model, the object encoder and the object attention on the chosen
device, dtype and quantization (int8 quantizes as it reads, zeroft.streaming).

The public loader is ``zeroft.load_pipeline`` (zeroft.loading), which picks the pipeline class a checkpoint
records and calls this through the class's ``from_pretrained``; this module knows no pipeline class. Only
safetensors are read: the base model with ``use_safetensors=True``, the adapter and UNet as ``.safetensors``
files, the encoder through zeroft.encoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from .adapter import load_object_attention
from .backbones import get_backbone
from .config import ADAPTER_NAME, ZeroFTConfig, is_plus_adapter
from .encoder import ObjectEncoder, build_visual, locate_encoder
from .errors import InputError
from .locate import UNET_WEIGHTS, locate_base, require_file, resolve_checkpoint
from .masking import Masker
from .memory import check_fits
from .presets import check_adapter_encoder
from .quantization import (check_quantization, pick_device, pick_dtype, quantization_configs,
                           quantize_object_attention_)

def _load_base(source: Path, config: ZeroFTConfig, dtype: torch.dtype, unet, unet_quant, text_quant,
               loaded: dict | None = None):
    backbone = get_backbone(config.backbone)
    kwargs = dict(backbone.base_arguments(), use_safetensors=True)
    kwargs.update(loaded or {})  # parts already built (int8 streaming): from_pretrained loads the rest
    if unet is not None:
        kwargs["unet"] = unet
    if unet_quant is not None:
        from diffusers import PipelineQuantizationConfig

        mapping = {part: text_quant for part in backbone.text_encoders}
        if unet is None and backbone.denoiser not in kwargs:
            mapping[backbone.denoiser] = unet_quant
        kwargs["quantization_config"] = PipelineQuantizationConfig(quant_mapping=mapping)
    return backbone.base_class().from_pretrained(str(source), dtype=dtype, **kwargs)  # a local folder (_locate_base)


def _stream_int8(folder: Path, config: ZeroFTConfig, base_source: Path, encoder_source, dtype: torch.dtype):
    """(UNet and text encoders, object encoder) quantized to int8 as they are read (zeroft.streaming).

    Full-precision weights never sit in memory whole: each Linear is quantized as soon as its weight
    is in, which keeps int8's peak near its quantized size (bench.full_size measures it).
    """
    from .streaming import load_parts_streaming, load_streaming
    from .streaming_visual import load_visual_streaming

    backbone = get_backbone(config.backbone)
    parts = backbone.text_encoders + (() if config.unet_tuned else (backbone.denoiser,))
    loaded = load_parts_streaming(base_source, parts, dtype=dtype, quantization="int8")
    if config.unet_tuned:
        loaded["unet"] = load_streaming(UNet2DConditionModel, folder, subfolder="unet", dtype=dtype, quantization="int8")
    encoder = ObjectEncoder(
        load_visual_streaming(encoder_source.model_cfg, encoder_source.weights, dtype=dtype, quantization="int8")
        if encoder_source.weights is not None else build_visual(encoder_source.model_cfg).to(dtype),
        config.encoder, encoder_source.mean, encoder_source.std, encoder_source.folder)
    return loaded, encoder


def assemble_pipeline(
    checkpoint: str | os.PathLike,
    *,
    pipeline_class: type,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    quantization: str = "none",
    offload: bool = False,
    masker: str | None = None,
    revision: str | None = None,
):
    """Load a zeroft checkpoint into a ready pipeline of ``pipeline_class``.

    Args:
        checkpoint: local checkpoint folder, or a Hub repo id (``org/name``).
        pipeline_class: :class:`~zeroft.ZeroFTPipeline` or a subclass; ``from_pretrained`` passes
            the class it was called on, so a subclass gets an instance of itself back.
        device: default CUDA if present, else MPS, else CPU.
        dtype: default fp16/bf16 on GPUs, fp32 on CPU.
        quantization: "none", "int8" (torchao, CPU or GPU), "bnb-8bit" or "bnb-4bit" (CUDA only),
            applied to the UNet and the text encoder.
        offload: keep weights on the CPU and move each model to the GPU only while it runs
            (diffusers' model CPU offload; CUDA only).
        masker: override the checkpoint's automatic masker ("border", "rembg:<model>").
        revision: Hub revision of the checkpoint.

    Raises:
        ModelUnavailableError: a file the checkpoint needs is missing (adapter, tuned UNet, local base
            model, encoder weights); checked before any model is built. (The automatic masker's model
            is checked when a photo first needs it: photos with their own mask or alpha never do.)
        HubUnavailableError: a Hub model is neither in the Hugging Face cache nor downloadable.
    """
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    check_quantization(quantization, device)
    check_fits(checkpoint, device, dtype, quantization)  # a preset too big for this CPU: before any download
    folder = resolve_checkpoint(checkpoint, revision)
    config = ZeroFTConfig.load(folder)
    served = getattr(pipeline_class, "backbone", "sd")
    if served != config.backbone:
        raise InputError(
            f"{checkpoint} is a {get_backbone(config.backbone).label} checkpoint; {pipeline_class.__name__} serves "
            f"{get_backbone(served).label}. Load it with zeroft.load_pipeline, which picks the class.")
    if offload and device.type != "cuda":
        raise InputError("CPU offload moves models between CPU and GPU memory; it needs a CUDA GPU.")
    unet_quant, text_quant = quantization_configs(quantization, dtype)

    # 1. Find every file before building anything: at full size the builds take minutes.
    require_file(folder, ADAPTER_NAME, "the object attention weights")
    check_adapter_encoder(folder / ADAPTER_NAME, config.encoder, folder)  # the commonest pairing error, before downloads
    if config.unet_tuned and get_backbone(config.backbone).denoiser != "unet":
        raise InputError(f"{checkpoint} says its whole {get_backbone(config.backbone).denoiser} is tuned; zeroft "
                         "reads tuned weights only for Stable Diffusion UNets (unet/).")
    if config.lora_weights:
        require_file(folder, config.lora_weights, "the LoRA of its denoiser")
    if config.unet_tuned:
        require_file(folder, "unet/config.json", "the tuned UNet")
        require_file(folder, f"unet/{UNET_WEIGHTS}", "the tuned UNet")
    base_source = locate_base(folder, config)
    encoder_source = locate_encoder(config.encoder, folder)
    pipe_masker = Masker(masker or config.masker)  # its model is checked when a mask is first needed

    # 2. Build; int8 quantizes as it reads, the other modes through diffusers' and transformers' loaders.
    loaded, encoder = {}, None
    if quantization == "int8":
        loaded, encoder = _stream_int8(folder, config, base_source, encoder_source, dtype)
        unet_quant = text_quant = None  # nothing is left for from_pretrained to quantize
    unet = loaded.pop("unet", None)
    if unet is None and config.unet_tuned:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype, quantization_config=unet_quant, use_safetensors=True)
    base = _load_base(base_source, config, dtype, unet, unet_quant, text_quant, loaded)

    if encoder is None:
        encoder = ObjectEncoder.from_source(encoder_source, config.encoder).to(dtype=dtype)
    width = encoder.width(config.projection)
    if width != config.image_embed_dim:
        what = "tokens" if config.projection == "plus" else "embeddings"
        raise ValueError(f"encoder gives {width}-d {what}, the checkpoint expects {config.image_embed_dim}")
    adapter = load_file(str(folder / ADAPTER_NAME))
    if is_plus_adapter(adapter) != (config.projection == "plus"):
        kind = "an IP-Adapter Plus (resampler)" if is_plus_adapter(adapter) else "a plain IP-Adapter"
        raise ValueError(f"{folder / ADAPTER_NAME} is {kind} file, but the checkpoint says its projection is "
                         f"{config.projection!r}")
    denoiser = getattr(base, get_backbone(config.backbone).denoiser)
    load_object_attention(denoiser, adapter)
    quantize_object_attention_(denoiser, quantization)

    components = {k: v for k, v in base.components.items() if k != "image_encoder"}
    pipe = pipeline_class(**components, object_encoder=encoder, zeroft_config=config, masker=pipe_masker,
                          quantization=quantization)
    if config.lora_weights:  # the denoiser's LoRA, trained with the adapter (FLUX.1)
        from importlib.util import find_spec

        if find_spec("peft") is None:  # diffusers' LoRA loading needs it
            raise InputError(f"{checkpoint} carries a LoRA of its {get_backbone(config.backbone).denoiser} "
                             f"({config.lora_weights}); loading it needs peft: pip install peft")
        pipe.load_lora_weights(str(folder), weight_name=config.lora_weights)
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe
