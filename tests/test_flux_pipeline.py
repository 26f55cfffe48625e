"""FLUX.1 as a backbone (issue 35): ZeroFTFluxPipeline on tiny parts with FLUX.1's structure against stock diffusers
(FluxPipeline + load_ip_adapter + true_cfg_scale), ϕ as diffusers makes it, object weight 0 as plain FLUX, the
XLabs file layout, save/load and the caches."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from zeroft import InputError, ZeroFTFluxPipeline, load_pipeline
from zeroft.adapter import adapter_state_dict, load_object_attention
from zeroft.guidance import noise_levels
from zeroft.tiny import CLIP_MEAN, CLIP_STD, make_tiny_checkpoint

from conftest import square_photo

STEPS = 3


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("flux"), backbone="flux")
    pipe = load_pipeline(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe


def _stock(folder, adapter=True):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(folder / "base")
    if adapter:
        pipe.load_ip_adapter(str(folder), subfolder="", weight_name="adapter.safetensors",
                             image_encoder_pretrained_model_name_or_path=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(seed=0):
    return torch.randn((1, (64 // 4) ** 2, 4), generator=torch.Generator().manual_seed(seed))  # packed: (1, 16·16, 4)


def test_the_checkpoint_is_a_flux_one_with_the_adapter_in_the_layout_diffusers_reads(flux):
    folder, pipe = flux
    assert isinstance(pipe, ZeroFTFluxPipeline) and pipe.denoiser is pipe.transformer
    config = json.loads((folder / "zeroft_config.json").read_text())
    assert config["backbone"] == "flux" and config["cross_attention_dim"] == 32  # T5 tokens' width
    keys = set(load_file(str(folder / "adapter.safetensors")))
    assert {"image_proj.proj.weight", "image_proj.norm.bias", "ip_adapter.0.to_k_ip.weight",
            "ip_adapter.0.to_v_ip.bias"} <= keys
    index = json.loads((folder / "base" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline" and index["transformer"] == ["diffusers", "FluxTransformer2DModel"]


def test_fresh_object_keys_start_as_the_text_path_where_the_t5_width_differs_from_the_blocks():
    """FLUX.1: T5 tokens 4096 wide, blocks 3072: to_k_ip (4096 -> 3072) starts as add_k_proj after context_embedder
    (neither alone has its shape), and the transformer runs with those weights installed."""
    from diffusers import FluxTransformer2DModel

    from zeroft.adapter import initial_adapter_state_dict

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=2, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    state = initial_adapter_state_dict(transformer, 12, num_tokens=3)
    assert state["ip_adapter.1.to_k_ip.weight"].shape == (32, 24) and state["image_proj.proj.weight"].shape == (72, 12)
    tokens = torch.randn(5, 24)
    block = transformer.transformer_blocks[1].attn
    with torch.no_grad():
        for ours, theirs in (("to_k_ip", block.add_k_proj), ("to_v_ip", block.add_v_proj)):
            expected = theirs(transformer.context_embedder(tokens))
            got = tokens @ state[f"ip_adapter.1.{ours}.weight"].T + state[f"ip_adapter.1.{ours}.bias"]
            assert torch.allclose(got, expected, atol=1e-5)
    load_object_attention(transformer, state)
    with torch.no_grad():
        out = transformer(hidden_states=torch.randn(1, 16, 4), encoder_hidden_states=torch.randn(1, 7, 24),
                          pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.5]),
                          img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(7, 3),
                          joint_attention_kwargs={"ip_adapter_image_embeds": [torch.randn(1, 1, 12)]}).sample
    assert out.shape == (1, 16, 4) and torch.isfinite(out).all()


def test_the_null_object_is_diffusers_black_image(flux):
    """ϕ: what FluxPipeline encodes for a missing negative IP image, np.zeros through CLIPImageProcessor."""
    from transformers import CLIPImageProcessor

    _, pipe = flux
    size = pipe.object_encoder.image_size
    processor = CLIPImageProcessor(size=size, crop_size=size, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    pixels = processor(np.zeros((64, 64, 3), dtype=np.uint8), return_tensors="pt").pixel_values
    assert torch.allclose(pipe.null_object(), pipe.object_encoder(pixels), atol=1e-6)


def test_equal_weights_and_a_negative_prompt_reproduce_stock_true_cfg(flux):
    folder, pipe = flux
    embeds = pipe.encode_object(square_photo())[0]
    latents = _latents()
    ours = pipe("a red square", image_embeds=embeds, negative_prompt="blurry", text_guidance=4.0, object_guidance=4.0,
                embedded_guidance=3.5, num_inference_steps=STEPS, latents=latents.clone(), output_type="np")
    stock = _stock(folder)
    theirs = stock("a red square", negative_prompt="blurry", true_cfg_scale=4.0, guidance_scale=3.5,
                   ip_adapter_image_embeds=[embeds[:, None]], negative_ip_adapter_image_embeds=[pipe.null_object()[:, None]],
                   num_inference_steps=STEPS, latents=latents.clone(), height=64, width=64, output_type="np").images
    assert np.abs(ours.images - theirs).max() < 1e-4
    assert ours.settings.embedded_guidance == 3.5
    # w_text = w_obj = 1: one branch, v_g(c,o), as stock FLUX with the adapter and no true guidance
    one = pipe("a red square", image_embeds=embeds, text_guidance=1.0, object_guidance=1.0, embedded_guidance=2.0,
               num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    theirs = stock("a red square", guidance_scale=2.0, ip_adapter_image_embeds=[embeds[:, None]],
                   negative_ip_adapter_image_embeds=[pipe.null_object()[:, None]],  # unused without true guidance
                   num_inference_steps=STEPS, latents=latents.clone(), height=64, width=64, output_type="np").images
    assert np.abs(one - theirs).max() < 1e-4


def test_object_weight_0_with_the_adapter_off_is_plain_flux(flux):
    folder, pipe = flux
    latents = _latents(1)
    pipe.set_object_scale(0.0)
    try:
        ours = pipe("a red square", object_image=square_photo(), text_guidance=1.0, object_guidance=0.0,
                    num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    finally:
        pipe.set_object_scale(1.0)
    theirs = _stock(folder, adapter=False)("a red square", guidance_scale=3.5, num_inference_steps=STEPS,
                                           latents=latents.clone(), height=64, width=64, output_type="np").images
    assert np.array_equal(ours, theirs)


def test_unequal_weights_batch_three_branches_and_a_saved_checkpoint_reloads(flux, tmp_path):
    _, pipe = flux
    calls, photo = pipe.encoder_calls, square_photo(colour=(30, 220, 30))  # a photo no other test encoded
    kwargs = dict(num_images=2, text_guidance=3.0, object_guidance=1.5, num_inference_steps=2, seed=0, output_type="np")
    out = pipe(["a red square", "a blue square"], object_image=photo, **kwargs)
    again = pipe(["a red square", "a blue square"], object_image=photo, **kwargs)  # from the caches
    given = pipe(["a red square", "a blue square"], image_embeds=out.image_embeds, **kwargs)
    assert pipe.encoder_calls == calls + 1 and out.images.shape == (4, 64, 64, 3)
    assert np.array_equal(out.images, again.images) and np.array_equal(out.images, given.images)
    pipe.save_pretrained(tmp_path / "again")
    reloaded = load_pipeline(tmp_path / "again", device="cpu")
    reloaded.set_progress_bar_config(disable=True)
    same = reloaded(["a red square", "a blue square"], object_image=photo, **kwargs)
    assert np.abs(same.images - out.images).max() < 1e-5


def test_t5_encodes_each_text_once_so_a_shared_negative_prompt_is_not_encoded_per_prompt(flux):
    _, pipe = flux
    pipe.prompt_cache.clear()
    pipe.text_cache.clear()
    calls = []
    hook = pipe.text_encoder_2.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = pipe.encode_prompt_cached("a red square", "")
        pipe.encode_prompt_cached("a blue square", "")
        pipe.encode_prompt_cached("a red square", "blurry")
    finally:
        hook.remove()
    assert len(calls) == 4  # "a red square", "", "a blue square", "blurry"
    fresh = pipe._encode_text("a red square")
    assert all(torch.equal(first[0][k], fresh[k]) for k in fresh)  # cached = uncached


def test_the_xlabs_layout_loads_to_the_same_weights(flux):
    """XLabs' own key names (ip_adapter_proj_model.*, double_blocks.{i}.processor.ip_adapter_double_stream_*) are
    renamed as diffusers renames them."""
    from zeroft.tiny import tiny_flux_base_pipeline

    _, pipe = flux
    ours = adapter_state_dict(pipe.transformer)
    xlabs = {}
    for key, value in ours.items():
        key = key.replace("image_proj.", "ip_adapter_proj_model.")
        if key.startswith("ip_adapter."):
            _, block, part, kind = key.split(".")
            kind_name = {"to_k_ip": "ip_adapter_double_stream_k_proj", "to_v_ip": "ip_adapter_double_stream_v_proj"}
            key = f"double_blocks.{block}.processor.{kind_name[part]}.{kind}"
        xlabs[key] = value
    transformer = tiny_flux_base_pipeline().transformer
    load_object_attention(transformer, xlabs)
    loaded = adapter_state_dict(transformer)
    assert loaded.keys() == ours.keys() and all(torch.equal(loaded[k], ours[k]) for k in ours)
    with pytest.raises(ValueError, match="double-stream blocks"):
        load_object_attention(tiny_flux_base_pipeline().transformer,
                              {k: v for k, v in ours.items() if not k.startswith("ip_adapter.0.")})


def test_intervals_read_flow_matching_noise_levels_and_sizes_fit_the_packed_grid(flux, monkeypatch):
    _, pipe = flux
    timesteps = pipe._set_timesteps(4, torch.device("cpu"), 64, 64)
    sigmas = noise_levels(pipe.scheduler, timesteps)
    flow = (timesteps.double() / 1000).tolist()
    assert sigmas[0] == float("inf") and all(abs(s - f / (1 - f)) < 1e-9 for s, f in zip(sigmas[1:], flow[1:]))
    assert sigmas == sorted(sigmas, reverse=True)
    out = pipe("a red square", object_image=square_photo(), num_inference_steps=4, seed=0, output_type="np",
               guidance_interval=(0.5, 5.0))
    assert out.settings.guidance_interval == [0.5, 5.0]
    monkeypatch.setattr(pipe, "vae_scale_factor", 8)  # FLUX.1's VAE: packed latents need multiples of 16 px
    with pytest.raises(InputError, match="multiple of 16"):
        pipe._check_grid(1000, 1024)


def test_the_cli_sets_flux_embedded_guidance_and_refuses_it_elsewhere(flux, tmp_path, capsys):
    from zeroft.cli import main

    folder, _ = flux
    square_photo().save(tmp_path / "photo.png")
    common = ["--image", str(tmp_path / "photo.png"), "--prompt", "a toy", "--steps", "2", "--seed", "0",
              "--masker", "border", "--device", "cpu"]
    assert main(["generate", "--checkpoint", str(folder), *common, "--embedded-guidance", "5",
                 "--out", str(tmp_path / "out")]) == 0
    settings = json.loads((tmp_path / "out" / "zeroft_001.json").read_text())
    assert settings["embedded_guidance"] == 5.0 and settings["text_guidance"] == 5.0  # the tiny checkpoint's w_text
    sd = make_tiny_checkpoint(tmp_path / "sd")
    assert main(["generate", "--checkpoint", str(sd), *common, "--embedded-guidance", "5",
                 "--out", str(tmp_path / "sd-out")]) == 2
    assert "FLUX.1-dev's distilled guidance" in capsys.readouterr().err and not (tmp_path / "sd-out").exists()
    assert main(["generate", "--checkpoint", str(folder), *common, "--embedded-guidance", "-1",
                 "--out", str(tmp_path / "bad")]) == 2


def test_the_app_shows_embedded_guidance_for_flux_only_and_passes_it_on(flux):
    from webapp.catalogue import Checkpoints
    from webapp.handlers import Handlers

    import zeroft

    folder, _ = flux
    handlers = Handlers(Checkpoints(str(folder)))
    assert handlers.model_view(folder.name)[-1]["visible"] is True
    assert handlers.model_view("zeroft-toy")[-1]["visible"] is False
    editor = {"background": zeroft.load_image(square_photo()), "layers": [], "composite": None}
    _, settings, _ = handlers.generate(editor, "one object", "", 1.0, 2.0, 2, 1, 0, False, 64, "none", folder.name,
                                       None, None, None, 6.0, progress=lambda *args, **kwargs: None)
    assert settings["embedded_guidance"] == 6.0 and settings["object_guidance"] == 2.0
