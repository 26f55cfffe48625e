"""IP-Adapter Plus files (issue 34): the Perceiver resampler loads into diffusers' own IPAdapterPlusImageProjection
through zeroft.adapter, is written back in the file's own key layout, and gives what stock diffusers'
load_ip_adapter gives; resamplers diffusers' converter would misread are refused with a message."""

import copy

import pytest
import torch
from zeroft.adapter import adapter_state_dict, initial_adapter_state_dict, load_object_attention
from zeroft.tiny import tiny_unet

WIDTH, HIDDEN, QUERIES, DEPTH = 40, 64, 16, 4  # token width (the encoder's), resampler width, tokens out, blocks


def plus_state_dict(unet, depth=DEPTH, hidden=HIDDEN, seed=0) -> dict[str, torch.Tensor]:
    """An IP-Adapter Plus file's tensors in its own layout (h94's ip-adapter-plus_sd15 key names), random values."""
    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    state = {"image_proj.latents": rand(1, QUERIES, hidden), "image_proj.proj_in.weight": rand(hidden, WIDTH),
             "image_proj.proj_in.bias": rand(hidden), "image_proj.proj_out.weight": rand(cross, hidden),
             "image_proj.proj_out.bias": rand(cross), "image_proj.norm_out.weight": 1 + rand(cross),
             "image_proj.norm_out.bias": rand(cross)}
    for i in range(depth):
        p = f"image_proj.layers.{i}."
        state.update({f"{p}0.norm1.weight": 1 + rand(hidden), f"{p}0.norm1.bias": rand(hidden),
                      f"{p}0.norm2.weight": 1 + rand(hidden), f"{p}0.norm2.bias": rand(hidden),
                      f"{p}0.to_q.weight": rand(hidden, hidden), f"{p}0.to_kv.weight": rand(2 * hidden, hidden),
                      f"{p}0.to_out.weight": rand(hidden, hidden), f"{p}1.0.weight": 1 + rand(hidden),
                      f"{p}1.0.bias": rand(hidden), f"{p}1.1.weight": rand(4 * hidden, hidden),
                      f"{p}1.3.weight": rand(hidden, 4 * hidden)})
    plain = initial_adapter_state_dict(unet, image_embed_dim=WIDTH, num_tokens=QUERIES)
    state.update({k: v for k, v in plain.items() if k.startswith("ip_adapter.")})
    return state


def test_a_plus_file_round_trips_in_its_own_layout():
    unet = tiny_unet()
    state = plus_state_dict(unet)
    load_object_attention(unet, state)
    written = adapter_state_dict(unet)
    assert written.keys() == state.keys()
    assert all(torch.equal(written[k], state[k]) for k in state)


def test_a_plus_file_gives_what_stock_diffusers_gives():
    from diffusers import StableDiffusionPipeline
    from zeroft.tiny import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_vae

    unet = tiny_unet()
    state = plus_state_dict(unet, seed=1)
    stock = StableDiffusionPipeline(unet=copy.deepcopy(unet), vae=tiny_vae(), text_encoder=tiny_text_encoder(),
                                    tokenizer=tiny_tokenizer(), scheduler=tiny_scheduler(), safety_checker=None,
                                    feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    nested = {"image_proj": {k[11:]: v for k, v in state.items() if k.startswith("image_proj.")},
              "ip_adapter": {k[11:]: v for k, v in state.items() if k.startswith("ip_adapter.")}}
    stock.load_ip_adapter(nested, subfolder="", weight_name="", image_encoder_folder=None)
    load_object_attention(unet, state)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 1, 5, WIDTH, generator=generator)  # (B, images, class + patches, width)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 7, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        ours = unet(latents, 10, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [tokens]}).sample
        theirs = stock.unet(latents, 10, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [tokens]}).sample
        projected = unet.encoder_hid_proj([tokens])[0]
    assert projected.shape == (2, 1, QUERIES, unet.config.cross_attention_dim)
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("depth, hidden, words", [(3, HIDDEN, "depth 3"), (DEPTH, 48, "64-wide heads")])
def test_resamplers_diffusers_would_misread_are_refused(depth, hidden, words):
    unet = tiny_unet()
    with pytest.raises(ValueError, match=words):
        load_object_attention(unet, plus_state_dict(unet, depth=depth, hidden=hidden))
