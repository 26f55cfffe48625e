"""SDXL as a backbone: ZeroFTXLPipeline's class, round trips, caches, int8, the CLI (its equivalence with
stock diffusers SDXL is in test_guidance.py, beside SD1.5's).

Tiny real SDXL components (zeroft.tiny.tiny_sdxl_base_pipeline: the "text_time" UNet, two text
encoders, the second with a projection) built from configs, as diffusers' own SDXL tests do.
"""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from conftest import FakeClock, square_photo
from zeroft import InputError, ZeroFTConfig, ZeroFTPipeline, ZeroFTXLPipeline, load_pipeline, save_checkpoint
from zeroft.cli import main
from zeroft.guidance import batch_branches
from zeroft.timing import StepTimes
from zeroft.config import FORMAT_VERSION



def test_load_pipeline_picks_the_sdxl_class_and_the_sd_class_refuses_it(tiny_sdxl_checkpoint, tiny_sdxl_pipe):
    assert isinstance(tiny_sdxl_pipe, ZeroFTXLPipeline) and isinstance(tiny_sdxl_pipe, StableDiffusionXLPipeline)
    assert ZeroFTConfig.load(tiny_sdxl_checkpoint).backbone == "sdxl"
    assert tiny_sdxl_pipe.unet.config.cross_attention_dim == 64  # both text encoders' tokens, joined
    with pytest.raises(InputError, match="Stable Diffusion XL checkpoint.*zeroft.load_pipeline"):
        ZeroFTPipeline.from_pretrained(tiny_sdxl_checkpoint)


def test_a_version_1_config_without_backbone_is_stable_diffusion(tiny_checkpoint):
    data = json.loads((tiny_checkpoint / "zeroft_config.json").read_text())
    data.pop("backbone")
    data["format_version"] = 1
    config = ZeroFTConfig.from_dict(data)
    assert config.backbone == "sd" and json.loads(config.to_json())["format_version"] == FORMAT_VERSION
    with pytest.raises(InputError, match="Unknown backbone"):
        ZeroFTConfig.from_dict({**data, "backbone": "sd3"})


def test_each_branch_carries_its_own_pooled_text():
    """(∅,ϕ) gets the negative prompt's pooled embedding, (c,ϕ) and (c,o) the prompt's; time ids are shared."""
    positive = {"encoder_hidden_states": torch.ones(2, 3, 4), "text_embeds": torch.full((2, 5), 1.0)}
    negative = {"encoder_hidden_states": torch.zeros(2, 3, 4), "text_embeds": torch.full((2, 5), -1.0)}
    obj, null = torch.ones(2, 6), torch.zeros(2, 6)
    hidden, added = batch_branches(["uncond", "text", "object"], positive, negative, obj, null,
                                   {"time_ids": torch.arange(12.0).reshape(2, 6)})
    assert hidden.shape == (6, 3, 4) and added["text_embeds"][:, 0].tolist() == [-1, -1, 1, 1, 1, 1]
    assert added["image_embeds"][0].shape == (6, 1, 6) and added["image_embeds"][0][:, 0, 0].tolist() == [0, 0, 0, 0, 1, 1]
    assert torch.equal(added["time_ids"], torch.arange(12.0).reshape(2, 6).repeat(3, 1))


def test_two_weights_use_three_branches_and_differ_from_one(tiny_sdxl_pipe, photo, other_photo):
    kwargs = dict(num_inference_steps=2, seed=1, output_type="np")
    three = tiny_sdxl_pipe("a red square", object_image=photo, text_guidance=5.0, object_guidance=2.0, **kwargs).images
    other = tiny_sdxl_pipe("a red square", object_image=other_photo, text_guidance=5.0, object_guidance=2.0,
                           **kwargs).images
    assert np.isfinite(three).all() and np.abs(three - other).max() > 1e-4  # the photo matters


def test_save_load_round_trip_is_exact(tiny_sdxl_pipe, tmp_path, photo):
    folder = save_checkpoint(tiny_sdxl_pipe, tmp_path / "copy")
    assert json.loads((folder / "base" / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    again = load_pipeline(folder, device="cpu")
    again.set_progress_bar_config(disable=True)
    for name in ("unet", "text_encoder", "text_encoder_2", "vae", "object_encoder"):
        ours, theirs = getattr(tiny_sdxl_pipe, name).state_dict(), getattr(again, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    kwargs = dict(object_image=photo, seed=4, num_inference_steps=2, output_type="np", text_guidance=4.0,
                  object_guidance=2.0)
    assert np.array_equal(tiny_sdxl_pipe("a red square", **kwargs).images, again("a red square", **kwargs).images)


def test_cached_equals_uncached(tiny_sdxl_pipe):
    kwargs = dict(object_image=square_photo(colour=(240, 200, 20)), seed=2, num_inference_steps=2, output_type="np")
    for cache in (tiny_sdxl_pipe.embedding_cache, tiny_sdxl_pipe.mask_cache, tiny_sdxl_pipe.prompt_cache):
        cache.clear()
    first = tiny_sdxl_pipe("a yellow square", **kwargs).images
    calls = tiny_sdxl_pipe.encoder_calls
    cached = tiny_sdxl_pipe("a yellow square", **kwargs).images
    assert tiny_sdxl_pipe.encoder_calls == calls and tiny_sdxl_pipe.prompt_cache.hits >= 1
    assert np.array_equal(first, cached)


def test_int8_is_close_to_full_precision(tiny_sdxl_checkpoint, tiny_sdxl_pipe, photo):
    from zeroft.quantization import linear_weight_bytes

    int8 = load_pipeline(tiny_sdxl_checkpoint, device="cpu", quantization="int8")
    int8.set_progress_bar_config(disable=True)
    # both text encoders are quantized (tiny layers keep proportionally more per-channel scales)
    for name in ("text_encoder", "text_encoder_2"):
        assert linear_weight_bytes(getattr(tiny_sdxl_pipe, name)) / linear_weight_bytes(getattr(int8, name)) >= 2.5
    assert linear_weight_bytes(tiny_sdxl_pipe.unet) / linear_weight_bytes(int8.unet) >= 3.5
    kwargs = dict(object_image=photo, seed=0, num_inference_steps=3, output_type="np")
    deviation = np.abs(tiny_sdxl_pipe("a red square", **kwargs).images - int8("a red square", **kwargs).images)
    assert deviation.mean() < 0.01 and deviation.max() < 0.05  # the SD1.5 tolerance of test_quantization.py


def test_the_cli_generates_with_an_sdxl_checkpoint(tiny_sdxl_checkpoint, tmp_path):
    square_photo().save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main(["generate", "--checkpoint", str(tiny_sdxl_checkpoint), "--image", str(tmp_path / "photo.png"),
                 "--prompt", "a red square", "--num-images", "2", "--steps", "2", "--seed", "7", "--out", str(out),
                 "--device", "cpu"]) == 0
    settings = json.loads((out / "zeroft_001.json").read_text())
    assert settings["seeds"] == [7, 8] and len(settings["outputs"]) == 2
    assert Image.open(out / settings["outputs"][0]).size == (64, 64)  # the checkpoint's native size


def test_the_time_budget_measures_an_sdxl_unet_call(tiny_sdxl_pipe, monkeypatch):
    """One UNet call at the native size with SDXL's added conditions (pooled text, time ids)."""
    seen = []
    hook = tiny_sdxl_pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(sorted(kwargs["added_cond_kwargs"])), with_kwargs=True)
    monkeypatch.setattr(tiny_sdxl_pipe, "unit_seconds", None)
    ticks = iter([10.0, 10.5])
    try:
        assert tiny_sdxl_pipe.measure_unit_seconds(clock=lambda: next(ticks)) == 0.5
    finally:
        hook.remove()
    assert seen == [["image_embeds", "text_embeds", "time_ids"]] * 2
    monkeypatch.setattr(tiny_sdxl_pipe, "step_times", StepTimes())
    monkeypatch.setattr(tiny_sdxl_pipe, "clock", FakeClock(0.5))  # every UNet call takes 0.5 s, measured or not
    with pytest.raises(InputError, match="about 10 s"):  # 10 steps x 2 branches (no photo) x 0.5 s; one step > 0.5 s
        tiny_sdxl_pipe("x", num_inference_steps=10, time_budget=0.5)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["bnb-8bit", "bnb-4bit"])
def test_bitsandbytes_and_offload_on_gpu(tiny_sdxl_checkpoint, photo, mode):
    from zeroft.quantization import linear_weight_bytes

    reference = load_pipeline(tiny_sdxl_checkpoint, device="cuda")
    pipe = load_pipeline(tiny_sdxl_checkpoint, device="cuda", quantization=mode)
    assert linear_weight_bytes(pipe.text_encoder_2) < linear_weight_bytes(reference.text_encoder_2)
    offloaded = load_pipeline(tiny_sdxl_checkpoint, device="cuda", offload=True)
    for each in (pipe, offloaded):
        out = each("a red square", object_image=photo, seed=0, num_inference_steps=2, output_type="np").images
        assert np.isfinite(out).all()
