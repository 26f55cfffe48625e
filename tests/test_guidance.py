"""Two-weight guidance: equivalence with stock diffusers (SD1.5 and SDXL), exact reductions, the branch algebra."""

import itertools

import numpy as np
import pytest
import torch
from zeroft import ZeroFTConfig
from zeroft.backbones import get_backbone
from zeroft.pipeline import combine_guidance, needed_branches

STEPS = 3


BACKBONES = {"sd": ("tiny_checkpoint", "tiny_pipe"), "sdxl": ("tiny_sdxl_checkpoint", "tiny_sdxl_pipe")}


@pytest.fixture(params=list(BACKBONES))
def family(request):
    """(checkpoint folder, loaded pipeline) of each backbone: SD1.5 and SDXL share these invariants."""
    checkpoint, pipe = BACKBONES[request.param]
    return request.param, request.getfixturevalue(checkpoint), request.getfixturevalue(pipe)


def _stock_pipeline(checkpoint, with_adapter: bool):
    """The checkpoint's base in its family's stock diffusers pipeline, with the exported adapter if asked."""
    backbone = get_backbone(ZeroFTConfig.load(checkpoint).backbone)
    pipe = backbone.base_class().from_pretrained(checkpoint / "base", **backbone.base_arguments())
    if with_adapter:
        pipe.load_ip_adapter(str(checkpoint), subfolder="", weight_name="adapter.safetensors", image_encoder_folder=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(pipe, seed=0, n=1):
    shape = (n, pipe.unet.config.in_channels, 64 // pipe.vae_scale_factor, 64 // pipe.vae_scale_factor)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_equal_weights_reproduce_diffusers_ip_adapter(family, photo):
    """w_text = w_obj = w is plain classifier-free guidance with IP-Adapter, guidance_scale = w (SD1.5 and SDXL)."""
    _, checkpoint, pipe = family
    embeds = pipe.encode_object(photo)[0]
    latents = _latents(pipe)
    ours = pipe("a red square", image_embeds=embeds, text_guidance=4.0, object_guidance=4.0,
                num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    stock = _stock_pipeline(checkpoint, with_adapter=True)
    reference = stock("a red square", ip_adapter_image_embeds=[torch.cat([torch.zeros_like(embeds), embeds])[:, None]],
                      guidance_scale=4.0, num_inference_steps=STEPS, latents=latents.clone(), output_type="np",
                      height=64, width=64).images
    assert np.abs(ours - reference).max() < 1e-4


NEGATIVE = {"sd": None, "sdxl": "blurry"}  # SDXL: a non-empty negative prompt, not its all-zeros unconditional


def test_object_weight_zero_and_adapter_scale_zero_is_the_base_model(family, photo):
    name, checkpoint, pipe = family
    latents = _latents(pipe, seed=3)
    base = _stock_pipeline(checkpoint, with_adapter=False)
    reference = base("a red square", negative_prompt=NEGATIVE[name], guidance_scale=5.0, num_inference_steps=STEPS,
                     latents=latents.clone(), output_type="np", height=64, width=64).images
    pipe.set_object_scale(0.0)
    try:
        ours = pipe("a red square", negative_prompt=NEGATIVE[name], object_image=photo, text_guidance=5.0,
                    object_guidance=0.0, num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    finally:
        pipe.set_object_scale(1.0)
    assert np.array_equal(ours, reference)


def test_object_weight_zero_ignores_the_photo(tiny_pipe, photo, other_photo):
    kwargs = dict(text_guidance=5.0, object_guidance=0.0, num_inference_steps=2, seed=1, output_type="np")
    a = tiny_pipe("a red square", object_image=photo, **kwargs).images
    b = tiny_pipe("a red square", object_image=other_photo, **kwargs).images
    assert np.array_equal(a, b)


def test_object_weight_changes_the_output_with_the_photo(tiny_pipe, photo, other_photo):
    kwargs = dict(text_guidance=5.0, object_guidance=5.0, num_inference_steps=2, seed=1, output_type="np")
    a = tiny_pipe("a red square", object_image=photo, **kwargs).images
    b = tiny_pipe("a red square", object_image=other_photo, **kwargs).images
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("w_text,w_obj", [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (7.5, 7.5), (7.5, 0.0), (0.0, 3.0),
                                          (1.0, 4.0), (5.0, 2.0), (2.0, 5.0), (30.0, 0.5)])
def test_skipping_zero_weight_branches_keeps_the_formula(w_text, w_obj):
    """ε̂ from the needed branches only equals the full three-branch formula."""
    generator = torch.Generator().manual_seed(0)
    eps = {name: torch.randn(2, 4, 8, 8, generator=generator) for name in ("uncond", "text", "object")}
    full = eps["uncond"] + w_text * (eps["text"] - eps["uncond"]) + w_obj * (eps["object"] - eps["text"])
    used = {name: eps[name] for name in needed_branches(w_text, w_obj)}
    # A branch may be skipped only where its coefficient in ε̂ is zero.
    for name, coefficient in (("uncond", 1 - w_text), ("text", w_text - w_obj), ("object", w_obj)):
        if name not in used:
            assert coefficient == 0
    assert torch.allclose(combine_guidance(used, w_text, w_obj), full, atol=1e-5)


def test_branch_count_is_minimal():
    assert needed_branches(7.5, 7.5) == ["uncond", "object"]
    assert needed_branches(7.5, 0.0) == ["uncond", "text"]
    assert needed_branches(7.5, 3.0) == ["uncond", "text", "object"]
    assert needed_branches(1.0, 1.0) == ["object"]
    for w_text, w_obj in itertools.product([0.0, 1.0, 2.5], repeat=2):
        assert 1 <= len(needed_branches(w_text, w_obj)) <= 3


def test_images_are_reproducible_one_by_one(tiny_pipe, photo):
    """Image i of a batch with seed s is the single image of seed s + i."""
    batch = tiny_pipe("a red square", object_image=photo, num_images=2, seed=10, num_inference_steps=2, output_type="np")
    single = tiny_pipe("a red square", object_image=photo, num_images=1, seed=11, num_inference_steps=2, output_type="np")
    assert batch.seeds == [10, 11]
    assert np.abs(batch.images[1] - single.images[0]).max() < 1e-5


def test_a_batch_of_prompts_and_objects_equals_single_calls(tiny_pipe, photo, other_photo):
    embeds = torch.cat([tiny_pipe.encode_object(photo)[0], tiny_pipe.encode_object(other_photo)[0]])
    kwargs = dict(text_guidance=4.0, object_guidance=2.0, num_inference_steps=2, output_type="np")
    batch = tiny_pipe(["a red square", "a green square"], image_embeds=embeds, seed=20, **kwargs).images
    first = tiny_pipe("a red square", image_embeds=embeds[:1], seed=20, **kwargs).images
    second = tiny_pipe("a green square", image_embeds=embeds[1:], seed=21, **kwargs).images
    assert np.abs(batch[0] - first[0]).max() < 1e-5 and np.abs(batch[1] - second[0]).max() < 1e-5
