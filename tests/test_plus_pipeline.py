"""IP-Adapter Plus in the pipelines (issue 34): the masked photo's patch tokens through the resampler, ϕ the tokens of
an all-zero normalised image, zeroft at equal weights reproducing stock diffusers with the same Plus file (SD1.5
and SDXL), the checkpoint recording its projection."""

import json

import numpy as np
import pytest
import torch
from zeroft import InputError, ZeroFTConfig, load_pipeline
from zeroft.adapter import uses_patch_tokens
from zeroft.backbones import get_backbone
from zeroft.tiny import make_tiny_checkpoint

from conftest import square_photo

STEPS = 3


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def plus(request, tmp_path_factory):
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp(f"plus-{request.param}"), backbone=request.param,
                                  projection="plus", num_tokens=16)
    pipe = load_pipeline(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return request.param, folder, pipe


def _stock(folder):
    backbone = get_backbone(ZeroFTConfig.load(folder).backbone)
    pipe = backbone.base_class().from_pretrained(folder / "base", **backbone.base_arguments())
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name="adapter.safetensors", image_encoder_folder=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(pipe, seed=0):
    side = 64 // pipe.vae_scale_factor
    return torch.randn((1, pipe.unet.config.in_channels, side, side), generator=torch.Generator().manual_seed(seed))


def test_a_plus_checkpoint_records_its_projection_and_encodes_patch_tokens(plus):
    _, folder, pipe = plus
    config = json.loads((folder / "zeroft_config.json").read_text())
    assert config["projection"] == "plus" and config["image_embed_dim"] == pipe.object_encoder.token_width
    assert pipe.uses_patch_tokens and uses_patch_tokens(pipe.unet)
    tokens = pipe.encode_object(square_photo())[0]
    assert tokens.shape == (1, 1 + 16, pipe.object_encoder.token_width)  # class token + 4x4 patches of 8 px
    null = pipe.null_object()
    assert null.shape == tokens.shape and null.abs().sum() > 0  # ϕ: an all-zero *normalised* image, not zeros
    assert torch.allclose(null, pipe.object_encoder.tokens(torch.zeros(1, 3, 32, 32)))


def test_equal_weights_reproduce_stock_diffusers_with_the_plus_file(plus):
    _, folder, pipe = plus
    embeds = pipe.encode_object(square_photo())[0]
    latents = _latents(pipe)
    ours = pipe("a red square", image_embeds=embeds, text_guidance=4.0, object_guidance=4.0,
                num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    stock = _stock(folder)
    theirs = stock("a red square", ip_adapter_image_embeds=[torch.cat([pipe.null_object(), embeds])[:, None]],
                   guidance_scale=4.0, num_inference_steps=STEPS, latents=latents.clone(), output_type="np",
                   height=64, width=64).images
    assert np.abs(ours - theirs).max() < 1e-4
    # object weight 0: every branch gets ϕ, which is stock diffusers given ϕ as the object too
    text_only = pipe("a red square", image_embeds=embeds, text_guidance=4.0, object_guidance=0.0,
                     num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    null = pipe.null_object()
    theirs = stock("a red square", ip_adapter_image_embeds=[torch.cat([null, null])[:, None]], guidance_scale=4.0,
                   num_inference_steps=STEPS, latents=latents.clone(), output_type="np", height=64, width=64).images
    assert np.abs(text_only - theirs).max() < 1e-4


def test_three_branches_batches_and_a_saved_plus_checkpoint_reloads(plus, tmp_path):
    name, folder, pipe = plus
    out = pipe(["a red square", "a blue square"], object_image=square_photo(), num_images=2, text_guidance=5.0,
               object_guidance=2.0, num_inference_steps=2, seed=0, output_type="np")
    assert out.images.shape[0] == 4 and out.image_embeds.shape[1:] == pipe.null_object().shape[1:]
    pipe.save_pretrained(tmp_path / "again")
    again = load_pipeline(tmp_path / "again", device="cpu")
    again.set_progress_bar_config(disable=True)
    same = again(["a red square", "a blue square"], object_image=square_photo(), num_images=2, text_guidance=5.0,
                 object_guidance=2.0, num_inference_steps=2, seed=0, output_type="np")
    assert np.abs(same.images - out.images).max() < 1e-5
    with pytest.raises(InputError, match="do not fit this model"):
        pipe("x", image_embeds=torch.zeros(1, 16), num_inference_steps=1)  # a pooled embedding given to Plus


def test_a_config_that_misnames_its_projection_is_refused(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "plus", projection="plus", num_tokens=16)
    config = json.loads((folder / "zeroft_config.json").read_text())
    (folder / "zeroft_config.json").write_text(json.dumps({**config, "projection": "linear", "image_embed_dim": 16}))
    with pytest.raises(ValueError, match="is an IP-Adapter Plus \\(resampler\\) file, but the checkpoint says"):
        load_pipeline(folder, device="cpu")
    with pytest.raises(ValueError, match="Unknown object projection"):
        ZeroFTConfig.from_dict({**config, "projection": "perceiver"})


def test_older_files_read_as_the_pooled_projection(tiny_checkpoint):
    data = json.loads((tiny_checkpoint / "zeroft_config.json").read_text())
    data.pop("projection", None)
    data["format_version"] = 2
    assert ZeroFTConfig.from_dict(data).projection == "linear"


@pytest.mark.parametrize("backbone", ["sd", "sdxl"])
def test_the_trainer_learns_a_plus_model_that_stock_diffusers_loads(tmp_path, backbone):
    """The paper's recipe with patch tokens: the resampler and the object attention train, the export records its
    projection, generates, and plain diffusers' load_ip_adapter reads its adapter file; a Plus start given to a
    pooled run is refused plainly."""
    from diffusers import UNet2DConditionModel
    from train.config import TrainConfig
    from train.tiny_data import write_domain_imagefolder, write_general_jsonl
    from train.train import build_models, run
    from zeroft import InputError as ZeroftInputError

    folder = make_tiny_checkpoint(tmp_path / "plus", projection="plus", num_tokens=16, backbone=backbone)
    settings = dict(base_model=str(folder / "base"), encoder=str(folder / "encoder"),
                    domain_data=write_domain_imagefolder(tmp_path / "domain"),
                    general_data=write_general_jsonl(tmp_path / "general"), resolution=64, train_batch_size=2,
                    max_train_steps=2, learning_rate=1e-3, lr_warmup_steps=0, checkpointing_steps=2, masker="border",
                    report_to="none", projection="plus", num_tokens=16, resampler_width=64)
    export = run(TrainConfig(**settings, output_dir=str(tmp_path / "run")))
    config = ZeroFTConfig.load(export)
    assert config.projection == "plus" and config.num_tokens == 16 and config.training["steps"] == 2
    pipe = load_pipeline(export, device="cpu")
    assert pipe.uses_patch_tokens
    out = pipe("an object on a blue background", object_image=square_photo(), num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    family = get_backbone(backbone)
    stock = family.base_class().from_pretrained(export / "base", unet=UNet2DConditionModel.from_pretrained(export / "unet"),
                                                **family.base_arguments())
    stock.load_ip_adapter(str(export), subfolder="", weight_name="adapter.safetensors", image_encoder_folder=None)
    with pytest.raises(ZeroftInputError, match="has the plus object projection; this run trains linear"):
        build_models(TrainConfig(**{**settings, "projection": "linear", "num_tokens": 4}, init_checkpoint=str(folder),
                                 output_dir=str(tmp_path / "other")))


def test_the_null_tokens_follow_the_encoder_views_and_are_computed_once(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "plus", projection="plus", num_tokens=16)
    pipe = load_pipeline(folder, device="cpu")
    first = pipe.null_object()
    calls = []
    original = pipe.object_encoder.tokens
    pipe.object_encoder.tokens = lambda pixels: calls.append(1) or original(pixels)
    assert torch.equal(pipe.null_object(), first) and calls == []  # cached in the encoder
    pipe.set_encoder_views("flip")
    assert pipe.null_object().shape[1] == 2 * first.shape[1] and calls == [1]  # both views' tokens, computed anew
    pipe.null_object().zero_()  # a caller's copy: the cached ϕ is untouched
    assert pipe.null_object().abs().sum() > 0
