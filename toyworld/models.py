"""Model sizes of the toy world, chosen to train on a 2-core CPU in hours, not days.

The v1 UNet keeps attention off the 16×16 latent level: there, on a CPU, it would cost a
training step several times over (measurements: docs/performance.md, "Toy-world training steps").
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers import models as tokenizer_models
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from zeroft.errors import InputError

from .world import BACKGROUNDS, COLOURS, COUNTS, PATTERNS, SHAPES, vocabulary

MAX_TOKENS = 16  # the longest caption has 9 words, plus start and end tokens
TEXT_WIDTH = 64  # text-token width, also the UNet's cross_attention_dim
# Latent channels per latent size. At 16×16, a first build with 4 lost stripes and dots (the judge read patterns at
# 0.69 after a round trip); at 32×32, 4 channels keep them (0.955 after 3,000 steps, 16×16×8: 0.957).
LATENT_CHANNELS = {16: 8, 32: 4}
LATENT_SIZES = tuple(LATENT_CHANNELS)

# The object encoder: open_clip's ModifiedResNet. A 4-layer ViT (32 px, patch 4) trained the same
# way read held-out shapes at 0.44 with a linear probe (0.18 when the crop held two objects);
# this ResNet read them at 0.71 after 800 steps (colour and pattern: 1.00 for both).
OPEN_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": MAX_TOKENS, "vocab_size": len(vocabulary()) + 4, "width": 64, "heads": 4, "layers": 2},
}


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's vocabulary; unknown words map to [UNK]."""
    specials = ["<|startoftext|>", "<|endoftext|>", "[UNK]", "[PAD]"]
    vocab = {token: i for i, token in enumerate(specials + vocabulary())}
    tokenizer = Tokenizer(tokenizer_models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="[UNK]",
        pad_token="<|endoftext|>", model_max_length=MAX_TOKENS,
    )


def make_text_encoder(seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(vocabulary()) + 4, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=TEXT_WIDTH,
    )
    return CLIPTextModel(config)


def make_vae(seed: int, latent_size: int = 16) -> AutoencoderKL:
    """``latent_size`` 16: 64×64×3 ↔ 16×16×8, three blocks, two downsamplings (narrow blocks: (32, 64, 64) channels
    doubled the training step). 32: 64×64×3 ↔ 32×32×4, two blocks, one downsampling, for the ``lat32`` UNet (dots
    then lie 2.8–5 latents apart, not 1.4–2.5)."""
    if latent_size not in LATENT_SIZES:
        raise InputError(f"unknown latent size {latent_size}: expected one of {', '.join(map(str, LATENT_SIZES))}")
    torch.manual_seed(seed)
    blocks = (16, 32, 64) if latent_size == 16 else (16, 32)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS[latent_size], block_out_channels=blocks,
        down_block_types=("DownEncoderBlock2D",) * len(blocks), up_block_types=("UpDecoderBlock2D",) * len(blocks),
        layers_per_block=1, norm_num_groups=8, sample_size=64,
    )


UNETS = ("v1", "attn16", "lat32")


def latent_size(variant: str) -> int:
    """The latent grid a UNet variant works on (and so the VAE the build trains for it)."""
    return 32 if variant == "lat32" else 16


def make_unet(seed: int, variant: str = "v1", time_embedding_dim: int | None = None) -> UNet2DConditionModel:
    """``v1``: 6.6M parameters, cross-attention at 8×8 and 4×4 only (see the module docstring).
    ``attn16``: the same widths with self- and cross-attention at the 16×16 latent level as well, so the
    object and text tokens reach the resolution where dots and stripes are drawn (for a GPU build).
    ``lat32``: v1's levels below a new 32×32 level of 32 channels, on the 2×-down VAE's 32×32×4 latents
    (6.5M parameters; a base step costs about a third more than v1's on a CPU).
    ``time_embedding_dim``: default 4 × the first level's width (256 for v1, 128 for lat32); a lat32 model grown
    out of a v1 one keeps v1's 256 (grow.py)."""
    if variant not in UNETS:
        raise InputError(f"unknown UNet variant {variant!r}: expected one of {', '.join(UNETS)}")
    torch.manual_seed(seed)
    size = latent_size(variant)
    channels = LATENT_CHANNELS[size]
    if variant == "lat32":
        blocks, down, up = (32, 64, 128, 128), ("DownBlock2D", "DownBlock2D"), ("UpBlock2D", "UpBlock2D")
    else:
        top = variant == "attn16"
        blocks, down, up = ((64, 128, 128), ("CrossAttnDownBlock2D" if top else "DownBlock2D",),
                            ("CrossAttnUpBlock2D" if top else "UpBlock2D",))
    return UNet2DConditionModel(  # attention at the two lowest levels (8×8 and 4×4) in every variant
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=blocks, layers_per_block=1,
        down_block_types=down + ("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2 + up,
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=32, norm_num_groups=32, time_embedding_dim=time_embedding_dim,
    )


def make_scheduler() -> DDIMScheduler:
    """v-prediction: in a 15-minute trial here, ε-prediction learned no conditioning and v did."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         timestep_spacing="trailing")


HEADS = {"shape": len(SHAPES), "colour": len(COLOURS), "pattern": len(PATTERNS), "background": len(BACKGROUNDS),
         "count": len(COUNTS), "position": 9, "rotation": 4}


class Judge(nn.Module):
    """The evaluation's attribute classifier: a small CNN with one head per attribute."""

    def __init__(self):
        super().__init__()
        layers, width = [], 3
        for channels in (16, 32, 64, 128):
            layers += [nn.Conv2d(width, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.SiLU(),
                       nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.SiLU(), nn.MaxPool2d(2)]
            width = channels
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, 128·4·4)
        self.heads = nn.ModuleDict({name: nn.Linear(128 * 16, size) for name, size in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, 64, 64) in [-1, 1] → logits per attribute."""
        features = self.features(images)
        return {name: head(features) for name, head in self.heads.items()}
