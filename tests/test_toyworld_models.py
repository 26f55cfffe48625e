"""The toy world's model variants: UNets v1, attn16 and lat32, and the VAEs they work on."""

import pytest
import torch

from toyworld.models import latent_size, make_unet, make_vae
from zeroft.errors import InputError


def test_unet_variants():
    v1, attn16 = make_unet(0), make_unet(0, "attn16")
    assert not hasattr(v1.down_blocks[0], "attentions") and len(attn16.down_blocks[0].attentions) == 1
    assert len(attn16.up_blocks[-1].attentions) == 2  # the 16×16 level, on the way up too
    assert v1.config.block_out_channels == attn16.config.block_out_channels
    with pytest.raises(InputError, match="unknown UNet variant 'big'"):
        make_unet(0, "big")


def test_the_lat32_unet_works_on_the_2x_down_vae():
    """lat32: a 32×32×4 latent grid from a VAE with one downsampling, under v1's levels; v1 keeps its 16×16×8."""
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    for variant, shape in (("v1", (2, 8, 16, 16)), ("lat32", (2, 4, 32, 32))):
        vae, unet = make_vae(0, latent_size(variant)), make_unet(0, variant)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mean
            assert latents.shape == shape and vae.decode(latents).sample.shape == pixels.shape
            out = unet(latents, torch.tensor([10, 500]), torch.randn(2, 16, 64)).sample
        assert out.shape == shape and unet.config.sample_size == shape[-1]
    assert make_unet(0, "lat32").config.block_out_channels == (32, 64, 128, 128)
    with pytest.raises(InputError, match="unknown latent size 8"):
        make_vae(0, 8)
