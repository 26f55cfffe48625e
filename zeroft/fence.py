"""Every call zeroft makes into another library's private API, one function each, with the release it was read from.

No other module of zeroft reaches into diffusers, open_clip, transformers or rembg internals; each
function here says what it stands for and why no public API does the job. ``tests/test_fence.py``
runs each one on tiny models and fails when an upgrade changes what it relies on; pyproject.toml
caps each library below its next major release for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import nn

CHECKED = {"diffusers": "0.42.1", "open_clip_torch": "3.3.0", "transformers": "5.24.0", "rembg": "2.0.86"}


def ip_adapter_processors(unet, state_dict: dict) -> dict:
    """The UNet's attention processors with IP-Adapter's object key/value layers built from ``state_dict``
    (``{"image_proj": ..., "ip_adapter": ...}``), not yet installed.

    diffusers 0.42.1: ``UNet2DConditionModel._convert_ip_adapter_attn_to_diffusers``. Its public
    callers (``load_ip_adapter``, ``_load_ip_adapter_weights``) also cast the whole UNet to one dtype,
    which quantized UNets refuse, and build the projection only for IP-Adapter's own token counts.
    """
    return unet._convert_ip_adapter_attn_to_diffusers([state_dict], low_cpu_mem_usage=False)


def ip_adapter_plus_projection(unet, image_proj: dict):
    """diffusers' ``IPAdapterPlusImageProjection`` (the Perceiver resampler of IP-Adapter Plus) loaded from the
    ``image_proj`` part of a Plus file in IP-Adapter's own key layout (``latents``, ``proj_in``, ``layers.{i}.0.to_kv``,
    ...).

    diffusers 0.42.1: ``UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers``, the key conversion
    ``load_ip_adapter`` uses; its public callers also cast the whole UNet to one dtype (see above). It assumes depth 4
    and head width 64, which zeroft.adapter checks before calling it.
    """
    return unet._convert_ip_adapter_image_proj_to_diffusers(image_proj, low_cpu_mem_usage=False)


def sdxl_time_ids(pipe, height: int, width: int, dtype: torch.dtype, projection_dim: int | None) -> torch.Tensor:
    """SDXL's size conditions (1, 6) for an image generated whole at ``height`` x ``width``: original size, crop
    (0, 0), target size, as ``StableDiffusionXLPipeline.__call__`` builds them.

    diffusers 0.42.1: ``StableDiffusionXLPipeline._get_add_time_ids``, which also checks the UNet's
    embedding width against the text encoder's projection; no public method returns them.
    """
    return pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=dtype,
                                  text_encoder_projection_dim=projection_dim)


def open_clip_vision_tower(model_cfg: dict) -> nn.Module:
    """The image tower alone of an open_clip model config, with fresh weights.

    open_clip 3.3.0: ``open_clip.model._build_vision_tower``, the function its own ``CLIP`` uses;
    the public ``create_model`` builds the text tower too (half of ViT-H/14's weights, unused here)
    and warns "initialized randomly" before zeroft loads the weights.
    """
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"], model_cfg.get("quick_gelu", False))


def transformers_key_names(model: nn.Module, keys: Iterable[str]) -> dict[str, str]:
    """file key -> model key, renamed as transformers' own loader renames them.

    transformers 5.24.0: ``conversion_mapping.get_model_conversion_mapping`` and
    ``core_model_loading.rename_source_key``, applied in the order ``from_pretrained`` applies them
    (transformers 5 changed some layouts, e.g. ``CLIPTextModel`` lost its ``text_model.`` level, and
    renames the keys of files written before). No public function renames keys without loading.
    A key that needs a weight *conversion* (tensors merged or split) cannot be streamed: ValueError.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: no renamings
        return {key: key for key in keys}
    mapping = get_model_conversion_mapping(model)
    renamings = [entry for entry in mapping if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in mapping if isinstance(entry, WeightConverter)]
    meta_state = model.state_dict()
    prefix = model.base_model_prefix
    names = {}
    for key in keys:
        renamed, converted_by = rename_source_key(key, renamings, converters, prefix, meta_state)
        if renamed not in meta_state and key in meta_state:  # as transformers does: maybe only a prefix to add
            renamed, converted_by = rename_source_key(key, [], [], base_model_prefix=prefix, meta_state_dict=meta_state)
        if converted_by is not None:
            raise ValueError(f"{key!r} needs transformers' weight conversion ({converted_by}); load this model "
                             "with from_pretrained instead of streaming it.")
        names[key] = renamed
    return names


def rembg_model_file(model: str) -> Path | None:
    """Where rembg would find ``model``'s ONNX file on this machine without downloading it, or None.

    rembg 2.0.86: the session class's ``resolve_existing`` (``U2NET_HOME``, else ``~/.u2net``, and
    its other folders), found through ``rembg.sessions.sessions_class``; rembg's public ``new_session``
    downloads a missing file instead of saying it is missing. None too for a model rembg does not know.
    """
    try:
        from rembg.sessions import sessions_class
    except ImportError:
        return None
    session = next((c for c in sessions_class if c.name() == model), None)
    found = session.resolve_existing(f"{model}.onnx") if session is not None else None
    return Path(found) if found is not None else None


def rembg_knows(model: str) -> bool:
    """Whether the installed rembg has a session class for ``model`` (same internals as :func:`rembg_model_file`)."""
    try:
        from rembg.sessions import sessions_class
    except ImportError:
        return False
    return any(c.name() == model for c in sessions_class)


def flux_unpack_latents(latents: torch.Tensor, height: int, width: int, vae_scale_factor: int) -> torch.Tensor:
    """FLUX's packed latents (B, h/2 · w/2, 4C) back to the VAE's grid (B, C, h, w), for an output of ``height`` x
    ``width`` pixels.

    diffusers 0.42.1: ``FluxPipeline._unpack_latents`` (a static method), the inverse of the packing its public
    ``prepare_latents`` does; no public method decodes without running the whole pipeline.
    """
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(latents, height, width, vae_scale_factor)


def flux_pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """The VAE's latents (B, C, h, w) packed into FLUX's 2 x 2 patches (B, h/2 · w/2, 4C), what its transformer takes.

    diffusers 0.42.1: ``FluxPipeline._pack_latents`` (a static method); its public ``prepare_latents`` packs only the
    noise it draws itself, and training packs the noised image latents.
    """
    from diffusers import FluxPipeline

    batch, channels, height, width = latents.shape
    return FluxPipeline._pack_latents(latents, batch, channels, height, width)
