"""Named checkpoints: the embedded toy model and real-scale presets built from public weights.

Each IP-Adapter preset turns one public adapter file from h94/IP-Adapter (Apache-2.0; Ye et al.,
2023) into a zeroft checkpoint under ``$ZEROFT_HOME/<name>`` on first use; the base model and the
encoder are referenced by name and downloaded when the checkpoint is first loaded.

``ip-adapter-sd15`` (about 6.8 GB in all): ``models/ip-adapter_sd15.safetensors`` (22.3M
parameters in fp16, about 45 MB), already in the layout zeroft writes; the base, Stable Diffusion
1.5 (CreativeML OpenRAIL-M): UNet, VAE and text encoder as fp32 safetensors, 4.27 GB; the image
encoder, OpenCLIP ViT-H/14 trained on LAION-2B (open_clip ``ViT-H-14`` / ``laion2b_s32b_b79k``,
MIT), from the vision-only copy h94 ships with the adapter, ``models/image_encoder/model.safetensors``:
a transformers ``CLIPVisionModelWithProjection`` (hidden 1280, 32 layers, 16 heads, patch 14,
projection 1024; 632M parameters in fp32), 2,528,373,448 bytes, sha256 6ca9667d…7b030. Seen in
the copies of that folder at h94 commits 0859e809 and 5c2eae7d (Hub repos RyanJDick/ and
InvokeAI/ip_adapter_sd_image_encoder). zeroft converts its keys into open_clip's image tower
(zeroft.encoder.visual_state_dict). open_clip's own file for the tag
(laion/CLIP-ViT-H-14-laion2B-s32B-b79K, ``open_clip_model.safetensors``) holds the text tower
too, about 3.9 GB, which made the first download 8.3 GB.

``ip-adapter-sdxl-vit-h``: ``sdxl_models/ip-adapter_sdxl_vit-h.safetensors`` on Stable Diffusion
XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0, CreativeML Open RAIL++-M; fp32 UNet
10.3 GB, both text encoders 3.3 GB, VAE 0.3 GB), with the same ViT-H/14 encoder file as above.

``ip-adapter-sdxl``: ``sdxl_models/ip-adapter_sdxl.safetensors`` on the same base, with OpenCLIP
ViT-bigG/14 trained on LAION-2B (open_clip ``ViT-bigG-14`` / ``laion2b_s39b_b160k``, MIT), from
h94's vision-only copy ``sdxl_models/image_encoder/model.safetensors``, about 3.69 GB, i.e. its
1,844.9M parameters in fp16. Sources: the h94/IP-Adapter model card ("OpenCLIP-ViT-bigG-14 with
1844.9M parameter", linking laion/CLIP-ViT-bigG-14-laion2B-39B-b160k); the maintainer in
tencent-ailab/IP-Adapter issue #25 (SD1.5 used ViT-H-14, SDXL ViT-bigG-14 laion2B-39B-b160k) and
the file sizes listed in issue #265; the folder's config.json as other loaders reproduce it
(InvokeAI's CLIP-vision loader, ComfyUI's clip_vision_config_g.json): hidden 1664, intermediate
8192, 48 layers, 16 heads (head width 104), patch 14, image 224, projection 1280, gelu. That is
open_clip's ViT-bigG-14 (width 1664, head_width 104, mlp_ratio 4.9231: int(1664·4.9231) = 8192,
embed_dim 1280), tensor for tensor (tests/test_presets.py checks the shapes at full size).

``ip-adapter-plus-sd15`` and ``ip-adapter-plus-sdxl-vit-h``: IP-Adapter **Plus**,
``models/ip-adapter-plus_sd15.safetensors`` (98 MB) and ``sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors``
(848 MB), on the same bases with the same ViT-H/14 encoder file: the encoder's patch tokens (257 x 1280, the
hidden states before its last block) through a Perceiver resampler (depth 4, 64-wide heads) to 16 tokens
(zeroft.adapter, diffusers' ``IPAdapterPlusImageProjection``).

``ip-adapter-flux-dev``: FLUX.1 [dev] (black-forest-labs/FLUX.1-dev: a 12B transformer, CLIP ViT-L/14 and T5-XXL
text encoders; FLUX.1 [dev] Non-Commercial License, a gated repository whose licence must be accepted on the Hub
before the first download) with XLabs' IP-Adapter v2 (XLabs-AI/flux-ip-adapter-v2, ``ip_adapter.safetensors``,
same licence: 16 tokens of 4096 from the pooled embedding, object attention in the 19 double-stream blocks;
zeroft.adapter_flux), whose encoder is OpenAI's CLIP ViT-L/14 (openai/clip-vit-large-patch14, MIT: open_clip
``ViT-L-14-quickgelu``, read from the whole-CLIP transformers file ``model.safetensors``, 1.7 GB, vision tower only).
Its defaults: w_text 1 (no true text guidance: the text rides on FLUX.1-dev's embedded guidance, 3.5), w_obj 1
(stock diffusers with the adapter at scale 1), 28 steps as FluxPipeline: a starting point, not a measured optimum.

Pairing an adapter file with the wrong encoder is the commonest IP-Adapter error users report:
:func:`check_adapter_encoder` catches it from the adapter's projection shape before any model
is downloaded. All of them need a GPU to be pleasant.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import get_backbone
from .config import ADAPTER_NAME, CONFIG_NAME, PLUS_MARKER, EncoderConfig, GenerationDefaults, ZeroFTConfig, is_plus_adapter
from .encoder import config_token_width
from .errors import HubUnavailableError, InputError
from .masking import DEFAULT_MASKER
from .model_card import write_model_card

NEGATIVE_PROMPT = "lowres, bad anatomy, worst quality, low quality"


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
    """Where the public IP-Adapter weights of one preset live and what they were made for.

    The defaults are the SD1.5 preset; the SDXL ones change the fields below (module docstring).
    """

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the base the adapter was trained on
    adapter_repo: str = "h94/IP-Adapter"
    adapter_file: str = "models/ip-adapter_sd15.safetensors"  # plain IP-Adapter: 4 tokens, 1024-d embeddings
    encoder_model: str = "ViT-H-14"  # open_clip name of the adapter's image encoder
    # open_clip's laion2b_s32b_b79k weights, vision tower only (2.53 GB instead of 3.94 GB; module docstring)
    encoder_pretrained: str = "hf-hub:h94/IP-Adapter/models/image_encoder/model.safetensors"
    encoder_title: str = "OpenCLIP ViT-H/14 LAION-2B"  # how messages and the model card name the encoder
    backbone: str = "sd"  # ZeroFTConfig.backbone: "sd" (SD1.x) or "sdxl"; its native size is the default size
    text_guidance: float = 7.5  # the base pipeline's usual value (diffusers: 7.5 for SD1.5, 5.0 for SDXL)
    negative_prompt: str = NEGATIVE_PROMPT
    base_license: str = "CreativeML OpenRAIL-M (Stable Diffusion 1.5)"
    projection: str = "linear"  # ZeroFTConfig.projection: "plus" for the IP-Adapter Plus files
    # w_obj: 5 for the plain files; half of w_text for Plus, which copies its reference (DreamBench++: prompt
    # following 0.413 against 0.64 for plain IP-Adapter ViT-G SDXL), as diffusers' IP-Adapter guide runs adapters at
    # scale 0.5, which "typically produces balanced results". A starting point, not a measured optimum.
    object_guidance: float | None = None  # None: 5.0
    steps: int = 30
    adapter_license: str = "Apache-2.0"
    encoder_license: str = "MIT"
    # One line said at the first download of a preset whose weights carry conditions (FLUX.1 [dev]): the model card,
    # the CLI and the app show it too.
    licence_note: str | None = None

    @property
    def native_size(self) -> int:
        return get_backbone(self.backbone).native_size

    def hub_files(self) -> dict[str, list[str]]:
        """What loading this preset fetches from the Hub, by repository: the adapter file, the encoder's weights
        file, and the base model's files (``Backbone.hub_file_patterns``, patterns as ``snapshot_download`` takes
        them). README.md's ``preload_from_hub`` names the same files for the app's default preset."""
        files = {self.adapter_repo: [self.adapter_file]}
        if self.encoder_pretrained.startswith("hf-hub:"):
            repo_id = "/".join(self.encoder_pretrained.removeprefix("hf-hub:").split("/")[:2])
            path = self.encoder_pretrained.removeprefix(f"hf-hub:{repo_id}/")
            files.setdefault(repo_id, []).append(path)
        files.setdefault(self.base_model, []).extend(get_backbone(self.backbone).hub_file_patterns())
        return files

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model_name=self.encoder_model, pretrained=self.encoder_pretrained,
                             background_fill="white", crop_to_object=True)

    def zeroft_config(self, image_embed_dim: int, cross_attention_dim: int, num_tokens: int) -> ZeroFTConfig:
        """The checkpoint config for an adapter file of these dimensions."""
        return ZeroFTConfig(
            base_model=self.base_model,
            backbone=self.backbone,
            encoder=self.encoder_config(),
            projection=self.projection,
            image_embed_dim=image_embed_dim,
            cross_attention_dim=cross_attention_dim,
            num_tokens=num_tokens,
            masker=DEFAULT_MASKER,
            defaults=GenerationDefaults(text_guidance=self.text_guidance,
                                        object_guidance=self.object_guidance if self.object_guidance is not None else 5.0,
                                        steps=self.steps,
                                        height=self.native_size, width=self.native_size,
                                        negative_prompt=self.negative_prompt),
            training={"source": f"{self.adapter_repo}/{self.adapter_file} "
                                f"(IP-Adapter{' Plus' if self.projection == 'plus' else ''}, Ye et al. 2023); "
                                "not trained by zeroft"},
            licenses={"adapter": f"{self.adapter_license} ({self.adapter_repo})",
                      "encoder": f"{self.encoder_license} ({self.encoder_title})", "base_model": self.base_license,
                      **({"note": self.licence_note} if self.licence_note else {})},
        )


IP_ADAPTER_SD15 = IPAdapterPreset()
_SDXL = dict(base_model="stabilityai/stable-diffusion-xl-base-1.0", backbone="sdxl", text_guidance=5.0,
             base_license="CreativeML Open RAIL++-M (Stable Diffusion XL base 1.0)")
IP_ADAPTER_SDXL_VIT_H = IPAdapterPreset(adapter_file="sdxl_models/ip-adapter_sdxl_vit-h.safetensors", **_SDXL)
IP_ADAPTER_SDXL = IPAdapterPreset(
    adapter_file="sdxl_models/ip-adapter_sdxl.safetensors", encoder_model="ViT-bigG-14",
    encoder_pretrained="hf-hub:h94/IP-Adapter/sdxl_models/image_encoder/model.safetensors",
    encoder_title="OpenCLIP ViT-bigG/14 LAION-2B", **_SDXL)
IP_ADAPTER_PLUS_SD15 = IPAdapterPreset(adapter_file="models/ip-adapter-plus_sd15.safetensors", projection="plus",
                                       object_guidance=3.75)  # half of SD1.5's w_text 7.5
IP_ADAPTER_PLUS_SDXL_VIT_H = IPAdapterPreset(adapter_file="sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors",
                                             projection="plus", object_guidance=2.5, **_SDXL)  # half of w_text 5
FLUX_DEV_LICENCE_NOTE = ("FLUX.1 [dev] weights are under the FLUX.1 [dev] Non-Commercial License (no commercial use); "
                         "the repository is gated: accept the licence at huggingface.co/black-forest-labs/FLUX.1-dev "
                         "and log in (hf auth login) before the first download.")
IP_ADAPTER_FLUX_DEV = IPAdapterPreset(
    base_model="black-forest-labs/FLUX.1-dev", adapter_repo="XLabs-AI/flux-ip-adapter-v2",
    adapter_file="ip_adapter.safetensors", encoder_model="ViT-L-14-quickgelu",
    encoder_pretrained="hf-hub:openai/clip-vit-large-patch14/model.safetensors", encoder_title="OpenAI CLIP ViT-L/14",
    backbone="flux", text_guidance=1.0, object_guidance=1.0, negative_prompt="", steps=28,
    base_license="FLUX.1 [dev] Non-Commercial License (black-forest-labs/FLUX.1-dev, gated)",
    adapter_license="FLUX.1 [dev] Non-Commercial License", licence_note=FLUX_DEV_LICENCE_NOTE)
IP_ADAPTER_PRESETS = {"ip-adapter-sd15": IP_ADAPTER_SD15, "ip-adapter-sdxl-vit-h": IP_ADAPTER_SDXL_VIT_H,
                      "ip-adapter-sdxl": IP_ADAPTER_SDXL, "ip-adapter-plus-sd15": IP_ADAPTER_PLUS_SD15,
                      "ip-adapter-plus-sdxl-vit-h": IP_ADAPTER_PLUS_SDXL_VIT_H, "ip-adapter-flux-dev": IP_ADAPTER_FLUX_DEV}
PRESET_NAMES = ("zeroft-toy", *IP_ADAPTER_PRESETS)


PLUS_INPUT = "image_proj.proj_in.weight"  # (resampler width, token width): an IP-Adapter Plus file's input


def _adapter_shapes(adapter: Mapping[str, torch.Tensor] | str | Path) -> dict[str, tuple[int, ...]]:
    """The shapes of the projection's input weights and of a Plus file's queries, from a state dict or a file (one
    header read, no tensors)."""
    names = ("image_proj.proj.weight", PLUS_INPUT, PLUS_MARKER)
    if isinstance(adapter, Mapping):
        return {name: tuple(adapter[name].shape) for name in names if name in adapter}
    from safetensors import safe_open

    with safe_open(str(adapter), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in names if name in f.keys()}


def adapter_is_plus(adapter: Mapping[str, torch.Tensor] | str | Path) -> bool:
    """True for an IP-Adapter Plus file (a resampler from the encoder's patch tokens)."""
    return is_plus_adapter(_adapter_shapes(adapter))


def adapter_embed_dim(adapter: Mapping[str, torch.Tensor] | str | Path) -> int:
    """The width of the encoder output an IP-Adapter state dict or safetensors file was trained on: the pooled
    embedding's (``image_proj.proj.weight`` is (num_tokens · cross_attention_dim, D)), or for a Plus file the patch
    tokens' (``image_proj.proj_in.weight`` is (resampler width, W)). Reads shapes only."""
    shapes = _adapter_shapes(adapter)
    shape = shapes.get(PLUS_INPUT, shapes.get("image_proj.proj.weight"))
    if shape is None or len(shape) != 2:
        raise InputError(f"{_label(adapter)} is not an IP-Adapter weight file: it has neither image_proj.proj.weight "
                         f"(IP-Adapter) nor {PLUS_INPUT} (IP-Adapter Plus).")
    return int(shape[1])


def encoder_embed_dim(encoder: EncoderConfig, root: str | Path | None = None, tokens: bool = False) -> int | None:
    """The embedding width ``encoder`` gives (``tokens``: its patch tokens' width, the tower's), from configs alone;
    None where that needs a download."""
    if encoder.path is not None:
        config_file = (Path(encoder.path) if root is None else Path(root) / encoder.path) / "open_clip_config.json"
        if not config_file.is_file():
            return None
        model_cfg = json.loads(config_file.read_text())["model_cfg"]
    elif encoder.model_name.startswith("hf-hub:"):
        return None
    else:
        import open_clip

        model_cfg = open_clip.get_model_config(encoder.model_name)
        if model_cfg is None:
            return None
    return config_token_width(model_cfg["vision_cfg"]) if tokens else int(model_cfg["embed_dim"])


def _label(adapter) -> str:
    return "The adapter state dict" if isinstance(adapter, Mapping) else f"The adapter file {Path(adapter).name}"


def check_adapter_encoder(adapter: Mapping[str, torch.Tensor] | str | Path, encoder: EncoderConfig,
                          root: str | Path | None = None) -> None:
    """Refuse an adapter paired with an encoder of another embedding width, naming the one it needs.

    Reads shapes and configs only, so it runs before any model is downloaded or built.

    Args:
        adapter: IP-Adapter state dict, or its safetensors file.
        encoder: the encoder it is to be used with; ``root`` resolves ``encoder.path``.

    Raises:
        InputError: the widths differ (e.g. ``ip-adapter_sdxl.safetensors``, 1280-d, with ViT-H/14,
            1024-d); the message names the encoders of the presets that fit.
    """
    plus = adapter_is_plus(adapter)
    need, have = adapter_embed_dim(adapter), encoder_embed_dim(encoder, root, tokens=plus)
    if have is None or have == need:
        return
    what = "patch tokens" if plus else "image embeddings"
    fits: dict[tuple[str, str, str], list[str]] = {}  # encoder → the presets that use it
    for name, p in IP_ADAPTER_PRESETS.items():
        if encoder_embed_dim(p.encoder_config(), tokens=plus) == need:
            fits.setdefault((p.encoder_title, p.encoder_model, p.encoder_pretrained), []).append(name)
    hint = "; or ".join(f"{title} (open_clip {model}, weights {pretrained.removeprefix('hf-hub:')}, as in "
                        f"{' and '.join(names)})" for (title, model, pretrained), names in fits.items())
    raise InputError(
        f"{_label(adapter)} was made for {need}-d {what}, but the encoder {encoder.model_name} gives "
        f"{have}-d. " + (f"It needs {hint}." if hint else f"Use an image encoder with {need}-d {what}.")
    )


def import_ip_adapter(folder: str | Path, adapter_file: str | Path | None = None,
                      preset: IPAdapterPreset = IP_ADAPTER_SD15) -> Path:
    """Write a zeroft checkpoint folder that uses public IP-Adapter weights.

    Args:
        folder: destination folder.
        adapter_file: a local copy of the preset's adapter file; default: download it.
        preset: which weights (see :class:`IPAdapterPreset`).

    Raises:
        InputError: ``folder`` is a file or cannot be made; the file is missing, not safetensors, no
            plain IP-Adapter, or does not fit the preset's encoder.
        HubUnavailableError: the file was to be downloaded and the Hub could not be reached.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    folder = Path(folder)
    # Checked before the download, so a mistyped --out costs no minutes of downloading.
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{str(folder)!r} is an existing file, not a folder; give a folder for the checkpoint.")
    if adapter_file is None:
        from huggingface_hub import hf_hub_download

        if preset.licence_note:
            logging.getLogger(__name__).warning(preset.licence_note)

        try:
            adapter_file = hf_hub_download(preset.adapter_repo, preset.adapter_file)
        except Exception as error:
            # Advice as a command: most callers take no file (a preset name given to zeroft.locate, the
            # app or the evaluator imports into $ZEROFT_HOME, where this command's result is then found).
            name = next((n for n, p in IP_ADAPTER_PRESETS.items() if p == preset), None)
            file_name = Path(preset.adapter_file).name
            advice = (f"pass a local copy of {file_name} as adapter_file" if name is None else
                      f"get {file_name} another way and import it with: zeroft import-ip-adapter --preset {name} "
                      f"--adapter-file <path to {file_name}> --out {shlex.quote(str(folder))}")
            raise HubUnavailableError(
                f"Could not download {preset.adapter_file} from {preset.adapter_repo} ({type(error).__name__}). "
                f"Check the network, or {advice}"
            ) from error
    label = Path(adapter_file).name
    if not Path(adapter_file).is_file():
        raise InputError(f"The adapter file {str(adapter_file)!r} does not exist or is not a file.")
    try:
        with safe_open(str(adapter_file), framework="pt") as f:
            keys = set(f.keys())
    except (SafetensorError, OSError) as error:
        raise InputError(f"The adapter file {label} is not a safetensors file zeroft can read ({error}).") from None
    state = None
    if preset.backbone == "flux":  # XLabs' key names, renamed as diffusers renames them (zeroft.adapter_flux)
        from .adapter_flux import flux_adapter_layout

        with safe_open(str(adapter_file), framework="pt") as f:
            try:
                state = flux_adapter_layout({k: f.get_tensor(k) for k in f.keys()})
            except ValueError as error:
                raise InputError(f"The adapter file {label} is not a FLUX IP-Adapter file: {error}.") from None
        keys = set(state)
    plus = is_plus_adapter(keys)
    if plus != (preset.projection == "plus"):
        given, wanted = ("an IP-Adapter Plus", "a plain IP-Adapter") if plus else ("a plain IP-Adapter", "an IP-Adapter Plus")
        others = [n for n, p in IP_ADAPTER_PRESETS.items()
                  if (p.projection == "plus") == plus and p.backbone == preset.backbone]
        raise InputError(f"The adapter file {label} is {given} file, but this preset takes {wanted} file"
                         + (f": import it with --preset {others[0]}." if others else "."))
    needed = ((PLUS_MARKER, PLUS_INPUT, "image_proj.proj_out.weight", "image_proj.norm_out.weight") if plus else ("image_proj.proj.weight", "image_proj.norm.weight"))
    kind = "IP-Adapter Plus" if plus else "plain IP-Adapter"
    if any(k not in keys for k in needed) or not any(k.startswith("ip_adapter.") for k in keys):
        raise InputError(f"The adapter file {label} is not a {kind} weight file: it needs "
                         f"{', '.join(needed)} and ip_adapter.* weights.")
    check_adapter_encoder(adapter_file if state is None else state, preset.encoder_config())
    if state is None:
        with safe_open(str(adapter_file), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    if plus:
        from .adapter import check_plus_projection

        try:
            check_plus_projection({k.removeprefix("image_proj."): v for k, v in state.items()
                                   if k.startswith("image_proj.")})
        except ValueError as error:
            raise InputError(f"The adapter file {label}: {error}.") from None
        embed_dim = state[PLUS_INPUT].shape[1]  # the encoder's token width
        cross_dim, num_tokens = state["image_proj.proj_out.weight"].shape[0], state[PLUS_MARKER].shape[1]
    else:
        proj = state["image_proj.proj.weight"]  # (num_tokens · cross_dim, image_embed_dim)
        norm = state["image_proj.norm.weight"]  # (cross_dim,)
        if norm.ndim != 1 or norm.shape[0] == 0 or proj.shape[0] % norm.shape[0]:
            raise InputError(f"The adapter file {label} is not a plain IP-Adapter weight file: image_proj.proj.weight "
                             f"{tuple(proj.shape)} does not split into tokens of image_proj.norm.weight's "
                             f"{tuple(norm.shape)}.")
        cross_dim = norm.shape[0]
        embed_dim, num_tokens = proj.shape[1], proj.shape[0] // cross_dim
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"Cannot make the checkpoint folder {str(folder)!r} ({error.strerror or error}); "
                         "give a folder you can write to.") from None
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / ADAPTER_NAME), metadata={"format": "pt"})
    config = preset.zeroft_config(embed_dim, cross_dim, num_tokens)
    config.save(folder)
    write_model_card(folder, config)
    return folder


def preset_folder(name: str) -> Path | None:
    """The local folder for a preset name, building it on first use; None if not a preset."""
    if name in ("zeroft-toy", "default"):
        return EMBEDDED_CHECKPOINT
    preset = IP_ADAPTER_PRESETS.get(name)
    if preset is None:
        return None
    cache = Path(os.environ.get("ZEROFT_HOME", Path.home() / ".cache" / "zeroft")) / name
    if not (cache / ADAPTER_NAME).is_file():
        import_ip_adapter(cache, preset=preset)
    else:
        config = ZeroFTConfig.load(cache)
        if config.encoder != preset.encoder_config():
            # written by an older zeroft (the whole-CLIP encoder file): point it to the current source
            config = config.replace(encoder=preset.encoder_config())
            config.save(cache)
            write_model_card(cache, config)
    return cache
