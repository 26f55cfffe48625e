"""Named checkpoints: the embedded toy model and real-scale presets built from public weights.

``ip-adapter-sd15`` turns the public IP-Adapter SD1.5 weights into a zeroft checkpoint. What it
downloads on first use, about 6.8 GB in all:

- the adapter, h94/IP-Adapter ``models/ip-adapter_sd15.safetensors`` (Apache-2.0; 22.3M
  parameters in fp16, about 45 MB), already in the layout zeroft writes;
- the base, Stable Diffusion 1.5 (CreativeML OpenRAIL-M): UNet, VAE and text encoder as fp32
  safetensors, 4.27 GB;
- the image encoder, OpenCLIP ViT-H/14 trained on LAION-2B (open_clip ``ViT-H-14`` /
  ``laion2b_s32b_b79k``, MIT), from the vision-only copy h94/IP-Adapter ships with the adapter,
  ``models/image_encoder/model.safetensors``: a transformers ``CLIPVisionModelWithProjection``
  (hidden 1280, 32 layers, 16 heads, patch 14, projection 1024; 632M parameters in fp32),
  2,528,373,448 bytes, sha256 6ca9667d…7b030. Seen in the copies of that folder at h94 commits
  0859e809 and 5c2eae7d (Hub repos RyanJDick/ and InvokeAI/ip_adapter_sd_image_encoder).
  zeroft converts its keys into open_clip's image tower (zeroft.encoder.visual_state_dict).
  open_clip's own file for the tag (laion/CLIP-ViT-H-14-laion2B-s32B-b79K,
  ``open_clip_model.safetensors``) holds the text tower too, about 3.9 GB, which made the
  first download 8.3 GB. No fp16 copy of either encoder file was found.

It needs a GPU to be pleasant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import ADAPTER_NAME, CONFIG_NAME, EncoderConfig, GenerationDefaults, ZeroFTConfig
from .errors import HubUnavailableError
from .model_card import write_model_card



def _embedded_checkpoint() -> Path:
    """Where the embedded toy checkpoint is: inside the installed package (``zeroft/embedded/``, which
    pyproject.toml maps from the checkout's assets/zeroft-toy), else the checkout's assets/zeroft-toy.
    When neither exists, this names the checkout's folder and the CLI and app say that it is missing.
    """
    here = Path(__file__).resolve().parent
    installed = here / "embedded"
    return installed if (installed / CONFIG_NAME).is_file() else here.parent / "assets" / "zeroft-toy"


EMBEDDED_CHECKPOINT = _embedded_checkpoint()


@dataclass(frozen=True)
class IPAdapterPreset:
    """Where the public IP-Adapter weights live and what they were made for."""

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the SD1.5 repo IP-Adapter was trained on
    adapter_repo: str = "h94/IP-Adapter"
    adapter_file: str = "models/ip-adapter_sd15.safetensors"  # plain IP-Adapter: 4 tokens, 1024-d embeddings
    encoder_model: str = "ViT-H-14"  # open_clip name of IP-Adapter's image encoder
    # open_clip's laion2b_s32b_b79k weights, vision tower only (2.53 GB instead of 3.94 GB; module docstring)
    encoder_pretrained: str = "hf-hub:h94/IP-Adapter/models/image_encoder/model.safetensors"

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model_name=self.encoder_model, pretrained=self.encoder_pretrained,
                             background_fill="white", crop_to_object=True)


IP_ADAPTER_SD15 = IPAdapterPreset()


def import_ip_adapter(folder: str | Path, adapter_file: str | Path | None = None,
                      preset: IPAdapterPreset = IP_ADAPTER_SD15) -> Path:
    """Write a zeroft checkpoint folder that uses the public IP-Adapter SD1.5 weights.

    Args:
        folder: destination folder.
        adapter_file: a local copy of ``ip-adapter_sd15.safetensors``; default: download it.
        preset: which weights (see :class:`IPAdapterPreset`).

    The base model and the encoder are referenced by name and downloaded when the
    checkpoint is first loaded.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    if adapter_file is None:
        from huggingface_hub import hf_hub_download

        try:
            adapter_file = hf_hub_download(preset.adapter_repo, preset.adapter_file)
        except Exception as error:
            raise HubUnavailableError(
                f"Could not download {preset.adapter_file} from {preset.adapter_repo} ({type(error).__name__}). "
                "Check the network, or pass a local copy of the file."
            ) from error
    with safe_open(str(adapter_file), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "image_proj.proj.weight" not in state or not any(k.startswith("ip_adapter.") for k in state):
        raise ValueError(f"{adapter_file} is not a plain IP-Adapter weight file (image_proj.proj.*, ip_adapter.*)")
    proj = state["image_proj.proj.weight"]
    cross_dim = state["image_proj.norm.weight"].shape[0]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / ADAPTER_NAME), metadata={"format": "pt"})
    config = ZeroFTConfig(
        base_model=preset.base_model,
        encoder=preset.encoder_config(),
        image_embed_dim=proj.shape[1],
        cross_attention_dim=cross_dim,
        num_tokens=proj.shape[0] // cross_dim,
        masker="rembg:u2net",
        defaults=GenerationDefaults(text_guidance=7.5, object_guidance=5.0, steps=30, height=512, width=512,
                                    negative_prompt="lowres, bad anatomy, worst quality, low quality"),
        training={"source": f"{preset.adapter_repo}/{preset.adapter_file} (IP-Adapter, Ye et al. 2023); not trained by zeroft"},
        licenses={"adapter": "Apache-2.0 (h94/IP-Adapter)", "encoder": "MIT (OpenCLIP ViT-H/14 LAION-2B)",
                  "base_model": "CreativeML OpenRAIL-M (Stable Diffusion 1.5)"},
    )
    config.save(folder)
    write_model_card(folder, config)
    return folder


def preset_folder(name: str) -> Path | None:
    """The local folder for a preset name, building it on first use; None if not a preset."""
    if name in ("zeroft-toy", "default"):
        return EMBEDDED_CHECKPOINT
    if name == "ip-adapter-sd15":
        cache = Path(os.environ.get("ZEROFT_HOME", Path.home() / ".cache" / "zeroft")) / name
        if not (cache / ADAPTER_NAME).is_file():
            import_ip_adapter(cache)
        else:
            config = ZeroFTConfig.load(cache)
            if config.encoder != IP_ADAPTER_SD15.encoder_config():
                # written by an older zeroft (the whole-CLIP encoder file): point it to the current source
                config = config.replace(encoder=IP_ADAPTER_SD15.encoder_config())
                config.save(cache)
                write_model_card(cache, config)
        return cache
    return None


PRESET_NAMES = ("zeroft-toy", "ip-adapter-sd15")
