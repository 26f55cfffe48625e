"""The checkpoint configuration: what ``zeroft_config.json`` holds, as frozen dataclasses.

A zeroft checkpoint is a folder (local or a Hub repo) with:

- ``zeroft_config.json``: this module's :class:`ZeroFTConfig`;
- ``adapter.safetensors``: projection + per-layer object key/value weights in IP-Adapter key
  layout (``image_proj.*``, ``ip_adapter.N.to_k_ip/to_v_ip.weight``);
- ``unet/``: the whole tuned UNet, only when the whole network was trained;
- ``README.md``: the model card.

``backbone`` says which family the base model is (zeroft.backbones): Stable Diffusion 1.x
("sd") or SDXL ("sdxl"); SDXL's object tokens have the width of its two text encoders' tokens
together (``cross_attention_dim`` 2048).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .backbones import get_backbone
from .masking import DEFAULT_MASKER

CONFIG_NAME = "zeroft_config.json"
ADAPTER_NAME = "adapter.safetensors"
FORMAT_VERSION = 3  # 2 added `backbone`, 3 `projection`; older files load unchanged (SD 1.x, the pooled projection)
PROJECTIONS = ("linear", "plus")  # the object projection: see ZeroFTConfig.projection
PLUS_MARKER = "image_proj.latents"  # the resampler's queries: the key that makes an adapter file IP-Adapter Plus


def is_plus_adapter(keys) -> bool:
    """True for the keys (or a state dict) of an IP-Adapter Plus adapter file, whose projection is a resampler."""
    return PLUS_MARKER in keys


@dataclass(frozen=True)
class EncoderConfig:
    """The frozen object encoder f_o and how the photo is prepared for it."""

    model_name: str = "ViT-H-14"  # open_clip architecture; IP-Adapter SD1.5 was trained on this one
    pretrained: str | None = "laion2b_s32b_b79k"  # open_clip tag, or "hf-hub:org/name/file.safetensors" (image tower only); read as safetensors
    path: str | None = None  # sub-folder of the checkpoint in open_clip's local layout; wins over the two above
    background_fill: str = "gray"  # replaces the masked-out background (x ⊗ m): "gray" | "white" | "black" | "none"
    crop_to_object: bool = True  # crop to the mask's box before encoding, so the object fills the encoder's view
    crop_margin: float = 0.1  # box widened by this fraction of its size, keeping a little context at the edges
    views: str = "none"  # embedding averaged over views of the photo: "none" | "flip" | "rot4" | "dihedral" (see zeroft.encoder.VIEWS)


@dataclass(frozen=True)
class GenerationDefaults:
    """Settings a checkpoint was tuned for; the CLI and the app start from these."""

    text_guidance: float = 7.5  # w_text; the usual Stable Diffusion value
    object_guidance: float = 5.0  # w_obj; lower follows the text more, higher copies the object more
    steps: int = 30  # sampler steps
    height: int = 512  # the base model's native size
    width: int = 512
    negative_prompt: str = ""  # what ε(∅, ϕ) is conditioned on
    guidance_interval: tuple[float, float] | None = None  # (σ_lo, σ_hi): guidance only there (zeroft.guidance)


@dataclass(frozen=True)
class ZeroFTConfig:
    """Everything needed to rebuild a :class:`~zeroft.ZeroFTPipeline` from its folder."""

    base_model: str  # diffusers SD-family pipeline: Hub id, or a sub-folder of this checkpoint
    backbone: str = "sd"  # the base model's family, which picks the pipeline class: "sd" (1.x) | "sdxl" (zeroft.backbones)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    image_embed_dim: int = 1024  # width of the encoder output; checked against the encoder on load
    cross_attention_dim: int = 768  # the UNet's text-token width; object tokens share it
    num_tokens: int = 4  # object tokens per photo; plain diffusers `load_ip_adapter` assumes 4
    # "linear": the encoder's pooled embedding (image_embed_dim wide) → num_tokens tokens (IP-Adapter);
    # "plus": its patch tokens (image_embed_dim = the tower's width) → a Perceiver resampler (IP-Adapter Plus)
    projection: str = "linear"
    unet_tuned: bool = False  # True when unet/ holds a whole-network fine-tune
    # A LoRA of the denoiser trained with the adapter (FLUX.1's stand-in for whole-network tuning): its file in this
    # folder, in the layout diffusers' load_lora_weights reads; None (not written) for none
    lora_weights: str | None = None
    masker: str = DEFAULT_MASKER  # automatic mask (see zeroft.masking); "border" needs no download
    base_revision: str | None = None  # pinned Hub revision of base_model, for reproducibility
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    training: dict[str, Any] = field(default_factory=dict)  # recipe summary written by train/, shown in the card
    licenses: dict[str, str] = field(default_factory=dict)  # licence of each part, shown in the card
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        get_backbone(self.backbone)  # an unknown family is refused when the config is made or read
        if self.projection not in PROJECTIONS:
            raise ValueError(f"Unknown object projection {self.projection!r}: one of {', '.join(PROJECTIONS)}")

    def to_json(self) -> str:
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION  # what is written is the current format, whatever was read
        if data["defaults"]["guidance_interval"] is None:  # unset: the file stays as older zeroft versions read it
            del data["defaults"]["guidance_interval"]
        if data["lora_weights"] is None:  # likewise
            del data["lora_weights"]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZeroFTConfig":
        data = dict(data)
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"This checkpoint uses zeroft format {version}; this zeroft reads up to {FORMAT_VERSION}. Upgrade zeroft."
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown keys in {CONFIG_NAME}: {unknown}")
        data["encoder"] = _sub(EncoderConfig, data.get("encoder", {}))
        data["defaults"] = _sub(GenerationDefaults, data.get("defaults", {}))
        if data["defaults"].guidance_interval is not None:  # a JSON list; checked where it is used (zeroft.guidance)
            data["defaults"] = replace(data["defaults"], guidance_interval=tuple(data["defaults"].guidance_interval))
        return cls(**data)

    @classmethod
    def load(cls, folder: str | Path) -> "ZeroFTConfig":
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a zeroft checkpoint: {CONFIG_NAME} is missing")
        return cls.from_dict(json.loads(path.read_text()))

    def save(self, folder: str | Path) -> None:
        (Path(folder) / CONFIG_NAME).write_text(self.to_json())

    def replace(self, **changes: Any) -> "ZeroFTConfig":
        return replace(self, **changes)


def _sub(kind, data: dict[str, Any]):
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown keys in {CONFIG_NAME} section {kind.__name__}: {unknown}")
    return kind(**data)
