"""Where a zeroft checkpoint and its parts are: resolving a folder, Hub id or preset name to a local folder, and
finding (downloading once, where they come from the Hub) every file a load needs before anything is built.

zeroft.assemble builds a pipeline from what this module found; zeroft.checkpoint writes checkpoints.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .backbones import backbone_of_index, get_backbone
from .config import CONFIG_NAME, ZeroFTConfig
from .errors import HubUnavailableError, ModelUnavailableError
from .validation import native_size

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
# The safetensors weight file of a pipeline part, by the library its model_index.json entry names.
WEIGHT_FILES = {"diffusers": UNET_WEIGHTS, "transformers": "model.safetensors"}



def is_hub_id(name: str) -> bool:
    """``org/name`` that is not an existing local path."""
    return bool(HUB_ID.match(name)) and not Path(name).exists()


def resolve_checkpoint(checkpoint: str | os.PathLike, revision: str | None = None) -> Path:
    """A local checkpoint folder for ``checkpoint``: the folder itself, or a Hub snapshot."""
    from .presets import PRESET_NAMES, preset_folder

    if str(checkpoint) in PRESET_NAMES:
        checkpoint = preset_folder(str(checkpoint))
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a zeroft checkpoint: it has no {CONFIG_NAME}")
        return path
    name = str(checkpoint)
    if not is_hub_id(name):
        raise FileNotFoundError(f"Checkpoint {name!r} is neither a local folder nor a Hub repo id (org/name).")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.md", "tokenizer*", "*.model", "merges.txt", "vocab.json"]))
    except Exception as error:
        raise HubUnavailableError(
            f"Could not download checkpoint {name!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "Check the network and the repo name, or pass a local checkpoint folder."
        ) from error


def native_size_of(checkpoint: str | os.PathLike) -> int | None:
    """The checkpoint's native size from its config files alone, or None where they are not at hand.

    Reads the UNet and VAE configs (the checkpoint's own folders, or a base model already in the
    Hugging Face cache); the loaded pipeline's ``native_size`` gives the same number.
    """
    from huggingface_hub import try_to_load_from_cache

    folder = resolve_checkpoint(checkpoint)
    config = ZeroFTConfig.load(folder)

    def config_file(part: str) -> Path | None:
        if part == "unet" and config.unet_tuned:
            path = folder / "unet" / "config.json"
        elif (folder / config.base_model).is_dir():
            path = folder / config.base_model / part / "config.json"
        else:
            cached = try_to_load_from_cache(config.base_model, f"{part}/config.json", revision=config.base_revision)
            path = Path(cached) if isinstance(cached, str) else None
        return path if path is not None and path.is_file() else None

    backbone = get_backbone(config.backbone)
    unet_file = config_file(backbone.denoiser) if backbone.sample_size is None else None
    vae_file = config_file("vae")
    if (unet_file is None and backbone.sample_size is None) or vae_file is None:
        return None
    try:
        sample_size = backbone.sample_size or json.loads(unet_file.read_text())["sample_size"]
        blocks = json.loads(vae_file.read_text())["block_out_channels"]
    except (ValueError, KeyError, TypeError):
        return None  # a malformed config: loading the model reports it
    vae_scale_factor = 2 ** (len(blocks) - 1)  # as diffusers' StableDiffusionPipeline computes it
    return native_size(sample_size, vae_scale_factor, config.defaults)


def _base_unavailable(name: str, error: Exception) -> HubUnavailableError:
    """The error for a Hub base model that is neither in the Hugging Face cache nor downloadable."""
    gated = (" FLUX.1 [dev] is a gated repository: accept its licence at huggingface.co/black-forest-labs/FLUX.1-dev "
             "and log in (hf auth login) first." if name == "black-forest-labs/FLUX.1-dev" else "")
    return HubUnavailableError(
        f"Could not get the base model {name!r} from the Hugging Face Hub ({type(error).__name__}). "
        f"It is downloaded once on first use; check the network, or point base_model to a local folder.{gated}")


def require_file(folder: Path, relative: str, why: str) -> None:
    if not (folder / relative).is_file():
        raise ModelUnavailableError(f"The checkpoint {folder} is incomplete: it has no {relative} ({why}).")


def _check_base_family(index: dict, config: ZeroFTConfig, where: str) -> None:
    """The base model's pipeline class is the family the checkpoint records (zeroft.backbones)."""
    found = backbone_of_index(index)
    if found.name != config.backbone:
        raise ModelUnavailableError(
            f"The base model {where} is {found.label} ({index.get('_class_name')}), but the checkpoint records "
            f"backbone {config.backbone!r} ({get_backbone(config.backbone).label}).")


def locate_base(folder: Path, config: ZeroFTConfig) -> Path:
    """The base model's local folder, checked to exist: a sub-folder of the checkpoint, or the Hub snapshot of the
    files zeroft reads (``Backbone.hub_file_patterns``, downloaded once, then read from the cache).

    A local base must hold model_index.json naming the checkpoint's family and a folder for each
    part it lists, with safetensors weights for the networks; a Hub base must be in the Hugging
    Face cache or downloadable.
    """
    backbone = get_backbone(config.backbone)
    local = folder / config.base_model
    if local.is_dir() or not is_hub_id(config.base_model):
        require_file(folder, f"{config.base_model}/model_index.json", "the base model's index")
        index = json.loads((local / "model_index.json").read_text())
        _check_base_family(index, config, f"in {config.base_model}/")
        for part, spec in index.items():
            if part.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            if part in backbone.passed_as_none or (part == "unet" and config.unet_tuned):
                continue  # never read: _load_base passes these as None, a tuned UNet comes from unet/
            if not (local / part).is_dir():
                raise ModelUnavailableError(f"The checkpoint {folder} is incomplete: its base model lists {part!r} "
                                            f"but has no {config.base_model}/{part}/.")
            weights = WEIGHT_FILES.get(spec[0]) if part in backbone.weight_parts else None
            if weights and not any((local / part).glob(f"{weights.split('.')[0]}*.safetensors")):  # also sharded
                require_file(folder, f"{config.base_model}/{part}/{weights}", f"the base model's {part} weights")
        return local
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        index_file = hf_hub_download(config.base_model, "model_index.json", revision=config.base_revision)
        _check_base_family(json.loads(Path(index_file).read_text()), config, config.base_model)
        return Path(snapshot_download(config.base_model, revision=config.base_revision,
                                      allow_patterns=backbone.hub_file_patterns(config.unet_tuned)))
    except ModelUnavailableError:
        raise
    except Exception as error:
        raise _base_unavailable(config.base_model, error) from error
