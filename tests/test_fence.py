"""zeroft.fence, the one module that calls other libraries' private APIs: each function run on tiny models, so an
upgrade that changes what it relies on fails here, named, rather than somewhere inside a generation."""

from importlib.metadata import version

import pytest
import torch
from torch import nn

from zeroft import fence
from zeroft.adapter import initial_adapter_state_dict
from zeroft.tiny import TINY_OPEN_CLIP, tiny_sdxl_base_pipeline, tiny_unet


@pytest.mark.parametrize("package", sorted(fence.CHECKED))
def test_each_fenced_library_is_the_major_release_it_was_checked_on(package):
    assert version(package).split(".")[0] == fence.CHECKED[package].split(".")[0]


def test_ip_adapter_processors_carry_the_files_object_key_values():
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    unet = tiny_unet()
    flat = initial_adapter_state_dict(unet, image_embed_dim=16, num_tokens=4, seed=0)
    nested = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        group, _, rest = key.partition(".")
        nested[group][rest] = value
    processors = fence.ip_adapter_processors(unet, nested)
    object_layers = [p for p in processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert len(object_layers) == sum(1 for name in unet.attn_processors if name.endswith("attn2.processor"))
    assert torch.equal(object_layers[0].to_k_ip[0].weight, flat["ip_adapter.1.to_k_ip.weight"])


def test_sdxl_time_ids_are_size_crop_size():
    pipe = tiny_sdxl_base_pipeline()
    ids = fence.sdxl_time_ids(pipe, 48, 64, torch.float32, pipe.text_encoder_2.config.projection_dim)
    assert ids.tolist() == [[48.0, 64.0, 0.0, 0.0, 48.0, 64.0]]


def test_the_vision_tower_is_open_clips_own_visual():
    import open_clip

    tower = fence.open_clip_vision_tower(TINY_OPEN_CLIP)
    clip = open_clip.CLIP(TINY_OPEN_CLIP["embed_dim"], TINY_OPEN_CLIP["vision_cfg"], TINY_OPEN_CLIP["text_cfg"])
    assert type(tower) is type(clip.visual)
    assert {k: v.shape for k, v in tower.state_dict().items()} == {k: v.shape for k, v in clip.visual.state_dict().items()}


def test_transformers_renames_the_keys_of_an_older_clip_text_file():
    """transformers 5 dropped CLIPTextModel's ``text_model.`` level and renames older files' keys when loading."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=64, max_position_embeddings=8)
    with torch.device("meta"):
        model = CLIPTextModel(config)
    current = list(model.state_dict())
    older = [f"text_model.{key}" for key in current]
    assert not any(key.startswith("text_model.") for key in current)  # the level transformers 5 dropped
    names = fence.transformers_key_names(model, older)
    assert sorted(names.values()) == sorted(current)


def test_rembg_finds_a_model_file_where_its_own_rule_looks(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    assert fence.rembg_knows("u2net") and not fence.rembg_knows("no-such-model")
    assert fence.rembg_model_file("u2net") is None
    (tmp_path / "u2net.onnx").write_bytes(b"onnx")
    assert fence.rembg_model_file("u2net") == tmp_path / "u2net.onnx"


def test_a_plus_files_resampler_becomes_diffusers_own():
    """diffusers' Plus key conversion: IP-Adapter Plus's layout into IPAdapterPlusImageProjection, strictly."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    from test_adapter_plus import QUERIES, plus_state_dict

    unet = tiny_unet()
    image_proj = {k[11:]: v for k, v in plus_state_dict(unet).items() if k.startswith("image_proj.")}
    layer = fence.ip_adapter_plus_projection(unet, image_proj)
    assert isinstance(layer, IPAdapterPlusImageProjection) and layer.latents.shape[1] == QUERIES
    assert torch.equal(layer.layers[0].attn.to_k.weight, image_proj["layers.0.0.to_kv.weight"].chunk(2)[0])


def test_flux_unpack_latents_undoes_the_public_packing():
    """FluxPipeline.prepare_latents packs (1, C, h, w) noise into 2 x 2 patches; the fence's unpacking gives it back."""
    from zeroft.tiny import tiny_flux_base_pipeline

    pipe = tiny_flux_base_pipeline()
    channels = pipe.transformer.config.in_channels // 4
    packed, _ = pipe.prepare_latents(1, channels, 64, 64, torch.float32, torch.device("cpu"),
                                     torch.Generator().manual_seed(0))
    side = 64 // pipe.vae_scale_factor
    assert packed.shape == (1, (side // 2) ** 2, channels * 4)
    expected = torch.randn((1, channels, side, side), generator=torch.Generator().manual_seed(0))
    assert torch.equal(fence.flux_unpack_latents(packed, 64, 64, pipe.vae_scale_factor), expected)
