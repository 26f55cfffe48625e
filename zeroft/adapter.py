"""Decoupled object cross-attention in a diffusers UNet, in IP-Adapter's layout (a FLUX.1 transformer's:
zeroft.adapter_flux, which the functions here hand it to).

The paper inserts extra attention modules that attend to the object embedding (Jia et al.,
2023, sec. 3.2). zeroft realises them as decoupled cross-attention (Ye et al., 2023,
IP-Adapter): every UNet cross-attention layer gets its own key/value projections for object
tokens, and a projection maps the (B, D) image embedding to ``num_tokens`` tokens of the
UNet's cross-attention width. diffusers' own IP-Adapter processors do the attention, so no
attention code lives here, and the weights use IP-Adapter's key layout:

    image_proj.proj.weight / proj.bias / norm.weight / norm.bias
    ip_adapter.{1,3,5,...}.to_k_ip.weight / to_v_ip.weight

(numbered over ``unet.attn_processors`` in order, odd numbers for the cross-attention
entries), which plain diffusers loads with ``pipe.load_ip_adapter``.

IP-Adapter **Plus** files replace ``image_proj.proj/norm`` by a Perceiver resampler from the encoder's patch
tokens (``image_proj.latents``, ``proj_in``, ``layers.{i}.0.to_q/to_kv/to_out/norm1/norm2``,
``layers.{i}.1.{0,1,3}``, ``proj_out``, ``norm_out``): loaded into diffusers' own
``IPAdapterPlusImageProjection`` and written back in the same layout (:func:`adapter_state_dict`).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection, MultiIPAdapterImageProjection

from .adapter_flux import (FluxIPAdapterAttnProcessor, flux_adapter_state_dict, initial_flux_adapter_state_dict,
                           is_flux, load_flux_object_attention)
from .config import is_plus_adapter
from .fence import ip_adapter_plus_projection, ip_adapter_processors

PLUS_DEPTH, PLUS_HEAD_WIDTH = 4, 64  # what diffusers' converter of Plus files assumes (zeroft.fence)

IP_PROCESSORS = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0, FluxIPAdapterAttnProcessor)


def _cross_attention_layers(unet: UNet2DConditionModel) -> list[str]:
    """Names of the UNet's cross-attention processors (attn2), in diffusers' numbering order (a Plus resampler's own
    attention, under ``encoder_hid_proj``, is not one of them)."""
    return [name for name in unet.attn_processors if not name.endswith("attn1.processor") and "motion_modules" not in name
            and not name.startswith("encoder_hid_proj.")]


def _attention_module(unet: UNet2DConditionModel, processor_name: str):
    return unet.get_submodule(processor_name[: -len(".processor")])


def object_token_width(denoiser) -> int:
    """The width object tokens are projected to: the UNet's cross-attention width (FLUX: its text tokens' width,
    ``joint_attention_dim``), what zeroft_config.json records as ``cross_attention_dim``."""
    return denoiser.config.joint_attention_dim if is_flux(denoiser) else denoiser.config.cross_attention_dim


def has_object_attention(unet: UNet2DConditionModel) -> bool:
    return any(isinstance(p, IP_PROCESSORS) for p in unet.attn_processors.values())


def initial_adapter_state_dict(
    unet: UNet2DConditionModel, image_embed_dim: int, num_tokens: int = 4, seed: int = 0, projection: str = "linear",
    resampler_width: int = 768,
) -> dict[str, torch.Tensor]:
    """Fresh adapter weights: object key/value copied from the text ones, a random projection.

    Starting the object key/value from the text key/value (as IP-Adapter does) lets object
    tokens, which the projection places in the text tokens' space, be attended to sensibly
    from the first training step.

    Args:
        projection: "linear" (IP-Adapter: ``image_embed_dim`` is the pooled embedding's width) or "plus" (IP-Adapter
            Plus: diffusers' ``IPAdapterPlusImageProjection``, depth 4 and 64-wide heads, at its own initialisation,
            from tokens ``image_embed_dim`` wide to ``num_tokens`` queries; ``resampler_width`` its inner width, 768
            as in h94's SD1.5 Plus file).
    """
    if is_flux(unet):
        if projection != "linear":
            raise ValueError("FLUX object attention takes the pooled embedding (the XLabs layout): projection 'linear'")
        return initial_flux_adapter_state_dict(unet, image_embed_dim, num_tokens, seed)
    cross_dim = unet.config.cross_attention_dim
    if projection == "plus":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = IPAdapterPlusImageProjection(embed_dims=image_embed_dim, output_dims=cross_dim,
                                                 hidden_dims=resampler_width, depth=PLUS_DEPTH,
                                                 dim_head=PLUS_HEAD_WIDTH, heads=resampler_width // PLUS_HEAD_WIDTH,
                                                 num_queries=num_tokens)
        state = {f"image_proj.{k}": v.detach().clone() for k, v in _plus_state_dict(layer).items()}
    else:
        generator = torch.Generator().manual_seed(seed)
        proj = torch.nn.Linear(image_embed_dim, num_tokens * cross_dim)
        bound = 1.0 / image_embed_dim**0.5  # nn.Linear's default init, drawn from our own generator
        state = {
            "image_proj.proj.weight": (torch.rand(proj.weight.shape, generator=generator) * 2 - 1) * bound,
            "image_proj.proj.bias": (torch.rand(proj.bias.shape, generator=generator) * 2 - 1) * bound,
            "image_proj.norm.weight": torch.ones(cross_dim),
            "image_proj.norm.bias": torch.zeros(cross_dim),
        }
    for index, name in enumerate(_cross_attention_layers(unet)):
        attention = _attention_module(unet, name)
        key = 2 * index + 1
        state[f"ip_adapter.{key}.to_k_ip.weight"] = attention.to_k.weight.detach().float().cpu().clone()
        state[f"ip_adapter.{key}.to_v_ip.weight"] = attention.to_v.weight.detach().float().cpu().clone()
    return state


def load_object_attention(unet: UNet2DConditionModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Install IP-Adapter processors and the projection into ``unet`` and load ``state_dict``.

    Args:
        unet: any SD-family UNet with cross-attention.
        state_dict: flat dict in IP-Adapter layout (see the module docstring).
    """
    if is_flux(unet):
        return load_flux_object_attention(unet, state_dict)
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in state_dict.items():
        group, _, rest = key.partition(".")
        if group not in nested:
            raise ValueError(f"unexpected adapter weight {key!r} (expected image_proj.* or ip_adapter.*)")
        nested[group][rest] = value
    plus = is_plus_adapter(state_dict)
    proj = nested["image_proj"].get("proj.weight")
    if plus:
        check_plus_projection(nested["image_proj"])
    elif proj is None:
        raise ValueError("adapter weights lack image_proj.proj.weight (plain IP-Adapter) and image_proj.latents "
                         "(IP-Adapter Plus): not an IP-Adapter file")
    cross_dim = nested["image_proj"]["norm_out.weight" if plus else "norm.weight"].shape[0]
    if cross_dim != unet.config.cross_attention_dim:
        raise ValueError(
            f"adapter was made for cross_attention_dim {cross_dim}, this UNet has {unet.config.cross_attention_dim}"
        )
    expected = len(_cross_attention_layers(unet))
    if len(nested["ip_adapter"]) != 2 * expected:
        raise ValueError(f"adapter has {len(nested['ip_adapter']) // 2} attention layers, this UNet has {expected}")
    # The steps of diffusers' `unet._load_ip_adapter_weights`, minus its final `unet.to(dtype)`,
    # which quantized UNets refuse: the new modules are moved on their own instead.
    reference = unet.conv_in.weight  # convolutions are never quantized: the compute dtype and device
    num_tokens = nested["image_proj"]["latents"].shape[1] if plus else proj.shape[0] // cross_dim
    unet.encoder_hid_proj = None
    processors = ip_adapter_processors(unet, nested)
    for processor in processors.values():
        if isinstance(processor, IP_PROCESSORS):
            processor.to(device=reference.device, dtype=reference.dtype)
            processor.num_tokens = [num_tokens]
    unet.set_attn_processor(processors)
    if plus:
        layer = ip_adapter_plus_projection(unet, nested["image_proj"])
    else:  # diffusers' converter assumes IP-Adapter's 4 tokens for this layout; build the projection here.
        layer = ImageProjection(proj.shape[1], cross_dim, num_tokens)
        layer.load_state_dict({k.replace("proj.", "image_embeds."): v for k, v in nested["image_proj"].items()})
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([layer]).to(device=reference.device, dtype=reference.dtype)
    unet.config.encoder_hid_dim_type = "ip_image_proj"


def check_plus_projection(image_proj: dict[str, torch.Tensor]) -> None:
    """Refuse, with a message, a Plus resampler diffusers' converter would misread: depth other than 4, head width
    other than 64."""
    depth = len({key.split(".")[1] for key in image_proj if key.startswith("layers.")})
    hidden = image_proj["latents"].shape[-1]
    query = image_proj.get("layers.0.0.to_q.weight")
    inner = query.shape[0] if query is not None else None
    if depth != PLUS_DEPTH:
        raise ValueError(f"this IP-Adapter Plus resampler has depth {depth}; diffusers (and so zeroft) read only "
                         f"depth {PLUS_DEPTH}")
    if inner is None or inner % PLUS_HEAD_WIDTH or hidden % PLUS_HEAD_WIDTH:
        raise ValueError(f"this IP-Adapter Plus resampler's attention width {inner} is not a whole number of "
                         f"{PLUS_HEAD_WIDTH}-wide heads, which diffusers (and so zeroft) assume")


def _plus_state_dict(layer: IPAdapterPlusImageProjection) -> dict[str, torch.Tensor]:
    """diffusers' resampler weights under IP-Adapter Plus's own key names (the inverse of diffusers' conversion)."""
    state = {}
    for key, value in layer.state_dict().items():
        parts = key.split(".")
        if parts[0] != "layers":
            state[key] = value
            continue
        block, rest = parts[1], ".".join(parts[2:])
        if rest in ("attn.to_k.weight", "attn.to_v.weight"):
            continue  # joined as to_kv below
        renamed = {"ln0.weight": "0.norm1.weight", "ln0.bias": "0.norm1.bias", "ln1.weight": "0.norm2.weight",
                   "ln1.bias": "0.norm2.bias", "attn.to_q.weight": "0.to_q.weight",
                   "attn.to_out.0.weight": "0.to_out.weight", "ff.0.weight": "1.0.weight", "ff.0.bias": "1.0.bias",
                   "ff.1.net.0.proj.weight": "1.1.weight", "ff.1.net.2.weight": "1.3.weight"}
        if rest not in renamed:
            raise ValueError(f"unexpected resampler weight {key!r}")
        state[f"layers.{block}.{renamed[rest]}"] = value
    for block, module in enumerate(layer.layers):
        state[f"layers.{block}.0.to_kv.weight"] = torch.cat([module.attn.to_k.weight, module.attn.to_v.weight])
    return state


def uses_patch_tokens(unet: UNet2DConditionModel) -> bool:
    """True when ``unet``'s object projection is a Plus resampler, which takes the encoder's patch tokens."""
    hid = getattr(unet, "encoder_hid_proj", None)
    layers = getattr(hid, "image_projection_layers", None) or []
    return any(isinstance(layer, IPAdapterPlusImageProjection) for layer in layers)


def install_object_attention(
    unet: UNet2DConditionModel, image_embed_dim: int, num_tokens: int = 4, seed: int = 0, projection: str = "linear",
    resampler_width: int = 768,
) -> None:
    """Add fresh, trainable object attention to ``unet`` (see :func:`initial_adapter_state_dict`).

    Example:
        >>> from zeroft.tiny import tiny_unet
        >>> unet = tiny_unet()
        >>> install_object_attention(unet, image_embed_dim=16)
        >>> sorted(adapter_state_dict(unet))[:2]
        ['image_proj.norm.bias', 'image_proj.norm.weight']
    """
    load_object_attention(unet, initial_adapter_state_dict(unet, image_embed_dim, num_tokens, seed, projection,
                                                           resampler_width))


def adapter_state_dict(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """The object-attention weights of ``unet`` in IP-Adapter layout (contiguous CPU tensors)."""
    if is_flux(unet):
        return flux_adapter_state_dict(unet)
    if not has_object_attention(unet):
        raise ValueError("this UNet has no object attention installed")
    layer = unet.encoder_hid_proj.image_projection_layers[0]
    if isinstance(layer, IPAdapterPlusImageProjection):
        state = {f"image_proj.{key}": value for key, value in _plus_state_dict(layer).items()}
    else:
        state = {
            "image_proj.proj.weight": layer.image_embeds.weight,
            "image_proj.proj.bias": layer.image_embeds.bias,
            "image_proj.norm.weight": layer.norm.weight,
            "image_proj.norm.bias": layer.norm.bias,
        }
    processors = unet.attn_processors
    for index, name in enumerate(_cross_attention_layers(unet)):
        processor = processors[name]
        state[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = processor.to_k_ip[0].weight
        state[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"] = processor.to_v_ip[0].weight
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def adapter_parameters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    """The trainable object-attention parameters: projection + every to_k_ip / to_v_ip."""
    params = list(unet.encoder_hid_proj.parameters())
    for processor in unet.attn_processors.values():
        if isinstance(processor, IP_PROCESSORS):
            params += list(processor.parameters())
    return params


def set_object_scale(unet: UNet2DConditionModel, scale: float) -> None:
    """Scale of the object-attention output in every layer (0 = the plain text-to-image UNet)."""
    for processor in unet.attn_processors.values():
        if isinstance(processor, IP_PROCESSORS):
            processor.scale = [scale]
