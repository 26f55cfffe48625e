"""A fabricated Hugging Face cache: tiny weights under the public repositories' real file names.

The cache is laid out as huggingface_hub writes it (``hub/models--ORG--NAME/`` with ``blobs/``,
``snapshots/<commit>/`` links and ``refs/main``) and read offline, so the Hub, diffusers and
open_clip resolution code runs exactly as for the real weights. Three repositories are built:

- ``stable-diffusion-v1-5/stable-diffusion-v1-5`` and ``stabilityai/stable-diffusion-xl-base-1.0``:
  ``model_index.json`` plus one folder per part (``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``; SDXL also ``text_encoder_2/``, ``tokenizer_2/``) with
  ``config.json`` and ``diffusion_pytorch_model.safetensors`` / ``model.safetensors``, the
  schedulers the real repos name (PNDM, Euler) and a VAE that downsamples 8 times like theirs;
  SDXL also with files of the real repo zeroft must never fetch (``vae_1_0/``, fp16 copies, the
  single-file ``sd_xl_base_1.0.safetensors``);
- ``h94/IP-Adapter``: ``models/ip-adapter_sd15.safetensors``, ``models/ip-adapter-plus_sd15.safetensors``,
  ``models/image_encoder/``, ``sdxl_models/ip-adapter_sdxl.safetensors``,
  ``sdxl_models/ip-adapter_sdxl_vit-h.safetensors``, ``sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors``,
  ``sdxl_models/image_encoder/``, the encoders as transformers ``CLIPVisionModelWithProjection``.

FLUX.1's repositories are built on their own (:func:`write_flux_repos`): ``black-forest-labs/FLUX.1-dev`` (FluxPipeline's
layout: transformer/, two text encoders, a T5 tokenizer, an 8x VAE with FLUX's scale and shift),
``XLabs-AI/flux-ip-adapter-v2`` (``ip_adapter.safetensors`` in XLabs' own key names, 16 tokens) and
``openai/clip-vit-large-patch14`` (a whole transformers ``CLIPModel``, QuickGELU, ``model.safetensors``).

open_clip's names ``ViT-H-14``, ``ViT-bigG-14`` and ``ViT-L-14-quickgelu`` are pointed to tiny configs of the same
shape family while a test runs (:func:`tiny_open_clip_names`), so every name in a preset is the real one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
IP_ADAPTER_REPO = "h94/IP-Adapter"

# ViT-H/14 and ViT-bigG/14 at 1/32 of their widths: the same head widths relative to the width, bigG's
# odd MLP ratio (int(52 · 4.9231) = 256, as int(1664 · 4.9231) = 8192), patch 14, 2 layers, 28 px.
TINY_VIT_H = {"embed_dim": 32, "vision_cfg": {"image_size": 28, "layers": 2, "width": 40, "head_width": 10,
                                              "patch_size": 14},
              "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1}}
TINY_VIT_BIGG = {"embed_dim": 40, "vision_cfg": {"image_size": 28, "layers": 2, "width": 52, "head_width": 13,
                                                 "mlp_ratio": 4.9231, "patch_size": 14},
                 "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 40, "heads": 2, "layers": 1}}
# OpenAI's CLIP ViT-L/14 (FLUX's XLabs adapter), QuickGELU as trained: open_clip ViT-L-14-quickgelu at 1/32 width.
TINY_VIT_L = {"embed_dim": 24, "quick_gelu": True,
              "vision_cfg": {"image_size": 28, "layers": 2, "width": 32, "head_width": 8, "patch_size": 14},
              "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 24, "heads": 2, "layers": 1}}
TINY_OPEN_CLIP_NAMES = {"ViT-H-14": TINY_VIT_H, "ViT-bigG-14": TINY_VIT_BIGG, "ViT-L-14-quickgelu": TINY_VIT_L}
FLUX_DEV_REPO = "black-forest-labs/FLUX.1-dev"
XLABS_REPO = "XLabs-AI/flux-ip-adapter-v2"
OPENAI_CLIP_REPO = "openai/clip-vit-large-patch14"


def fake_hub_repo(hub: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put ``files`` ({path in repo: local file}) into a Hub-layout cache under ``hub``; the snapshot folder."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    root = hub / f"models--{repo_id.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return root / "snapshots" / commit


def fake_hub_folder(hub: Path, repo_id: str, folder: Path) -> Path:
    """Every file under ``folder`` into the cache as repo ``repo_id``, at its path relative to ``folder``."""
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return fake_hub_repo(hub, repo_id, files)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hub cache that huggingface_hub reads (offline: conftest never allows the network)."""
    from huggingface_hub import constants

    folder = tmp_path / "hf-home" / "hub"
    folder.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(folder.parent))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    assert constants.HF_HUB_OFFLINE
    return folder


@pytest.fixture
def tiny_open_clip_names(monkeypatch):
    """open_clip's ``ViT-H-14`` and ``ViT-bigG-14`` resolve to the tiny configs until the test ends."""
    from open_clip import factory

    for name, config in TINY_OPEN_CLIP_NAMES.items():
        monkeypatch.setitem(factory._MODEL_CONFIGS, name, config)
    return TINY_OPEN_CLIP_NAMES


def tiny_clip_vision(model_cfg: dict, seed: int = 0):
    """A transformers ``CLIPVisionModelWithProjection`` of the open_clip config's shape, random weights.

    The MLP width follows open_clip's rule, ``int(width · mlp_ratio)``, which is how h94's bigG file
    (intermediate_size 8192) matches open_clip's ViT-bigG-14 (mlp_ratio 4.9231).
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = model_cfg["vision_cfg"]
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=vision["width"], intermediate_size=int(vision["width"] * vision.get("mlp_ratio", 4.0)),
        num_hidden_layers=vision["layers"], num_attention_heads=vision["width"] // vision["head_width"],
        image_size=vision["image_size"], patch_size=vision["patch_size"], projection_dim=model_cfg["embed_dim"],
        hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config).eval()
    for parameter in model.parameters():  # random LayerNorm weights and biases too, so a swapped one shows
        parameter.data.normal_(0, 0.2)
    return model


def tiny_vae_f8(seed: int = 0, **config):
    """A VAE that downsamples 8 times, like SD's: a 256 px SDXL image is 32x32 latents, cheap to denoise."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=[8, 8, 8, 8], in_channels=3, out_channels=3, latent_channels=4,
                         norm_num_groups=4, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, **config)


SPECIAL_TOKENS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                  "pad_token": "<|endoftext|>"}


def _write_tokenizers(folder: Path, max_length: int = 32, names: tuple[str, ...] | None = None) -> None:
    """Each CLIP tokenizer folder (``names``; default every tokenizer*/) in the files the real repos hold (vocab.json,
    merges.txt, two configs) instead of the tokenizer.json transformers 5 writes, so the slow path that reads them is
    the one run."""
    from zeroft.tiny import byte_level_vocab

    folders = sorted(folder.glob("tokenizer*/")) if names is None else [folder / name for name in names]
    for tokenizer in folders:
        for stale in tokenizer.iterdir():
            stale.unlink()
        (tokenizer / "vocab.json").write_text(json.dumps(byte_level_vocab()))
        (tokenizer / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per byte
        (tokenizer / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS))
        (tokenizer / "tokenizer_config.json").write_text(json.dumps(
            {**SPECIAL_TOKENS, "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length}))


def _write_sd15(folder: Path, seed: int):
    """SD1.5's layout: model_index.json names the safety checker and feature extractor, as the real
    one does, but their folders are left out: zeroft never reads them, and a test fails if it tries."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from zeroft.tiny import tiny_text_encoder, tiny_tokenizer, tiny_unet

    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)  # the real repo's
    pipe = StableDiffusionPipeline(
        vae=tiny_vae_f8(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tiny_tokenizer(),
        unet=tiny_unet(seed, sample_size=64), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    index = json.loads((folder / "model_index.json").read_text())
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    _write_tokenizers(folder)
    return pipe.unet


def _write_sdxl(folder: Path, seed: int):
    from diffusers import StableDiffusionXLPipeline

    from zeroft.tiny import tiny_sdxl_base_pipeline

    parts = tiny_sdxl_base_pipeline(seed).components
    parts["vae"] = tiny_vae_f8(seed, scaling_factor=0.13025, force_upcast=True)  # SDXL's VAE settings
    pipe = StableDiffusionXLPipeline(**{k: v for k, v in parts.items() if v is not None}, add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    _write_tokenizers(folder)
    # files of the real repo that zeroft never reads: the 1.0 VAE beside the fixed one, fp16 copies, the single file
    shutil.copytree(folder / "vae", folder / "vae_1_0")
    for part, name in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model"), ("vae", "diffusion_pytorch_model")):
        shutil.copyfile(folder / part / f"{name}.safetensors", folder / part / f"{name}.fp16.safetensors")
    shutil.copyfile(folder / "unet" / "diffusion_pytorch_model.safetensors", folder / "sd_xl_base_1.0.safetensors")
    return pipe.unet


def _adapter_file(path: Path, unet, image_embed_dim: int, seed: int, plus: bool = False) -> None:
    """A plain IP-Adapter file (4 tokens from the pooled embedding), or a Plus one (16 queries of a 64-wide
    resampler from patch tokens ``image_embed_dim`` wide; h94's are 768 or 1280 wide from ViT-H/14's 1280)."""
    from zeroft.adapter import initial_adapter_state_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    state = initial_adapter_state_dict(unet, image_embed_dim, num_tokens=16 if plus else 4, seed=seed,
                                       projection="plus" if plus else "linear", resampler_width=64)
    save_file(state, str(path), metadata={"format": "pt"})


def write_public_repos(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """The three public repositories at toy size, as plain folders: {repo id: folder}.

    h94/IP-Adapter's SDXL adapters are made for the SDXL UNet, the SD1.5 one for the SD1.5 UNet, each
    for its encoder's embedding width (ViT-H: 32, bigG: 40 here; 1024 and 1280 in the real files).
    """
    folder = Path(folder)
    repos = {SD15_REPO: folder / "sd15", SDXL_REPO: folder / "sdxl", IP_ADAPTER_REPO: folder / "ip-adapter"}
    sd_unet = _write_sd15(repos[SD15_REPO], seed)
    xl_unet = _write_sdxl(repos[SDXL_REPO], seed)
    h94 = repos[IP_ADAPTER_REPO]
    _adapter_file(h94 / "models" / "ip-adapter_sd15.safetensors", sd_unet, TINY_VIT_H["embed_dim"], seed)
    _adapter_file(h94 / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors", xl_unet, TINY_VIT_H["embed_dim"], seed + 1)
    _adapter_file(h94 / "sdxl_models" / "ip-adapter_sdxl.safetensors", xl_unet, TINY_VIT_BIGG["embed_dim"], seed + 2)
    vit_h_tokens = TINY_VIT_H["vision_cfg"]["width"]  # IP-Adapter Plus reads the tower's patch tokens
    _adapter_file(h94 / "models" / "ip-adapter-plus_sd15.safetensors", sd_unet, vit_h_tokens, seed + 3, plus=True)
    _adapter_file(h94 / "sdxl_models" / "ip-adapter-plus_sdxl_vit-h.safetensors", xl_unet, vit_h_tokens, seed + 4,
                  plus=True)
    tiny_clip_vision(TINY_VIT_H, seed).save_pretrained(h94 / "models" / "image_encoder", safe_serialization=True)
    tiny_clip_vision(TINY_VIT_BIGG, seed + 1).save_pretrained(h94 / "sdxl_models" / "image_encoder",
                                                              safe_serialization=True)
    return repos


def fill_hub(hub: Path, repos: dict[str, Path], leave_out: tuple[str, ...] = ()) -> None:
    """Put the folders of :func:`write_public_repos` into the cache, but for the repos in ``leave_out``."""
    for repo_id, folder in repos.items():
        if repo_id not in leave_out:
            fake_hub_folder(hub, repo_id, folder)


def serve_repos(hub: Path, repos: dict[str, Path], home: Path, monkeypatch, leave_out: tuple[str, ...] = ()) -> dict:
    """:func:`fill_hub`, and ``home`` (empty) as ZEROFT_HOME, where the presets are imported: what a preset test
    starts from; returns ``repos``."""
    fill_hub(hub, repos, leave_out)
    monkeypatch.setenv("ZEROFT_HOME", str(home))
    return repos


def copy_repo_file(repos: dict[str, Path], repo_id: str, path: str, destination: Path) -> Path:
    """A local copy of one file of a fabricated repo (what a user passes as a local file)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(repos[repo_id] / path, destination))


def tiny_clip_model(model_cfg: dict, seed: int = 0):
    """A whole transformers ``CLIPModel`` (both towers, QuickGELU) of the open_clip config's shape, random weights:
    openai/clip-vit-large-patch14's layout."""
    from transformers import CLIPConfig, CLIPModel

    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    torch.manual_seed(seed)
    config = CLIPConfig(
        vision_config=dict(hidden_size=vision["width"], intermediate_size=4 * vision["width"],
                           num_hidden_layers=vision["layers"], num_attention_heads=vision["width"] // vision["head_width"],
                           image_size=vision["image_size"], patch_size=vision["patch_size"], hidden_act="quick_gelu",
                           projection_dim=model_cfg["embed_dim"]),  # the real config.json repeats it per tower
        text_config=dict(hidden_size=text["width"], intermediate_size=4 * text["width"], num_hidden_layers=text["layers"],
                         num_attention_heads=text["heads"], max_position_embeddings=text["context_length"],
                         vocab_size=text["vocab_size"], hidden_act="quick_gelu", projection_dim=model_cfg["embed_dim"]),
        projection_dim=model_cfg["embed_dim"])
    model = CLIPModel(config).eval()
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.2)
    return model


def xlabs_state(transformer, image_embed_dim: int, num_tokens: int, seed: int) -> dict[str, torch.Tensor]:
    """A FLUX IP-Adapter in XLabs' own key names (``ip_adapter_proj_model.*``,
    ``double_blocks.{i}.processor.ip_adapter_double_stream_{k,v}_proj.*``), which diffusers renames on loading."""
    from zeroft.adapter import initial_adapter_state_dict

    xlabs = {}
    for key, value in initial_adapter_state_dict(transformer, image_embed_dim, num_tokens, seed=seed).items():
        if key.startswith("image_proj."):
            xlabs["ip_adapter_proj_model." + key.removeprefix("image_proj.")] = value
        else:
            _, block, part, kind = key.split(".")
            name = {"to_k_ip": "ip_adapter_double_stream_k_proj", "to_v_ip": "ip_adapter_double_stream_v_proj"}[part]
            xlabs[f"double_blocks.{block}.processor.{name}.{kind}"] = value
    return xlabs


def write_flux_repos(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """FLUX.1 [dev], XLabs' IP-Adapter v2 and OpenAI's CLIP ViT-L/14 at toy size, as plain folders: {repo id: folder}."""
    from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel

    from zeroft.tiny import tiny_flux_base_pipeline

    folder = Path(folder)
    repos = {FLUX_DEV_REPO: folder / "flux-dev", XLABS_REPO: folder / "xlabs", OPENAI_CLIP_REPO: folder / "clip-l"}
    parts = tiny_flux_base_pipeline(seed).components
    torch.manual_seed(seed)
    parts["vae"] = AutoencoderKL(block_out_channels=[8, 8, 8, 8], in_channels=3, out_channels=3, latent_channels=4,
                                 norm_num_groups=4, down_block_types=["DownEncoderBlock2D"] * 4,
                                 up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, use_quant_conv=False,
                                 use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)  # FLUX's VAE
    torch.manual_seed(seed)
    parts["transformer"] = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=1,
                                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                                  pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                                  guidance_embeds=True)
    pipe = FluxPipeline(**{k: v for k, v in parts.items() if v is not None})
    pipe.save_pretrained(repos[FLUX_DEV_REPO], safe_serialization=True)
    _write_tokenizers(repos[FLUX_DEV_REPO], 32, names=("tokenizer",))  # CLIP's files; tokenizer_2/ stays T5's
    repos[XLABS_REPO].mkdir(parents=True, exist_ok=True)  # v2: 16 tokens of the T5 width
    save_file(xlabs_state(pipe.transformer, TINY_VIT_L["embed_dim"], 16, seed + 5),
              str(repos[XLABS_REPO] / "ip_adapter.safetensors"))
    tiny_clip_model(TINY_VIT_L, seed).save_pretrained(repos[OPENAI_CLIP_REPO], safe_serialization=True)
    return repos
