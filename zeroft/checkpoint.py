"""Writing and publishing zeroft checkpoint folders (format: zeroft.config): ``save_checkpoint`` writes one,
``push_to_hub`` uploads one. Reading is zeroft.locate (finding the files) and zeroft.assemble (building a
pipeline); the public loader is ``zeroft.load_pipeline``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from .adapter import adapter_state_dict, object_token_width, uses_patch_tokens
from .backbones import Backbone, get_backbone
from .config import ADAPTER_NAME, ZeroFTConfig
from .errors import HubUnavailableError
from .locate import UNET_WEIGHTS, is_hub_id
from .model_card import write_model_card

LORA_NAME = "pytorch_lora_weights.safetensors"  # diffusers' load_lora_weights default file name


def _is_adapter_key(key: str) -> bool:
    return key.startswith("encoder_hid_proj.") or ".processor." in key


def has_lora(model) -> bool:
    """Whether ``model`` carries a peft LoRA (diffusers' ``add_adapter`` / ``load_lora_weights``)."""
    return bool(getattr(model, "peft_config", None))


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
    clean = {k.replace(".base_layer.", "."): v.detach().cpu().contiguous() for k, v in unet.state_dict().items()
             if not _is_adapter_key(k) and ".lora_" not in k}  # a LoRA's frozen base weights, without the LoRA
    save_file(clean, str(folder / UNET_WEIGHTS), metadata={"format": "pt"})


def _write_base(pipe, folder: Path, unet_tuned: bool, backbone: Backbone) -> None:
    """The base pipeline's parts from memory; its UNet only when untuned (a tuned one lives in unet/)."""
    parts = {name: getattr(pipe, name) for name in ("vae", *backbone.text_encoders, *backbone.tokenizers, "scheduler")}
    # unet=None (FLUX: transformer=None) is on purpose; diffusers would warn "self.unet=None ... cannot be saved"
    # on every export.
    pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)
    try:
        base = backbone.base_class()(**parts, **{backbone.denoiser: None}, **backbone.base_arguments())
        base.save_pretrained(folder, safe_serialization=True)
    finally:
        pipeline_logger.setLevel(level)
    if not unet_tuned:
        # The UNet in memory carries the object attention; write it clean and list it in the index.
        save_unet_without_adapter(pipe.denoiser, folder / backbone.denoiser)
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index[backbone.denoiser] = ["diffusers", backbone.denoiser_class]
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
    backbone = get_backbone(getattr(pipe, "backbone", "sd"))
    if unet_tuned and backbone.denoiser != "unet":
        raise ValueError(f"a {backbone.label} checkpoint keeps its base {backbone.denoiser}: only the object attention "
                         "is saved (unet_tuned is for Stable Diffusion UNets)")
    projection = "plus" if uses_patch_tokens(pipe.denoiser) else "linear"
    config = config.replace(unet_tuned=unet_tuned, projection=projection,
                            image_embed_dim=pipe.object_encoder.width(projection),
                            cross_attention_dim=object_token_width(pipe.denoiser), backbone=backbone.name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_hub_id(config.base_model):
        _write_base(pipe, folder / config.base_model, unet_tuned, backbone)
    if config.encoder.path is not None:
        pipe.object_encoder.save(folder / config.encoder.path)
    save_file(adapter_state_dict(pipe.denoiser), str(folder / ADAPTER_NAME), metadata={"format": "pt"})
    if has_lora(pipe.denoiser):  # in the file stock diffusers' load_lora_weights reads
        from peft.utils import get_peft_model_state_dict

        backbone.base_class().save_lora_weights(
            folder, weight_name=LORA_NAME, safe_serialization=True,
            **{f"{backbone.denoiser}_lora_layers": get_peft_model_state_dict(pipe.denoiser)})
        config = config.replace(lora_weights=LORA_NAME)
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
