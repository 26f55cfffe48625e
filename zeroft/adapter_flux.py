"""Object attention in a FLUX.1 transformer, as diffusers loads the XLabs IP-Adapter.

FLUX.1's transformer has 19 double-stream blocks (image and text tokens each with their own weights, attending
jointly) and 38 single-stream ones. The XLabs adapter (XLabs-AI/flux-ip-adapter, -v2) adds object attention to the
double-stream blocks only: a projection maps the pooled CLIP ViT-L/14 image embedding (768-d) to 4 (v1) or 16 (v2)
tokens of the text encoder's width (joint_attention_dim, 4096), and every double-stream block gets its own
``to_k_ip``/``to_v_ip`` (with biases) whose attention output is added to the image stream. diffusers' own classes
do the work: ``ImageProjection`` in a ``MultiIPAdapterImageProjection``, and ``FluxIPAdapterAttnProcessor`` in each
double-stream block (diffusers 0.42.1, ``loaders/transformer_flux.py``, which this module follows without calling
its private converter).

A zeroft FLUX checkpoint writes the adapter in the layout stock ``FluxPipeline.load_ip_adapter`` reads::

    image_proj.proj.weight / proj.bias / norm.weight / norm.bias
    ip_adapter.{i}.to_k_ip.weight / to_k_ip.bias / to_v_ip.weight / to_v_ip.bias     (i: the double-stream block)

and reads that layout or XLabs' own (``ip_adapter_proj_model.*``,
``double_blocks.{i}.processor.ip_adapter_double_stream_{k,v}_proj.*``), renamed as diffusers renames it.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection
from diffusers.models.transformers.transformer_flux import FluxIPAdapterAttnProcessor, FluxTransformer2DModel

XLABS_PREFIXES = {"ip_adapter_proj_model.": "image_proj.", "double_blocks.": "ip_adapter."}


def is_flux(model) -> bool:
    """True for a FLUX.1 transformer (the denoiser of the "flux" backbone)."""
    return isinstance(model, FluxTransformer2DModel)


def flux_adapter_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` in zeroft's FLUX layout (the module docstring), from that layout or XLabs' own.

    Raises:
        ValueError: a key of neither layout.
    """
    out = {}
    for key, value in state_dict.items():
        for theirs, ours in XLABS_PREFIXES.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
        key = (key.replace("processor.", "").replace("ip_adapter_double_stream_k_proj", "to_k_ip")
               .replace("ip_adapter_double_stream_v_proj", "to_v_ip"))
        if not key.startswith(("image_proj.", "ip_adapter.")):
            raise ValueError(f"unexpected FLUX adapter weight {key!r} (expected image_proj.* / ip_adapter.*, or "
                             "XLabs' ip_adapter_proj_model.* / double_blocks.*)")
        out[key] = value
    return out


def _double_stream_processors(transformer: FluxTransformer2DModel) -> list[str]:
    """The attention processors of the double-stream blocks, in order: where object attention goes."""
    return [name for name in transformer.attn_processors if not name.startswith("single_transformer_blocks")]


def initial_flux_adapter_state_dict(transformer: FluxTransformer2DModel, image_embed_dim: int, num_tokens: int = 4,
                                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh adapter weights: every block's object key/value starts as its text key/value, a random projection at
    nn.Linear's initialisation.

    Object tokens are projected into the text encoder's space (``joint_attention_dim`` wide, T5's 4096 on FLUX.1),
    where the text tokens start; a text token reaches a block's key through ``context_embedder`` (4096 -> 3072)
    and then the block's ``add_k_proj`` (3072 -> 3072). ``to_k_ip`` (4096 -> 3072) starts as that composition,
    ``add_k_proj(context_embedder(x))``, so object tokens are keyed as text tokens would be from the first training
    step (as zeroft.adapter copies a UNet's ``to_k``/``to_v``); likewise ``to_v_ip``. On FLUX.1 the two widths
    differ, so neither projection alone has to_k_ip's shape."""
    cross_dim = transformer.config.joint_attention_dim
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / image_embed_dim**0.5
    state = {
        "image_proj.proj.weight": (torch.rand(num_tokens * cross_dim, image_embed_dim, generator=generator) * 2 - 1) * bound,
        "image_proj.proj.bias": (torch.rand(num_tokens * cross_dim, generator=generator) * 2 - 1) * bound,
        "image_proj.norm.weight": torch.ones(cross_dim),
        "image_proj.norm.bias": torch.zeros(cross_dim),
    }
    embedder = transformer.context_embedder
    w_in, b_in = embedder.weight.detach().float().cpu(), embedder.bias.detach().float().cpu()
    for index, block in enumerate(transformer.transformer_blocks):
        for ours, theirs in (("to_k_ip", block.attn.add_k_proj), ("to_v_ip", block.attn.add_v_proj)):
            weight, bias = theirs.weight.detach().float().cpu(), theirs.bias.detach().float().cpu()
            state[f"ip_adapter.{index}.{ours}.weight"] = weight @ w_in  # (inner, joint): x -> W (W_in x + b_in) + b
            state[f"ip_adapter.{index}.{ours}.bias"] = weight @ b_in + bias
    return state


def load_flux_object_attention(transformer: FluxTransformer2DModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Install diffusers' FLUX IP-Adapter processors and projection into ``transformer``, loaded from ``state_dict``
    (either layout of the module docstring).

    Raises:
        ValueError: weights that do not fit this transformer (width, block count, token count).
    """
    state = flux_adapter_layout(state_dict)
    proj = state.get("image_proj.proj.weight")
    if proj is None:
        raise ValueError("FLUX adapter weights lack image_proj.proj.weight: not an IP-Adapter file")
    cross_dim = transformer.config.joint_attention_dim
    if proj.shape[0] % cross_dim:
        raise ValueError(f"adapter projection gives {proj.shape[0]} values, not tokens of this transformer's "
                         f"text width {cross_dim}")
    num_tokens = proj.shape[0] // cross_dim
    names = _double_stream_processors(transformer)
    blocks = {int(key.split(".")[1]) for key in state if key.startswith("ip_adapter.")}
    if blocks != set(range(len(names))):
        raise ValueError(f"adapter has object attention for {len(blocks)} blocks, this transformer has {len(names)} "
                         "double-stream blocks")
    device, dtype = transformer.device, transformer.dtype  # ModelMixin's: the first floating-point parameter's
    processors = dict(transformer.attn_processors)
    for index, name in enumerate(names):
        processor = FluxIPAdapterAttnProcessor(hidden_size=transformer.inner_dim, cross_attention_dim=cross_dim,
                                               num_tokens=[num_tokens], scale=1.0)
        processor.load_state_dict({f"{part}.0.{kind}": state[f"ip_adapter.{index}.{part}.{kind}"]
                                   for part in ("to_k_ip", "to_v_ip") for kind in ("weight", "bias")})
        processors[name] = processor.to(device=device, dtype=dtype)
    transformer.set_attn_processor(processors)
    layer = ImageProjection(image_embed_dim=proj.shape[1], cross_attention_dim=cross_dim,
                            num_image_text_embeds=num_tokens)
    layer.load_state_dict({key[len("image_proj."):].replace("proj.", "image_embeds."): value
                           for key, value in state.items() if key.startswith("image_proj.")})
    transformer.encoder_hid_proj = MultiIPAdapterImageProjection([layer]).to(device=device, dtype=dtype)
    transformer.config.encoder_hid_dim_type = "ip_image_proj"


def flux_processors(transformer: FluxTransformer2DModel) -> list[FluxIPAdapterAttnProcessor]:
    """The object-attention processors installed in ``transformer``, in block order."""
    return [p for p in transformer.attn_processors.values() if isinstance(p, FluxIPAdapterAttnProcessor)]


def flux_adapter_state_dict(transformer: FluxTransformer2DModel) -> dict[str, torch.Tensor]:
    """The object-attention weights of ``transformer`` in zeroft's FLUX layout (contiguous CPU tensors)."""
    if getattr(transformer, "encoder_hid_proj", None) is None or not flux_processors(transformer):
        raise ValueError("this transformer has no object attention installed")
    layer = transformer.encoder_hid_proj.image_projection_layers[0]
    state = {"image_proj.proj.weight": layer.image_embeds.weight, "image_proj.proj.bias": layer.image_embeds.bias,
             "image_proj.norm.weight": layer.norm.weight, "image_proj.norm.bias": layer.norm.bias}
    for index, processor in enumerate(flux_processors(transformer)):
        for part in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{index}.{part}.weight"] = getattr(processor, part)[0].weight
            state[f"ip_adapter.{index}.{part}.bias"] = getattr(processor, part)[0].bias
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
