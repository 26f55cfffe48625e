"""Object attention in IP-Adapter layout: installation, initialisation, round trips, diffusers loading."""

import pytest
import torch

from zeroft import adapter_state_dict, install_object_attention, load_object_attention
from zeroft.adapter import adapter_parameters, has_object_attention
from zeroft.tiny import tiny_unet


def test_layout_and_initialisation():
    unet = tiny_unet()
    cross_layers = [m for n, m in unet.named_modules() if n.endswith("attn2")]
    install_object_attention(unet, image_embed_dim=16, num_tokens=4)
    state = adapter_state_dict(unet)
    assert {k for k in state if k.startswith("image_proj.")} == {
        "image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight", "image_proj.norm.bias"}
    ip_keys = sorted(k for k in state if k.startswith("ip_adapter."))
    assert len(ip_keys) == 2 * len(cross_layers)
    assert {int(k.split(".")[1]) for k in ip_keys} == {2 * i + 1 for i in range(len(cross_layers))}
    # object key/value start from the text key/value of the same layer
    for index, attention in enumerate(cross_layers):
        assert torch.equal(state[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"], attention.to_k.weight)
        assert torch.equal(state[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"], attention.to_v.weight)
    assert state["image_proj.proj.weight"].shape == (4 * unet.config.cross_attention_dim, 16)


def test_state_dict_round_trip_and_other_token_counts():
    unet = tiny_unet()
    install_object_attention(unet, image_embed_dim=16, num_tokens=8, seed=5)
    state = adapter_state_dict(unet)
    fresh = tiny_unet()
    load_object_attention(fresh, state)
    assert has_object_attention(fresh)
    again = adapter_state_dict(fresh)
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    tokens = fresh.encoder_hid_proj([torch.randn(2, 1, 16)])[0]
    assert tokens.shape == (2, 1, 8, fresh.config.cross_attention_dim)


def test_adapter_parameters_train():
    unet = tiny_unet()
    install_object_attention(unet, image_embed_dim=16)
    unet.requires_grad_(False)
    params = adapter_parameters(unet)
    for p in params:
        p.requires_grad_(True)
    latents = torch.randn(1, 4, 16, 16)
    text = torch.randn(1, 7, unet.config.cross_attention_dim)
    out = unet(latents, 10, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [torch.randn(1, 1, 16)]}).sample
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_wrong_unet_is_refused():
    unet = tiny_unet()
    install_object_attention(unet, image_embed_dim=16)
    state = adapter_state_dict(unet)
    other = tiny_unet(cross_attention_dim=48)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        load_object_attention(other, state)
