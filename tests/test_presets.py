"""The IP-Adapter presets, end to end offline: the public repositories' layout at toy size.

Each preset is built and loaded from a fabricated Hugging Face cache (tests/hubcache.py) holding
tiny weights under the real repositories' file names, through huggingface_hub, diffusers and
open_clip exactly as from the Hub; open_clip's ViT-H-14 and ViT-bigG-14 resolve to tiny configs.
"""

import pytest
import torch
from hubcache import (IP_ADAPTER_REPO, SDXL_REPO, TINY_VIT_BIGG, copy_repo_file, fake_hub_repo, fill_hub,  # noqa: F401
                      hub, serve_repos, tiny_clip_vision, tiny_open_clip_names, write_public_repos)  # (fixtures used by name)
from safetensors.torch import load_file

import zeroft
from zeroft import InputError, ObjectEncoder
from zeroft.adapter import adapter_state_dict
from zeroft.presets import (IP_ADAPTER_PRESETS, IP_ADAPTER_SD15, IP_ADAPTER_SDXL, IP_ADAPTER_SDXL_VIT_H,
                            PRESET_NAMES, check_adapter_encoder, import_ip_adapter, preset_folder)

BIGG_ENCODER_FILE = "sdxl_models/image_encoder/model.safetensors"
# h94/IP-Adapter sdxl_models/image_encoder/config.json, as InvokeAI's and ComfyUI's loaders reproduce it
# (zeroft.presets docstring): OpenCLIP ViT-bigG/14, 1844.9M parameters by h94's model card
IP_ADAPTER_BIGG_VISION = dict(hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=1280, hidden_act="gelu",
                              layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def public_repos(tmp_path_factory):
    return write_public_repos(tmp_path_factory.mktemp("public-repos"))


@pytest.fixture
def public_hub(hub, public_repos, tiny_open_clip_names, tmp_path, monkeypatch):
    """All three repositories in the cache, tiny open_clip names, an empty ZEROFT_HOME."""
    return serve_repos(hub, public_repos, tmp_path / "zeroft-home", monkeypatch)


def test_the_presets_name_the_public_files_and_their_licences():
    assert PRESET_NAMES == ("zeroft-toy", "ip-adapter-sd15", "ip-adapter-sdxl-vit-h", "ip-adapter-sdxl", "ip-adapter-plus-sd15",
                            "ip-adapter-plus-sdxl-vit-h", "ip-adapter-flux-dev")
    for preset in (p for p in IP_ADAPTER_PRESETS.values() if p.backbone != "flux"):  # FLUX: tests/test_flux_presets.py
        config = preset.zeroft_config(image_embed_dim=1024, cross_attention_dim=768, num_tokens=4)
        assert config.backbone == ("sdxl" if "xl" in preset.base_model else "sd")
        assert config.defaults.height == config.defaults.width == (1024 if config.backbone == "sdxl" else 512)
        assert config.defaults.negative_prompt and "Apache-2.0" in config.licenses["adapter"]
        assert config.licenses["encoder"].startswith("MIT (OpenCLIP")
    assert "Open RAIL++-M" in IP_ADAPTER_SDXL.zeroft_config(1280, 2048, 4).licenses["base_model"]
    assert "OpenRAIL-M (Stable Diffusion 1.5)" in IP_ADAPTER_SD15.zeroft_config(1024, 768, 4).licenses["base_model"]
    assert (IP_ADAPTER_SDXL.encoder_model, IP_ADAPTER_SDXL.encoder_pretrained) == (
        "ViT-bigG-14", f"hf-hub:{IP_ADAPTER_REPO}/{BIGG_ENCODER_FILE}")
    assert IP_ADAPTER_SDXL_VIT_H.encoder_config() == IP_ADAPTER_SD15.encoder_config()


@pytest.mark.parametrize("name, encoder_folder", [("ip-adapter-sd15", "models/image_encoder"),
                                                  ("ip-adapter-sdxl-vit-h", "models/image_encoder"),
                                                  ("ip-adapter-sdxl", "sdxl_models/image_encoder"),
                                                  ("ip-adapter-plus-sd15", "models/image_encoder"),
                                                  ("ip-adapter-plus-sdxl-vit-h", "models/image_encoder")])
def test_preset_loads_from_the_public_layout_and_generates(public_hub, photo, name, encoder_folder):
    from transformers import CLIPVisionModelWithProjection

    preset = IP_ADAPTER_PRESETS[name]
    pipe = zeroft.load_pipeline(name, device="cpu", masker="border")
    config = pipe.zeroft_config
    assert (config.base_model, config.backbone) == (preset.base_model, preset.backbone)
    assert config.defaults.height == preset.native_size
    # the adapter and the encoder are the public files of this preset
    expected = load_file(str(public_hub[IP_ADAPTER_REPO] / preset.adapter_file))
    loaded = adapter_state_dict(pipe.unet)
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)
    vision = CLIPVisionModelWithProjection.from_pretrained(public_hub[IP_ADAPTER_REPO] / encoder_folder)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(pipe.object_encoder(pixels), vision(pixel_values=pixels).image_embeds, atol=1e-5)
        if preset.projection == "plus":  # Plus reads the patch tokens: transformers' hidden_states[-2]
            assert config.projection == "plus" and pipe.uses_patch_tokens
            hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
            assert torch.allclose(pipe.object_encoder.tokens(pixels), hidden, atol=1e-5)

    size = preset.native_size // 4  # the smallest size the backbone allows: fast on a CPU
    out = pipe("a toy on a beach", object_image=photo, num_inference_steps=2, height=size, width=size, seed=0)
    image = torch.tensor(list(out.images[0].getdata()), dtype=torch.float32)
    assert out.images[0].size == (size, size) and image.std() > 0


def test_bigg_vision_file_gives_the_transformers_image_embeds(hub, tiny_open_clip_names, tmp_path):
    """At toy size, in fp16 as h94 ships its bigG file: the converted tower gives the transformers embeddings."""
    folder = tmp_path / "image_encoder"
    vision = tiny_clip_vision(TINY_VIT_BIGG, seed=4).half()
    vision.save_pretrained(folder, safe_serialization=True)
    vision.float()  # the weights rounded to fp16, computed in fp32 as zeroft's encoder does on a CPU
    fake_hub_repo(hub, IP_ADAPTER_REPO, {BIGG_ENCODER_FILE: folder / "model.safetensors",
                                         "sdxl_models/image_encoder/config.json": folder / "config.json"})
    encoder = ObjectEncoder.from_config(IP_ADAPTER_SDXL.encoder_config())
    assert encoder.embed_dim == TINY_VIT_BIGG["embed_dim"]
    pixels = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = vision(pixel_values=pixels).image_embeds
    assert torch.allclose(encoder(pixels), expected, atol=1e-5)


def test_bigg_vision_file_fits_open_clip_vit_bigg_14_at_full_size():
    """Shapes only, on the meta device: h94's bigG config converts into ViT-bigG-14's tower tensor for tensor."""
    import open_clip
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from zeroft.encoder import _transformers_to_open_clip, build_visual

    with torch.device("meta"):
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**IP_ADAPTER_BIGG_VISION))
        tower = build_visual(open_clip.get_model_config("ViT-bigG-14"))
    converted = _transformers_to_open_clip(vision.state_dict())
    expected = tower.state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert round(sum(v.numel() for v in converted.values()) / 1e5) / 10 == 1844.9  # h94's model card: 1844.9M


def test_the_real_adapter_widths_name_the_encoder_they_need():
    """At the real sizes (open_clip's own configs): 1280-d is ViT-bigG/14, 1024-d is ViT-H/14."""
    sdxl = {"image_proj.proj.weight": torch.empty(4 * 2048, 1280)}
    vit_h = {"image_proj.proj.weight": torch.empty(4 * 2048, 1024)}
    with pytest.raises(InputError, match=r"1280-d.*ViT-H-14 gives 1024-d.*ViT-bigG-14.*sdxl_models/image_encoder"):
        check_adapter_encoder(sdxl, IP_ADAPTER_SDXL_VIT_H.encoder_config())
    with pytest.raises(InputError, match=r"1024-d.*ViT-bigG-14 gives 1280-d.*ViT-H-14.*models/image_encoder/model"):
        check_adapter_encoder(vit_h, IP_ADAPTER_SDXL.encoder_config())
    check_adapter_encoder(sdxl, IP_ADAPTER_SDXL.encoder_config())
    check_adapter_encoder(vit_h, IP_ADAPTER_SDXL_VIT_H.encoder_config())
    with pytest.raises(InputError, match="is not an IP-Adapter weight file"):
        check_adapter_encoder({"ip_adapter.1.to_k_ip.weight": torch.empty(1)}, IP_ADAPTER_SDXL.encoder_config())
    # IP-Adapter Plus: the resampler's input is the tower's width (ViT-H/14 1280, bigG/14 1664), not the embedding's
    plus_vit_h = {"image_proj.proj_in.weight": torch.empty(1280, 1280), "image_proj.latents": torch.empty(1, 16, 1280)}
    check_adapter_encoder(plus_vit_h, IP_ADAPTER_SDXL_VIT_H.encoder_config())
    with pytest.raises(InputError, match=r"1280-d patch tokens.*ViT-bigG-14 gives 1664-d.*ViT-H-14"):
        check_adapter_encoder(plus_vit_h, IP_ADAPTER_SDXL.encoder_config())


def test_an_sdxl_adapter_with_the_vit_h_encoder_is_refused_before_the_base_is_touched(
        hub, public_repos, tiny_open_clip_names, tmp_path, monkeypatch):
    """ip-adapter_sdxl.safetensors (bigG-wide) imported as the ViT-H preset: a plain message naming the
    encoder it needs, with the base model absent from the cache, so it is not the base that errors."""
    fill_hub(hub, public_repos, leave_out=(SDXL_REPO,))
    adapter = copy_repo_file(public_repos, IP_ADAPTER_REPO, IP_ADAPTER_SDXL.adapter_file,
                             tmp_path / "downloads" / "ip-adapter_sdxl.safetensors")
    with pytest.raises(InputError, match=r"ip-adapter_sdxl\.safetensors.*ViT-bigG-14.*sdxl_models/image_encoder"):
        import_ip_adapter(tmp_path / "imported", adapter_file=adapter, preset=IP_ADAPTER_SDXL_VIT_H)
    assert not (tmp_path / "imported").exists()


def test_a_preset_folder_builds_once(public_hub, monkeypatch):
    first = preset_folder("ip-adapter-sdxl")
    written = (first / "adapter.safetensors").stat().st_mtime_ns
    monkeypatch.setattr("zeroft.presets.import_ip_adapter", lambda *a, **k: pytest.fail("built twice"))
    assert preset_folder("ip-adapter-sdxl") == first
    assert (first / "adapter.safetensors").stat().st_mtime_ns == written
    assert zeroft.ZeroFTConfig.load(first).backbone == "sdxl"


def test_load_pipeline_refuses_a_mismatched_checkpoint_before_the_base_is_touched(
        hub, public_repos, tiny_open_clip_names, tmp_path):
    """A checkpoint pairing ip-adapter_sdxl.safetensors with ViT-H/14: the loader names the encoder it
    needs, though the SDXL base is absent from the cache (it is not the base that errors)."""
    fill_hub(hub, public_repos, leave_out=(SDXL_REPO,))
    folder = tmp_path / "mismatched"
    folder.mkdir()
    copy_repo_file(public_repos, IP_ADAPTER_REPO, IP_ADAPTER_SDXL.adapter_file, folder / "adapter.safetensors")
    IP_ADAPTER_SDXL_VIT_H.zeroft_config(TINY_VIT_BIGG["embed_dim"], 64, 4).save(folder)
    with pytest.raises(InputError, match=r"40-d.*ViT-H-14 gives 32-d.*ViT-bigG-14.*sdxl_models/image_encoder"):
        zeroft.load_pipeline(folder, device="cpu", masker="border")


@pytest.mark.parametrize("name", [n for n, p in IP_ADAPTER_PRESETS.items() if p.backbone != "flux"])  # FLUX:
def test_every_preset_generates_with_int8_the_cli_offers_it_with(public_hub, photo, name):  # test_flux_presets.py
    """The CLI offers every preset with --quantization int8 on a CPU (bnb modes are refused there with a message)."""
    pipe = zeroft.load_pipeline(name, device="cpu", masker="border", quantization="int8")
    layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    projection = layer.proj_in.weight if pipe.uses_patch_tokens else layer.image_embeds.weight  # Plus: the resampler's
    assert pipe.quantization == "int8" and type(projection).__name__ == "Int8Tensor"
    size = IP_ADAPTER_PRESETS[name].native_size // 4
    out = pipe("a toy on a beach", object_image=photo, num_inference_steps=2, height=size, width=size, seed=0)
    assert out.images[0].size == (size, size) and out.settings.quantization == "int8"
    with pytest.raises(zeroft.InputError, match="needs an NVIDIA GPU"):
        zeroft.load_pipeline(name, device="cpu", masker="border", quantization="bnb-4bit")


def test_a_preset_offline_names_the_command_that_imports_a_local_copy(hub, tmp_path, monkeypatch):
    """preset_folder takes no file, so its advice is the command that imports one into the folder it fills."""
    from dataclasses import replace

    monkeypatch.setenv("ZEROFT_HOME", str(tmp_path / "home"))
    with pytest.raises(zeroft.HubUnavailableError) as error:
        preset_folder("ip-adapter-sdxl-vit-h")
    assert "pass a local copy" not in str(error.value)
    assert str(error.value).endswith(
        "zeroft import-ip-adapter --preset ip-adapter-sdxl-vit-h --adapter-file <path to ip-adapter_sdxl_vit-h.safetensors> "
        f"--out {tmp_path / 'home' / 'ip-adapter-sdxl-vit-h'}")
    assert not (tmp_path / "home").exists()
    # a preset the caller changed is no command's preset: only the library call can take the file
    with pytest.raises(zeroft.HubUnavailableError, match="pass a local copy of ip-adapter_sd15.safetensors as adapter_file"):
        import_ip_adapter(tmp_path / "custom", preset=replace(IP_ADAPTER_SD15, base_model="someone/another-sd15"))


def test_a_preset_that_cannot_fit_this_cpus_memory_is_refused_before_anything_loads(public_hub, monkeypatch,
                                                                                   tmp_path, capsys):
    """SDXL with ViT-H in fp32 peaked at 18.9 GiB, int8 at 10.2: with 12 GiB available, fp32 is refused with int8
    named, int8 loads; with 6 GiB neither fits; a machine that does not say (None) is not checked."""
    from zeroft import memory
    from zeroft.cli import main

    def build_nothing(*args, **kwargs):
        raise AssertionError("nothing may be built or downloaded before the memory check")

    monkeypatch.setattr(memory, "available_gib", lambda: 12.0)
    with monkeypatch.context() as patched:
        patched.setattr(zeroft.loading, "resolve_checkpoint", build_nothing)
        with pytest.raises(zeroft.InputError, match=r"18.9 GiB .* 12.0 GiB available.* int8 .*10.2 GiB"):
            zeroft.load_pipeline("ip-adapter-sdxl-vit-h", device="cpu")
    assert zeroft.load_pipeline("ip-adapter-sdxl-vit-h", device="cpu", quantization="int8", masker="border")
    monkeypatch.setattr(memory, "available_gib", lambda: 6.0)
    with pytest.raises(zeroft.InputError, match="a machine with more memory, or a GPU"):
        zeroft.load_pipeline("ip-adapter-sdxl", device="cpu", quantization="int8")
    capsys.readouterr()
    status = main(["generate", "--checkpoint", "ip-adapter-sdxl", "--image", "assets/examples/object-01.png",
                   "--prompt", "a toy", "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ip-adapter-sdxl in float32") and "int8" not in err[0]
    monkeypatch.setattr(memory, "available_gib", lambda: None)
    assert zeroft.load_pipeline("ip-adapter-sd15", device="cpu", masker="border")


def test_the_default_loads_offline_from_a_cache_holding_only_what_it_fetches(hub, public_repos, tiny_open_clip_names,
                                                                             photo, tmp_path, monkeypatch, caplog, capfd):
    """A Hub cache with exactly IPAdapterPreset.hub_files (what README's preload_from_hub puts in a Space): no
    vae_1_0/ or fp16 copies needed, and a user who asked for offline mode reads no "could not reach the Hub"."""
    import fnmatch
    import logging

    from hubcache import fake_hub_repo

    preset = IP_ADAPTER_PRESETS["ip-adapter-sdxl-vit-h"]
    for repo, patterns in preset.hub_files().items():
        files = {p.relative_to(public_repos[repo]).as_posix(): p for p in public_repos[repo].rglob("*") if p.is_file()}
        fake_hub_repo(hub, repo, {name: path for name, path in files.items()
                                  if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)})
    monkeypatch.setenv("ZEROFT_HOME", str(tmp_path / "zeroft-home"))
    caplog.set_level(logging.WARNING)
    for quantization in ("none", "int8"):
        pipe = zeroft.load_pipeline("ip-adapter-sdxl-vit-h", device="cpu", masker="border", quantization=quantization)
        out = pipe("a toy", object_image=photo, num_inference_steps=1, height=256, width=256, seed=0)
        assert out.images[0].size == (256, 256)
    said = caplog.text + capfd.readouterr().err
    assert not any(text in said for text in ("Could not reach", "Couldn't connect", "not fully cached")), said


@pytest.mark.parametrize("preset, given, words", [
    ("ip-adapter-plus-sd15", "models/ip-adapter_sd15.safetensors",
     "is a plain IP-Adapter file, but this preset takes an IP-Adapter Plus file: import it with --preset ip-adapter-sd15"),
    ("ip-adapter-sdxl-vit-h", "sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors",
     "is an IP-Adapter Plus file, but this preset takes a plain IP-Adapter file: import it with --preset "
     "ip-adapter-plus-sdxl-vit-h"),
])
def test_a_plain_file_for_a_plus_preset_and_the_reverse_are_refused_before_any_download(
        public_repos, tmp_path, capsys, preset, given, words):
    from zeroft.cli import main

    path = copy_repo_file(public_repos, IP_ADAPTER_REPO, given, tmp_path / "adapter.safetensors")
    code = main(["import-ip-adapter", "--preset", preset, "--adapter-file", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
