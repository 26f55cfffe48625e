"""Checkpoint folders: round trips, whole-UNet checkpoints, Hub errors, upload, IP-Adapter import."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import zeroft
from zeroft import HubUnavailableError, ZeroFTConfig, ZeroFTPipeline, push_to_hub, save_checkpoint
from zeroft.presets import import_ip_adapter


def _all_tensors(pipe):
    tensors = {}
    for name in ("unet", "vae", "text_encoder", "object_encoder"):
        for key, value in getattr(pipe, name).state_dict().items():
            tensors[f"{name}.{key}"] = value
    return tensors


def _same_tensors(a, b):
    ta, tb = _all_tensors(a), _all_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_folder_layout(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"zeroft_config.json", "adapter.safetensors", "README.md", "base", "encoder"} <= names
    assert "unet" not in names
    config = json.loads((tiny_checkpoint / "zeroft_config.json").read_text())
    assert config["base_model"] == "base" and config["num_tokens"] == 4
    assert "zeroft" in (tiny_checkpoint / "README.md").read_text()
    assert not list(tiny_checkpoint.rglob("*.bin")) and not list(tiny_checkpoint.rglob("*.pt*"))


def test_save_load_round_trip_is_exact(tiny_pipe, tmp_path, photo):
    import logging

    from diffusers.utils import logging as diffusers_logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    root, level = logging.getLogger("diffusers"), diffusers_logging.get_verbosity()
    root.addHandler(handler)
    diffusers_logging.set_verbosity_warning()  # as users run it (the tests otherwise silence diffusers)
    try:
        folder = save_checkpoint(tiny_pipe, tmp_path / "copy")
    finally:
        root.removeHandler(handler)
        diffusers_logging.set_verbosity(level)
    # The base is written without its UNet on purpose; users should not see diffusers warn about it.
    assert not [r for r in records if "cannot be saved" in r.getMessage()]
    again = ZeroFTPipeline.from_pretrained(folder, device="cpu")
    again.set_progress_bar_config(disable=True)
    _same_tensors(tiny_pipe, again)
    kwargs = dict(object_image=photo, seed=4, num_inference_steps=2, output_type="np")
    assert np.array_equal(tiny_pipe("a red square", **kwargs).images, again("a red square", **kwargs).images)


def test_whole_unet_checkpoint_round_trip(tiny_checkpoint, tmp_path, photo):
    pipe = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        pipe.unet.conv_in.weight.add_(0.01)  # stands in for whole-network training
    folder = save_checkpoint(pipe, tmp_path / "whole", unet_tuned=True)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert ZeroFTConfig.load(folder).unet_tuned
    again = ZeroFTPipeline.from_pretrained(folder, device="cpu")
    again.set_progress_bar_config(disable=True)
    _same_tensors(pipe, again)
    assert not (folder / "base" / "unet").exists()  # a tuned checkpoint carries one UNet, in unet/
    # the saved UNet is a plain diffusers UNet: no adapter keys inside
    from safetensors import safe_open

    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "to_k_ip" in k or k.startswith("encoder_hid_proj")]


def test_half_precision_storage(tiny_pipe, tmp_path, photo):
    folder = save_checkpoint(tiny_pipe, tmp_path / "fp16", dtype=torch.float16)
    from safetensors.torch import load_file as read

    assert all(v.dtype == torch.float16 for v in read(str(folder / "adapter.safetensors")).values())
    again = ZeroFTPipeline.from_pretrained(folder, device="cpu", dtype=torch.float32)
    again.set_progress_bar_config(disable=True)
    assert again.unet.dtype == torch.float32
    kwargs = dict(object_image=photo, seed=4, num_inference_steps=2, output_type="np")
    assert np.abs(tiny_pipe("a red square", **kwargs).images - again("a red square", **kwargs).images).max() < 0.02


def test_hub_id_without_network_fails_clearly():
    with pytest.raises(HubUnavailableError, match="Could not download checkpoint 'someone/some-model'"):
        ZeroFTPipeline.from_pretrained("someone/some-model")


def test_missing_local_folder_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder"):
        ZeroFTPipeline.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


def test_newer_format_is_refused(tiny_checkpoint):
    data = json.loads((tiny_checkpoint / "zeroft_config.json").read_text())
    data["format_version"] = 99
    with pytest.raises(ValueError, match="Upgrade zeroft"):
        ZeroFTConfig.from_dict(data)


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi: 'uploads' into a local folder."""

    def __init__(self, root):
        self.root = root

    def create_repo(self, repo_id, private, exist_ok, repo_type):
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
        import shutil

        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)


def test_push_to_hub_uploads_the_folder(tiny_checkpoint, tmp_path):
    url = push_to_hub(tiny_checkpoint, "me/toy", api=FakeHubApi(tmp_path))
    assert url.endswith("me/toy")
    assert (tmp_path / "me" / "toy" / "adapter.safetensors").is_file()
    ZeroFTConfig.load(tmp_path / "me" / "toy")


def test_push_refuses_a_non_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        push_to_hub(tmp_path, "me/toy", api=FakeHubApi(tmp_path))


def test_ip_adapter_import(tmp_path):
    """A file in the public IP-Adapter SD1.5 layout becomes a checkpoint that refers to SD1.5 + ViT-H-14."""
    cross, embed = 768, 1024
    state = {"image_proj.proj.weight": torch.randn(4 * cross, embed), "image_proj.proj.bias": torch.zeros(4 * cross),
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    for key in range(1, 32, 2):
        state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(320, cross)
        state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(320, cross)
    source = tmp_path / "ip-adapter_sd15.safetensors"
    save_file(state, str(source))
    folder = import_ip_adapter(tmp_path / "imported", adapter_file=source)
    config = ZeroFTConfig.load(folder)
    assert config.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (config.encoder.model_name, config.encoder.pretrained) == (
        "ViT-H-14", "hf-hub:h94/IP-Adapter/models/image_encoder/model.safetensors")
    assert (config.image_embed_dim, config.cross_attention_dim, config.num_tokens) == (1024, 768, 4)
    assert "Apache-2.0" in config.licenses["adapter"]
    # offline, loading it fails at the Hub with a clear message rather than a stack of HTTP errors
    with pytest.raises(HubUnavailableError):
        ZeroFTPipeline.from_pretrained(folder, device="cpu")


def test_from_pretrained_returns_the_class_it_was_called_on(tiny_checkpoint):
    class Custom(ZeroFTPipeline):
        pass

    assert type(Custom.from_pretrained(tiny_checkpoint, device="cpu")) is Custom
    assert type(zeroft.load_pipeline(tiny_checkpoint, device="cpu")) is ZeroFTPipeline


def test_output_settings_hold_every_default_filled_in(tiny_pipe, photo):
    out = tiny_pipe("one object", object_image=photo, num_images=2, seed=3, text_guidance=4.0)
    defaults = tiny_pipe.zeroft_config.defaults
    settings = out.settings.to_dict()
    assert settings == {
        "prompt": "one object", "negative_prompt": defaults.negative_prompt, "text_guidance": 4.0,
        "object_guidance": defaults.object_guidance, "steps": defaults.steps, "num_images": 2,
        "height": defaults.height, "width": defaults.width, "seed": 3, "seeds": [3, 4],
        "masks": ["automatic:" + tiny_pipe.masker.spec], "quantization": "none", "device": "cpu",
        "dtype": "float32", "guidance_interval": None,
    }
    again = tiny_pipe(**{k: settings[k] for k in ("prompt", "negative_prompt", "text_guidance", "object_guidance",
                                                  "num_images", "height", "width", "seed")},
                      num_inference_steps=settings["steps"], object_image=photo)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out.images, again.images))
