"""Reading, writing and publishing zeroft checkpoint folders (format: zeroft.config).

``load_pipeline`` turns a local folder or a Hub repo id into a ready pipeline of the class it
is given, on the chosen device, dtype and quantization; ``save_checkpoint`` writes one;
``push_to_hub`` uploads one. Which class serves a checkpoint, and the cache of loaded
pipelines, live in zeroft.loading; this module knows no pipeline class. Only safetensors are read: the base model with ``use_safetensors=True``, the
adapter and UNet as ``.safetensors`` files, the encoder through zeroft.encoder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from .adapter import adapter_state_dict, load_object_attention
from .config import ADAPTER_NAME, CONFIG_NAME, ZeroFTConfig
from .encoder import ObjectEncoder
from .errors import HubUnavailableError, InputError
from .masking import Masker
from .model_card import write_model_card
from .quantization import (check_quantization, pick_device, pick_dtype, quantization_configs,
                           quantize_object_attention_)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def is_hub_id(name: str) -> bool:
    """``org/name`` that is not an existing local path."""
    return bool(HUB_ID.match(name)) and not Path(name).exists()


def resolve_checkpoint(checkpoint: str | os.PathLike, revision: str | None = None) -> Path:
    """A local checkpoint folder for ``checkpoint``: the folder itself, or a Hub snapshot."""
    from .presets import PRESET_NAMES, preset_folder

    if str(checkpoint) in PRESET_NAMES:
        checkpoint = preset_folder(str(checkpoint))
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a zeroft checkpoint: it has no {CONFIG_NAME}")
        return path
    name = str(checkpoint)
    if not is_hub_id(name):
        raise FileNotFoundError(f"Checkpoint {name!r} is neither a local folder nor a Hub repo id (org/name).")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.md", "tokenizer*", "*.model", "merges.txt", "vocab.json"]))
    except Exception as error:
        raise HubUnavailableError(
            f"Could not download checkpoint {name!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "Check the network and the repo name, or pass a local checkpoint folder."
        ) from error


def _load_base(source: str | Path, config: ZeroFTConfig, dtype: torch.dtype, unet, unet_quant, text_quant):
    kwargs = dict(safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
                  use_safetensors=True)
    if unet is not None:
        kwargs["unet"] = unet
    if unet_quant is not None:
        from diffusers import PipelineQuantizationConfig

        mapping = {"text_encoder": text_quant} if unet is not None else {"unet": unet_quant, "text_encoder": text_quant}
        kwargs["quantization_config"] = PipelineQuantizationConfig(quant_mapping=mapping)
    try:
        return StableDiffusionPipeline.from_pretrained(str(source), dtype=dtype, revision=config.base_revision, **kwargs)
    except OSError as error:
        if isinstance(source, Path):
            raise
        raise HubUnavailableError(
            f"Could not load the base model {source!r} from the Hugging Face Hub ({error}). "
            "It is downloaded once on first use; check the network, or point base_model to a local folder."
        ) from error


def load_pipeline(
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
    """
    folder = resolve_checkpoint(checkpoint, revision)
    config = ZeroFTConfig.load(folder)
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    check_quantization(quantization, device)
    if offload and device.type != "cuda":
        raise InputError("CPU offload moves models between CPU and GPU memory; it needs a CUDA GPU.")
    unet_quant, text_quant = quantization_configs(quantization, dtype)

    unet = None
    if config.unet_tuned:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype, quantization_config=unet_quant, use_safetensors=True)
    base_source = folder / config.base_model if (folder / config.base_model).is_dir() else config.base_model
    base = _load_base(base_source, config, dtype, unet, unet_quant, text_quant)

    encoder = ObjectEncoder.from_config(config.encoder, folder).to(dtype=dtype)
    if encoder.embed_dim != config.image_embed_dim:
        raise ValueError(f"encoder gives {encoder.embed_dim}-d embeddings, the checkpoint expects {config.image_embed_dim}")
    load_object_attention(base.unet, load_file(str(folder / ADAPTER_NAME)))
    quantize_object_attention_(base.unet, quantization)

    components = {k: v for k, v in base.components.items() if k != "image_encoder"}
    pipe = pipeline_class(**components, object_encoder=encoder, zeroft_config=config, masker=Masker(masker or config.masker))
    pipe.checkpoint_folder = folder
    pipe.quantization = quantization
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _is_adapter_key(key: str) -> bool:
    return key.startswith("encoder_hid_proj.") or ".processor." in key


def save_unet_without_adapter(unet: UNet2DConditionModel, folder: str | Path) -> None:
    """Write the UNet as a plain diffusers UNet folder, leaving out the object attention.

    ``unet.save_pretrained`` would store the adapter weights inside the UNet file while its
    config forgets them, so a reload would drop them silently; they live in adapter.safetensors.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("encoder_hid_dim_type") == "ip_image_proj":
        config["encoder_hid_dim_type"] = None
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    clean = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items() if not _is_adapter_key(k)}
    save_file(clean, str(folder / UNET_WEIGHTS), metadata={"format": "pt"})


def _write_base(pipe, folder: Path, unet_tuned: bool) -> None:
    """The base pipeline's parts from memory; its UNet only when untuned (a tuned one lives in unet/)."""
    # unet=None is on purpose; diffusers would warn "self.unet=None ... cannot be saved" on every export.
    pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)
    try:
        StableDiffusionPipeline(
            vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=None, scheduler=pipe.scheduler,
            safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
        ).save_pretrained(folder, safe_serialization=True)
    finally:
        pipeline_logger.setLevel(level)
    if not unet_tuned:
        # The UNet in memory carries the object attention; write it clean and list it in the index.
        save_unet_without_adapter(pipe.unet, folder / "unet")
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index["unet"] = ["diffusers", "UNet2DConditionModel"]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def cast_weight_files(folder: str | Path, dtype: torch.dtype) -> None:
    """Rewrite every .safetensors file under ``folder`` with its floating-point tensors in ``dtype``."""
    for path in Path(folder).rglob("*.safetensors"):
        tensors = load_file(str(path))
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(cast, str(path), metadata={"format": "pt"})


def save_checkpoint(
    pipe,
    folder: str | Path,
    unet_tuned: bool | None = None,
    config: ZeroFTConfig | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``pipe`` as a zeroft checkpoint folder (see zeroft.config for the layout).

    Args:
        pipe: the pipeline to save.
        folder: destination (created; existing files are overwritten).
        unet_tuned: write the whole UNet to ``unet/`` (whole-network training); default from the
            config. A tuned checkpoint's local ``base/`` then holds no UNet of its own.
        config: the config to record; default ``pipe.zeroft_config``.
        dtype: store floating-point weights in this dtype (e.g. ``torch.float16`` halves the
            size); loading casts back to the dtype asked for.
    """
    config = config or pipe.zeroft_config
    if config is None:
        raise ValueError("saving needs a ZeroFTConfig")
    if getattr(pipe, "quantization", "none") != "none":
        raise ValueError("a quantized pipeline cannot be saved as a checkpoint; load it without quantization")
    unet_tuned = config.unet_tuned if unet_tuned is None else unet_tuned
    config = config.replace(unet_tuned=unet_tuned, image_embed_dim=pipe.object_encoder.embed_dim,
                            cross_attention_dim=pipe.unet.config.cross_attention_dim)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_hub_id(config.base_model):
        _write_base(pipe, folder / config.base_model, unet_tuned)
    if config.encoder.path is not None:
        pipe.object_encoder.save(folder / config.encoder.path)
    save_file(adapter_state_dict(pipe.unet), str(folder / ADAPTER_NAME), metadata={"format": "pt"})
    if unet_tuned:
        save_unet_without_adapter(pipe.unet, folder / "unet")
    if dtype is not None:
        cast_weight_files(folder, dtype)
    config.save(folder)
    write_model_card(folder, config)
    return folder


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "Upload zeroft checkpoint", api=None) -> str:
    """Upload a checkpoint folder to a Hub model repo (created if needed); returns the repo URL.

    ``api`` defaults to ``huggingface_hub.HfApi(token=token)``; tests pass a stand-in.
    """
    folder = Path(folder)
    ZeroFTConfig.load(folder)  # refuse to upload something that is not a checkpoint
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message)
    except Exception as error:
        raise HubUnavailableError(f"Could not upload to the Hub repo {repo_id!r} ({type(error).__name__}: {error}).") from error
    return str(url)

