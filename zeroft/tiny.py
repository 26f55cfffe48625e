"""Tiny, real, randomly initialised components for tests, demos and benchmarks.

Every class is the real one (diffusers ``UNet2DConditionModel``, ``AutoencoderKL``,
transformers ``CLIPTextModel``, open_clip ``CLIP``) at toy sizes, seeded, built from configs
in well under a second, with no file or network access. ``make_tiny_checkpoint`` writes a
complete, self-contained zeroft checkpoint folder from them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .config import EncoderConfig, GenerationDefaults, ZeroFTConfig
from .encoder import ObjectEncoder, save_open_clip_folder

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1},
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def byte_level_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: the 256 byte symbols, with and without ``</w>``.

    Uses GPT-2's byte-to-unicode table, so that every string tokenizes (one token per byte).
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return vocab


def tiny_tokenizer(max_length: int = 32) -> CLIPTokenizer:
    return CLIPTokenizer(vocab=byte_level_vocab(), merges=[], model_max_length=max_length)


def tiny_text_encoder(seed: int = 0, hidden_size: int = 32, max_length: int = 32) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=514, hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=512, eos_token_id=513,
        pad_token_id=513, projection_dim=hidden_size,
    )
    return CLIPTextModel(config).eval()


def tiny_unet(seed: int = 0, cross_attention_dim: int = 32, block_out_channels=(32, 64), sample_size: int = 16) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=tuple(block_out_channels), layers_per_block=1, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=8,
    )


def tiny_sdxl_unet(seed: int = 0, cross_attention_dim: int = 64, pooled_dim: int = 32) -> UNet2DConditionModel:
    """An SDXL-shaped UNet: size conditions and a pooled text embedding added to the time embedding,
    linear projections, two transformer layers in the cross-attention block (as diffusers' SDXL tests)."""
    torch.manual_seed(seed)
    time_embed_dim = 8
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,  # 6 size numbers + pooled text
        cross_attention_dim=cross_attention_dim, norm_num_groups=8,
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=32,
    )


def tiny_scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )


def tiny_open_clip(seed: int = 0, layers: int | None = None):
    """A whole (image + text) open_clip model at toy size, random weights; ``layers``: image-tower blocks (1 unless
    given; patch tokens, IP-Adapter Plus's input, need 2)."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**tiny_open_clip_config(layers)).eval()


def tiny_open_clip_config(layers: int | None = None) -> dict:
    if layers is None:
        return TINY_OPEN_CLIP
    return {**TINY_OPEN_CLIP, "vision_cfg": {**TINY_OPEN_CLIP["vision_cfg"], "layers": layers}}


def tiny_encoder(seed: int = 0, config: EncoderConfig | None = None) -> ObjectEncoder:
    config = config or EncoderConfig(model_name="tiny", pretrained=None, path="encoder")
    return ObjectEncoder(tiny_open_clip(seed).visual, config, CLIP_MEAN, CLIP_STD)


def tiny_base_pipeline(seed: int = 0):
    """A tiny StableDiffusionPipeline (64x64 images with a 2-block VAE: latents 32x32)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tiny_tokenizer(),
        unet=tiny_unet(seed), scheduler=tiny_scheduler(), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False,
    )


def tiny_sdxl_base_pipeline(seed: int = 0):
    """A tiny StableDiffusionXLPipeline: two text encoders (the second with a projection, whose
    pooled output conditions the UNet) whose 32-wide tokens are joined into 64, 64x64 images."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    second = tiny_text_encoder(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(second.config).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")  # SDXL base's sampler settings
    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), text_encoder_2=text_encoder_2,
        tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(), unet=tiny_sdxl_unet(seed), scheduler=scheduler,
        add_watermarker=False,
    )


def tiny_t5_tokenizer():
    """A T5 tokenizer (a unigram model over printable ASCII, SentencePiece's ▁ word marks, <pad> 0, </s> 1) built
    without any download: FLUX.1's tokenizer_2 at toy size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(chr(c), -3.0) for c in range(33, 127)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0)


def tiny_flux_base_pipeline(seed: int = 0, guidance_embeds: bool = True):
    """A tiny FluxPipeline with FLUX.1's structure (as diffusers' own FLUX tests build it): one double-stream and one
    single-stream block, 32-wide text tokens from a tiny T5 and a 32-wide pooled CLIP text embedding, a 2-block VAE
    with one latent channel (packed 2 x 2: 4 channels), FLUX.1-dev's scheduler settings. ``guidance_embeds`` False
    is FLUX.1-schnell's layout (no embedded guidance)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=guidance_embeds)
    torch.manual_seed(seed)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    torch.manual_seed(seed)
    t5 = T5EncoderModel(T5Config(vocab_size=600, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
                                 eos_token_id=1)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_text_encoder(seed), tokenizer=tiny_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=tiny_t5_tokenizer(), transformer=transformer)


def make_tiny_checkpoint(folder: str | Path, seed: int = 0, masker: str = "border", num_tokens: int = 4,
                         backbone: str = "sd", projection: str = "linear") -> Path:
    """Write a complete, self-contained zeroft checkpoint with random tiny weights.

    Args:
        backbone: "sd" (a tiny Stable Diffusion 1.x), "sdxl" (a tiny SDXL: :func:`tiny_sdxl_base_pipeline`) or "flux"
            (a tiny FLUX.1: :func:`tiny_flux_base_pipeline`).
        projection: "linear" (IP-Adapter) or "plus" (IP-Adapter Plus: a 2-block encoder's patch tokens through a
            64-wide resampler to ``num_tokens`` queries).

    Example:
        >>> import tempfile
        >>> from zeroft import ZeroFTPipeline
        >>> folder = make_tiny_checkpoint(tempfile.mkdtemp())
        >>> pipe = ZeroFTPipeline.from_pretrained(folder)
        >>> pipe.unet.config.cross_attention_dim
        32
    """
    from .adapter import install_object_attention, object_token_width
    from .loading import PIPELINE_CLASSES

    folder = Path(folder)
    base = {"sdxl": tiny_sdxl_base_pipeline, "flux": tiny_flux_base_pipeline}.get(backbone, tiny_base_pipeline)(seed)
    denoiser = base.transformer if backbone == "flux" else base.unet
    plus = projection == "plus"
    model_cfg = tiny_open_clip_config(2 if plus else None)
    save_open_clip_folder(tiny_open_clip(seed, 2 if plus else None), model_cfg, folder / "encoder", CLIP_MEAN, CLIP_STD)
    config = ZeroFTConfig(
        base_model="base",
        backbone=backbone,
        encoder=EncoderConfig(model_name="tiny", pretrained=None, path="encoder"),
        projection=projection,
        image_embed_dim=model_cfg["vision_cfg"]["width"] if plus else model_cfg["embed_dim"],
        cross_attention_dim=object_token_width(denoiser),
        num_tokens=num_tokens,
        masker=masker,
        defaults=GenerationDefaults(text_guidance=5.0, object_guidance=3.0, steps=4, height=64, width=64),
        licenses={"all": "Apache-2.0 (random weights made by zeroft.tiny)"},
    )
    encoder = ObjectEncoder.from_config(config.encoder, folder)
    install_object_attention(denoiser, config.image_embed_dim, num_tokens, seed=seed, projection=projection,
                             resampler_width=64)
    pipe = PIPELINE_CLASSES[backbone](**base.components, object_encoder=encoder, zeroft_config=config)
    pipe.save_pretrained(folder)
    return folder
