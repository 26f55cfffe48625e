"""The object encoder's patch tokens (issue 34's first part): the hidden states before the last block, as
transformers gives them to IP-Adapter Plus, from zeroft's open_clip tower on the same weights."""

import pytest
import torch
from zeroft.config import EncoderConfig
from zeroft.encoder import ObjectEncoder, build_visual, load_visual_weights

from hubcache import TINY_VIT_BIGG, TINY_VIT_H, tiny_clip_vision


@pytest.mark.parametrize("model_cfg", [TINY_VIT_H, TINY_VIT_BIGG], ids=["vit-h", "vit-bigg"])
def test_tokens_are_transformers_penultimate_hidden_states(model_cfg, tmp_path):
    vision = tiny_clip_vision({**model_cfg, "vision_cfg": {**model_cfg["vision_cfg"], "layers": 3}}, seed=2)
    vision.save_pretrained(tmp_path, safe_serialization=True)
    visual = build_visual({**model_cfg, "vision_cfg": {**model_cfg["vision_cfg"], "layers": 3}})
    load_visual_weights(visual, tmp_path / "model.safetensors")
    encoder = ObjectEncoder(visual, EncoderConfig(views="none"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    tokens = encoder.tokens(pixels)
    patches = (28 // 14) ** 2
    assert tokens.shape == (2, 1 + patches, model_cfg["vision_cfg"]["width"]) == expected.shape
    assert encoder.token_width == model_cfg["vision_cfg"]["width"]
    assert torch.allclose(tokens, expected, atol=1e-5)
    with torch.no_grad():  # the pooled embedding of the same tower is unchanged by asking for tokens
        assert torch.allclose(encoder(pixels), vision(pixel_values=pixels).image_embeds, atol=1e-5)


def test_views_follow_one_another_along_the_token_axis(tmp_path):
    visual = build_visual(TINY_VIT_H)
    flip = ObjectEncoder(visual, EncoderConfig(views="flip"), (0.5,) * 3, (0.5,) * 3)
    plain = ObjectEncoder(visual, EncoderConfig(views="none"), (0.5,) * 3, (0.5,) * 3)
    pixels = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    both = flip.tokens(pixels)
    assert both.shape == (3, 2 * 5, TINY_VIT_H["vision_cfg"]["width"])
    assert torch.allclose(both[:, :5], plain.tokens(pixels), atol=1e-6)  # the photo itself first
    assert torch.allclose(both[:, 5:], plain.tokens(torch.flip(pixels, dims=(-1,))), atol=1e-6)
