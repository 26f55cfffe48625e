"""The FLUX.1 preset end to end offline (issue 35): black-forest-labs/FLUX.1-dev, XLabs-AI/flux-ip-adapter-v2 and
openai/clip-vit-large-patch14 at toy size under their real file names (tests/hubcache.py), read through
huggingface_hub, diffusers and open_clip as from the Hub."""

import logging

import numpy as np
import pytest
import torch
from hubcache import (FLUX_DEV_REPO, OPENAI_CLIP_REPO, XLABS_REPO, hub, serve_repos, tiny_open_clip_names,  # noqa: F401
                      write_flux_repos)  # (fixtures used by name)

import zeroft
from zeroft import HubUnavailableError, ZeroFTFluxPipeline
from zeroft.adapter import adapter_state_dict
from zeroft.presets import FLUX_DEV_LICENCE_NOTE, IP_ADAPTER_FLUX_DEV

from conftest import square_photo


@pytest.fixture(scope="module")
def flux_repos(tmp_path_factory):
    return write_flux_repos(tmp_path_factory.mktemp("flux-repos"))


@pytest.fixture
def flux_hub(hub, flux_repos, tiny_open_clip_names, tmp_path, monkeypatch):
    return serve_repos(hub, flux_repos, tmp_path / "zeroft-home", monkeypatch)


def test_the_preset_names_its_files_licences_and_defaults():
    config = IP_ADAPTER_FLUX_DEV.zeroft_config(image_embed_dim=768, cross_attention_dim=4096, num_tokens=16)
    assert config.backbone == "flux" and config.defaults.height == config.defaults.width == 1024
    assert (config.defaults.text_guidance, config.defaults.object_guidance, config.defaults.steps) == (1.0, 1.0, 28)
    assert "Non-Commercial" in config.licenses["base_model"] and "Non-Commercial" in config.licenses["adapter"]
    assert config.licenses["encoder"] == "MIT (OpenAI CLIP ViT-L/14)" and config.licenses["note"] == FLUX_DEV_LICENCE_NOTE
    files = IP_ADAPTER_FLUX_DEV.hub_files()
    assert files[XLABS_REPO] == ["ip_adapter.safetensors"] and files[OPENAI_CLIP_REPO] == ["model.safetensors"]
    base = files[FLUX_DEV_REPO]
    assert "transformer/config.json" in base and "tokenizer_2/spiece.model" in base
    assert not any(pattern.startswith("unet/") for pattern in base)


def test_the_preset_loads_offline_says_its_licence_and_generates(flux_hub, caplog):
    with caplog.at_level(logging.WARNING, logger="zeroft.presets"):
        pipe = zeroft.load_pipeline("ip-adapter-flux-dev", device="cpu", masker="border")
    assert FLUX_DEV_LICENCE_NOTE in caplog.text  # said at the first download
    assert isinstance(pipe, ZeroFTFluxPipeline) and pipe.native_size == 1024
    assert "Non-Commercial" in (zeroft.presets.preset_folder("ip-adapter-flux-dev") / "README.md").read_text()
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red square on a beach", object_image=square_photo(size=96), object_guidance=2.0,
               num_inference_steps=2, height=256, width=256, seed=0, output_type="np")
    assert out.images.shape == (1, 256, 256, 3) and np.isfinite(out.images).all()
    assert out.settings.embedded_guidance == 3.5 and out.settings.text_guidance == 1.0


def test_the_encoder_is_openais_tower_as_diffusers_runs_it(flux_hub):
    """The whole-CLIP transformers file read as open_clip's ViT-L-14-quickgelu tower gives the image_embeds
    transformers' CLIPVisionModelWithProjection gives (what stock FluxPipeline.encode_image feeds the adapter)."""
    from transformers import CLIPVisionModelWithProjection

    pipe = zeroft.load_pipeline("ip-adapter-flux-dev", device="cpu")
    theirs = CLIPVisionModelWithProjection.from_pretrained(flux_hub[OPENAI_CLIP_REPO]).eval()
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(pipe.object_encoder.visual(pixels), theirs(pixel_values=pixels).image_embeds, atol=1e-5)


def test_an_xlabs_file_loads_as_stock_diffusers_loads_it(flux_hub, tmp_path):
    """The same file through zeroft and through FluxPipeline.load_ip_adapter gives the same object attention. A v1
    file (4 tokens): diffusers tells v2's 16 tokens from v1's 4 only by 65536 = 16 x 4096 projection rows, FLUX's real
    width, so at toy width it would misread the preset's v2 file, which zeroft reads from its shape (16 tokens)."""
    from diffusers import FluxPipeline
    from safetensors.torch import save_file

    from hubcache import xlabs_state
    from zeroft.adapter import load_object_attention

    pipe = zeroft.load_pipeline("ip-adapter-flux-dev", device="cpu", masker="border")
    width = pipe.transformer.config.joint_attention_dim
    assert adapter_state_dict(pipe.transformer)["image_proj.proj.weight"].shape[0] == 16 * width  # the preset: v2
    v1 = xlabs_state(pipe.transformer, pipe.object_encoder.embed_dim, 4, seed=9)
    save_file(v1, str(tmp_path / "ip_adapter.safetensors"))
    stock = FluxPipeline.from_pretrained(FLUX_DEV_REPO)
    stock.load_ip_adapter(str(tmp_path), weight_name="ip_adapter.safetensors",
                          image_encoder_pretrained_model_name_or_path=None)
    load_object_attention(pipe.transformer, v1)
    ours, theirs = adapter_state_dict(pipe.transformer), adapter_state_dict(stock.transformer)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_missing_base_says_the_repository_is_gated(hub, flux_repos, tiny_open_clip_names, tmp_path, monkeypatch):
    serve_repos(hub, flux_repos, tmp_path / "zeroft-home", monkeypatch, leave_out=(FLUX_DEV_REPO,))
    with pytest.raises(HubUnavailableError, match="gated repository: accept its licence"):
        zeroft.load_pipeline("ip-adapter-flux-dev", device="cpu")


def test_the_app_says_the_licence_and_what_the_weights_mean_on_flux():
    from webapp import zerogpu
    from webapp.handlers import FLUX_WEIGHTS_NOTE, model_note
    from zeroft.presets import IP_ADAPTER_SDXL_VIT_H

    note = model_note(IP_ADAPTER_FLUX_DEV.zeroft_config(768, 4096, 16))
    assert FLUX_DEV_LICENCE_NOTE in note and FLUX_WEIGHTS_NOTE in note
    assert model_note(IP_ADAPTER_SDXL_VIT_H.zeroft_config(1024, 2048, 4)) == "" and model_note(None) == ""
    request = dict(steps=28, num_images=1, size=1024, native_size=1024)
    assert zerogpu.gpu_seconds(backbone="flux", **request) > zerogpu.gpu_seconds(backbone="sdxl", **request)


def test_the_preset_generates_with_int8_on_a_cpu(flux_hub):
    """int8 (torchao, as it loads) quantizes the transformer, both text encoders, the object encoder and the object
    attention; bitsandbytes is refused on a CPU with a message."""
    pipe = zeroft.load_pipeline("ip-adapter-flux-dev", device="cpu", masker="border", quantization="int8")
    layer = pipe.transformer.encoder_hid_proj.image_projection_layers[0]
    assert type(layer.image_embeds.weight).__name__ == "Int8Tensor" and pipe.quantization == "int8"
    assert type(pipe.transformer.transformer_blocks[0].attn.to_q.weight).__name__ == "Int8Tensor"
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a toy on a beach", object_image=square_photo(size=96), object_guidance=2.0, num_inference_steps=2,
               height=256, width=256, seed=0)
    assert out.images[0].size == (256, 256) and out.settings.quantization == "int8"
    with pytest.raises(zeroft.InputError, match="needs an NVIDIA GPU"):
        zeroft.load_pipeline("ip-adapter-flux-dev", device="cpu", masker="border", quantization="bnb-4bit")
