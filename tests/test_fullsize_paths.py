"""The code paths the full-size presets take, exercised on tiny models in a fabricated Hub cache.

The Hugging Face cache is laid out as huggingface_hub writes it (``hub/models--ORG--NAME/`` with
``blobs/``, ``snapshots/<commit>/`` links and ``refs/main``) and read offline, so the encoder and
checkpoint code run exactly as they do for ViT-H/14 and SD1.5, at toy size.
"""

import json
import logging
import os
import shutil
import warnings

import pytest
import torch
from hubcache import fake_hub_repo, hub, tiny_clip_vision  # noqa: F401 (hub: a fixture, used by name)
from PIL import Image
from safetensors.torch import load_file, save_file

import zeroft.assemble
from zeroft import EncoderConfig, HubUnavailableError, ModelUnavailableError, ObjectEncoder, ZeroFTConfig
from zeroft.tiny import TINY_OPEN_CLIP, tiny_open_clip

TINY_NAME = "zeroft-tiny-vit"  # registered with open_clip below, as ViT-H-14 is built in
TINY_TAG = "zeroft-tiny-tag"
IMAGE_ENCODER_FILE = "models/image_encoder/model.safetensors"
# h94/IP-Adapter models/image_encoder/config.json, as published (see zeroft.presets)
IP_ADAPTER_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                         image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def tiny_architecture(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("open-clip-configs") / f"{TINY_NAME}.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(path)
    return TINY_NAME


@pytest.fixture
def tiny_tag(monkeypatch, tiny_architecture):
    """A pretrained tag for the tiny architecture, resolved like laion2b_s32b_b79k is for ViT-H-14."""
    import open_clip

    real = open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, tag: {"hf_hub": "zeroft-test/tiny-clip/"}
                        if (model, tag) == (tiny_architecture, TINY_TAG) else real(model, tag))
    return TINY_TAG


def _false_warnings(caplog, caught):
    """open_clip's warnings about random weights, and any of its log lines (the CLI logs at INFO)."""
    texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] + [str(w.message) for w in caught]
    noise = [r.getMessage() for r in caplog.records if f"{os.sep}open_clip{os.sep}" in r.pathname]
    return [t for t in texts if "initialized randomly" in t or "No pretrained weights" in t or "partially" in t] + noise


# Item 12: no false "initialized randomly" warning.

def test_tag_encoder_loads_without_a_false_random_init_warning(tmp_path, hub, tiny_tag, caplog):
    """The preset's code path (open_clip name + tag → Hub file) at toy size: quiet, and the file's weights."""
    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_open_clip(seed=3).state_dict().items()}, str(weights))
    fake_hub_repo(hub, "zeroft-test/tiny-clip", {"open_clip_model.safetensors": weights})
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = ObjectEncoder.from_config(EncoderConfig(model_name=TINY_NAME, pretrained=tiny_tag))
    assert _false_warnings(caplog, caught) == []
    expected = {k[len("visual."):]: v for k, v in load_file(str(weights)).items() if k.startswith("visual.")}
    loaded = encoder.visual.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


# Item 15: the vision-only transformers file h94/IP-Adapter ships, loaded into open_clip's tower.

def test_ip_adapter_vision_file_gives_the_transformers_image_embeds(tmp_path, hub, tiny_architecture, caplog):
    folder = tmp_path / "image_encoder"
    vision = tiny_clip_vision(TINY_OPEN_CLIP)
    vision.save_pretrained(folder, safe_serialization=True)
    fake_hub_repo(hub, "h94/IP-Adapter", {IMAGE_ENCODER_FILE: folder / "model.safetensors",
                                          "models/image_encoder/config.json": folder / "config.json"})
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = ObjectEncoder.from_config(
            EncoderConfig(model_name=tiny_architecture, pretrained=f"hf-hub:h94/IP-Adapter/{IMAGE_ENCODER_FILE}"))
    assert _false_warnings(caplog, caught) == []
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = vision(pixel_values=pixels).image_embeds
    assert torch.allclose(encoder(pixels), expected, atol=1e-5)


def test_ip_adapter_vision_file_fits_open_clip_vit_h_14_at_full_size():
    """Shapes only, on the meta device: the published config converts into ViT-H-14's tower tensor for tensor."""
    import open_clip
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from zeroft.encoder import _transformers_to_open_clip, build_visual

    with torch.device("meta"):
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**IP_ADAPTER_VISION))
        tower = build_visual(open_clip.get_model_config("ViT-H-14"))
    converted = _transformers_to_open_clip(vision.state_dict())
    expected = tower.state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    # fp32 tensors of the file: within 0.1% of the 2,528,373,448 bytes h94 publishes (header and position ids aside)
    assert abs(4 * sum(v.numel() for v in converted.values()) / 2_528_373_448 - 1) < 1e-3


def test_sd15_preset_reads_the_vision_only_encoder_file(tmp_path, monkeypatch):
    from zeroft.presets import IP_ADAPTER_SD15, preset_folder

    assert IP_ADAPTER_SD15.encoder_config().pretrained == f"hf-hub:h94/IP-Adapter/{IMAGE_ENCODER_FILE}"
    # a preset folder written by an older zeroft (whole-CLIP tag) is pointed to the vision-only file
    monkeypatch.setenv("ZEROFT_HOME", str(tmp_path))
    old = tmp_path / "ip-adapter-sd15"
    old.mkdir()
    save_file({"image_proj.proj.weight": torch.zeros(1)}, str(old / "adapter.safetensors"))
    whole_clip = EncoderConfig("ViT-H-14", "laion2b_s32b_b79k")
    ZeroFTConfig(base_model=IP_ADAPTER_SD15.base_model, encoder=whole_clip).save(old)
    assert ZeroFTConfig.load(preset_folder("ip-adapter-sd15")).encoder == IP_ADAPTER_SD15.encoder_config()


# Item 13: every file that must exist is found before any model is built.

class NotToBeBuilt:
    """Stands in for the diffusers classes: a test fails if load_pipeline builds before its checks."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        raise AssertionError("a model was built before every file was checked")


@pytest.fixture
def no_build(monkeypatch):
    import diffusers

    for name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):  # what each backbone's base loads as
        monkeypatch.setattr(diffusers, name, NotToBeBuilt)
    monkeypatch.setattr(zeroft.assemble, "UNet2DConditionModel", NotToBeBuilt)


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path):
    return shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")


def _edit_config(folder, **changes):
    ZeroFTConfig.load(folder).replace(**changes).save(folder)


@pytest.mark.parametrize("missing", ["adapter.safetensors", "encoder/open_clip_model.safetensors",
                                     "encoder/open_clip_config.json", "base/model_index.json", "base/vae",
                                     "base/unet/diffusion_pytorch_model.safetensors"])
def test_a_missing_file_fails_before_anything_is_built(checkpoint_copy, no_build, missing):
    target = checkpoint_copy / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelUnavailableError, match=os.path.basename(missing)):
        zeroft.load_pipeline(checkpoint_copy, device="cpu")


def test_a_tuned_checkpoint_without_its_unet_fails_before_anything_is_built(checkpoint_copy, no_build):
    _edit_config(checkpoint_copy, unet_tuned=True)
    with pytest.raises(ModelUnavailableError, match="unet/config.json"):
        zeroft.load_pipeline(checkpoint_copy, device="cpu")


def test_an_encoder_file_missing_from_the_hub_cache_fails_before_anything_is_built(checkpoint_copy, hub, no_build,
                                                                                   tiny_architecture):
    _edit_config(checkpoint_copy, encoder=EncoderConfig(model_name=tiny_architecture,
                                                        pretrained=f"hf-hub:h94/IP-Adapter/{IMAGE_ENCODER_FILE}"))
    with pytest.raises(HubUnavailableError, match="model.safetensors"):
        zeroft.load_pipeline(checkpoint_copy, device="cpu")


def test_a_missing_rembg_model_is_needed_only_by_photos_without_a_mask(checkpoint_copy, tmp_path, monkeypatch, capsys):
    """Offline with no rembg model on the machine: the checkpoint loads; a photo that carries its mask (alpha), or
    comes with one, generates; a plain photo is refused with the plain message before any denoising step."""
    import numpy as np

    from conftest import square_photo
    from zeroft.cli import main

    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty-u2net"))
    _edit_config(checkpoint_copy, masker="rembg:u2net")
    pipe = zeroft.load_pipeline(checkpoint_copy, device="cpu")
    steps = []
    settings = dict(num_inference_steps=2, output_type="latent", callback=lambda step, total: steps.append(step))
    with pytest.raises(ModelUnavailableError, match="u2net.onnx"):
        pipe("a toy", object_image=square_photo(), **settings)
    assert steps == []
    cutout = square_photo().convert("RGBA")
    cutout.putalpha(Image.fromarray(((np.asarray(square_photo())[..., 2] < 128) * 255).astype(np.uint8)))
    assert pipe("a toy", object_image=cutout, **settings).settings.masks == ["alpha"]
    mask = (np.asarray(square_photo())[..., 2] < 128).astype(np.float32)
    assert pipe("a toy", object_image=square_photo(), object_mask=mask, **settings).settings.masks == ["given"]
    cutout.save(tmp_path / "cutout.png")
    status = main(["generate", "--checkpoint", str(checkpoint_copy), "--image", str(tmp_path / "cutout.png"),
                   "--prompt", "a toy", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr().err


def test_a_present_rembg_model_loads(checkpoint_copy, u2net_home):
    _edit_config(checkpoint_copy, masker="rembg:u2net")
    assert zeroft.load_pipeline(checkpoint_copy, device="cpu").masker.spec == "rembg:u2net"


def test_a_checkpoint_holding_only_its_config_is_a_plain_error(checkpoint_copy, tmp_path, capsys):
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(checkpoint_copy / "zeroft_config.json", only_config)
    with pytest.raises(ModelUnavailableError, match="adapter.safetensors"):
        zeroft.load_pipeline(only_config, device="cpu")

    from conftest import square_photo
    from zeroft.cli import main

    photo = tmp_path / "photo.png"
    square_photo().save(photo)
    status = main(["generate", "--checkpoint", str(only_config), "--image", str(photo), "--prompt", "a toy",
                   "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 3 and "adapter.safetensors" in err and "Traceback" not in err


def test_the_full_size_benchmarks_random_writer_lays_out_shards_the_loaders_read(tmp_path, monkeypatch):
    """bench.full_size writes FLUX.1's parts tensor by tensor (the transformer never whole in memory) as sharded
    safetensors with an index, as the real repositories are: diffusers, transformers and zeroft.streaming read them
    to the same weights, and T5's tied embedding is written once (as FLUX.1-dev's text_encoder_2 holds it)."""
    import bench.full_size as full_size
    from diffusers import FluxTransformer2DModel
    from transformers import T5EncoderModel

    from zeroft.streaming import load_streaming

    monkeypatch.setattr(full_size, "SHARD_BYTES", 40_000)
    flux = dict(full_size.FLUX_TRANSFORMER, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    full_size.write_random_part("FluxTransformer2DModel", flux, tmp_path / "transformer", torch.bfloat16)
    shards = sorted(p.name for p in (tmp_path / "transformer").glob("*.safetensors"))
    assert len(shards) > 1 and shards[-1] == f"diffusion_pytorch_model-{len(shards):05d}-of-{len(shards):05d}.safetensors"
    theirs = FluxTransformer2DModel.from_pretrained(tmp_path / "transformer")
    ours = load_streaming(FluxTransformer2DModel, tmp_path, subfolder="transformer", dtype=torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()))
    assert torch.isfinite(theirs.transformer_blocks[0].attn.to_q.weight.float()).all()
    t5 = dict(full_size.T5_XXL, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, vocab_size=600)
    full_size.write_random_part("T5EncoderModel", t5, tmp_path / "text_encoder_2", torch.bfloat16)
    index = json.loads((tmp_path / "text_encoder_2" / "model.safetensors.index.json").read_text())["weight_map"]
    assert "shared.weight" in index and "encoder.embed_tokens.weight" not in index
    encoder = load_streaming(T5EncoderModel, tmp_path, subfolder="text_encoder_2", dtype=torch.bfloat16)
    assert torch.equal(encoder.encoder.embed_tokens.weight, encoder.shared.weight)
