"""Reading, writing and publishing zeroft checkpoint folders (format: zeroft.config).

``load_pipeline`` turns a local folder or a Hub repo id into a ready pipeline of the class it
is given, on the chosen device, dtype and quantization; ``save_checkpoint`` writes one;
``push_to_hub`` uploads one. Which class serves a checkpoint, and the cache of loaded
pipelines, live in zeroft.loading; this module knows no pipeline class. Only safetensors are read: the base model with ``use_safetensors=True``, the
adapter and UNet as ``.safetensors`` files, the encoder through zeroft.encoder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from .adapter import adapter_state_dict, load_object_attention
from .backbones import Backbone, backbone_of_index, get_backbone
from .config import ADAPTER_NAME, CONFIG_NAME, ZeroFTConfig
from .encoder import ObjectEncoder, build_visual, locate_encoder
from .errors import HubUnavailableError, InputError, ModelUnavailableError
from .masking import Masker
from .model_card import write_model_card
from .presets import check_adapter_encoder
from .memory import check_fits
from .quantization import (check_quantization, pick_device, pick_dtype, quantization_configs,
                           quantize_object_attention_)
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

    unet_file, vae_file = config_file("unet"), config_file("vae")
    if unet_file is None or vae_file is None:
        return None
    try:
        sample_size = json.loads(unet_file.read_text())["sample_size"]
        blocks = json.loads(vae_file.read_text())["block_out_channels"]
    except (ValueError, KeyError, TypeError):
        return None  # a malformed config: loading the model reports it
    vae_scale_factor = 2 ** (len(blocks) - 1)  # as diffusers' StableDiffusionPipeline computes it
    return native_size(sample_size, vae_scale_factor, config.defaults)


def _load_base(source: Path, config: ZeroFTConfig, dtype: torch.dtype, unet, unet_quant, text_quant,
               loaded: dict | None = None):
    backbone = get_backbone(config.backbone)
    kwargs = dict(backbone.base_arguments(), use_safetensors=True)
    kwargs.update(loaded or {})  # parts already built (int8 streaming): from_pretrained loads the rest
    if unet is not None:
        kwargs["unet"] = unet
    if unet_quant is not None:
        from diffusers import PipelineQuantizationConfig

        mapping = {part: text_quant for part in backbone.text_encoders}
        if unet is None:
            mapping["unet"] = unet_quant
        kwargs["quantization_config"] = PipelineQuantizationConfig(quant_mapping=mapping)
    return backbone.base_class().from_pretrained(str(source), dtype=dtype, **kwargs)  # a local folder (_locate_base)


def _base_unavailable(name: str, error: Exception) -> HubUnavailableError:
    """The error for a Hub base model that is neither in the Hugging Face cache nor downloadable."""
    return HubUnavailableError(
        f"Could not get the base model {name!r} from the Hugging Face Hub ({type(error).__name__}). "
        "It is downloaded once on first use; check the network, or point base_model to a local folder.")


def _stream_int8(folder: Path, config: ZeroFTConfig, base_source: Path, encoder_source, dtype: torch.dtype):
    """(UNet and text encoders, object encoder) quantized to int8 as they are read (zeroft.streaming).

    Full-precision weights never sit in memory whole: each Linear is quantized as soon as its weight
    is in, which keeps int8's peak near its quantized size (bench.full_size measures it).
    """
    from .streaming import load_parts_streaming, load_streaming
    from .streaming_visual import load_visual_streaming

    parts = get_backbone(config.backbone).text_encoders + (() if config.unet_tuned else ("unet",))
    loaded = load_parts_streaming(base_source, parts, dtype=dtype, quantization="int8")
    if config.unet_tuned:
        loaded["unet"] = load_streaming(UNet2DConditionModel, folder, subfolder="unet", dtype=dtype, quantization="int8")
    encoder = ObjectEncoder(
        load_visual_streaming(encoder_source.model_cfg, encoder_source.weights, dtype=dtype, quantization="int8")
        if encoder_source.weights is not None else build_visual(encoder_source.model_cfg).to(dtype),
        config.encoder, encoder_source.mean, encoder_source.std, encoder_source.folder)
    return loaded, encoder


def _require_file(folder: Path, relative: str, why: str) -> None:
    if not (folder / relative).is_file():
        raise ModelUnavailableError(f"The checkpoint {folder} is incomplete: it has no {relative} ({why}).")


def _check_base_family(index: dict, config: ZeroFTConfig, where: str) -> None:
    """The base model's pipeline class is the family the checkpoint records (zeroft.backbones)."""
    found = backbone_of_index(index)
    if found.name != config.backbone:
        raise ModelUnavailableError(
            f"The base model {where} is {found.label} ({index.get('_class_name')}), but the checkpoint records "
            f"backbone {config.backbone!r} ({get_backbone(config.backbone).label}).")


def _locate_base(folder: Path, config: ZeroFTConfig) -> Path:
    """The base model's local folder, checked to exist: a sub-folder of the checkpoint, or the Hub snapshot of the
    files zeroft reads (``Backbone.hub_file_patterns``, downloaded once, then read from the cache).

    A local base must hold model_index.json naming the checkpoint's family and a folder for each
    part it lists, with safetensors weights for the networks; a Hub base must be in the Hugging
    Face cache or downloadable.
    """
    backbone = get_backbone(config.backbone)
    local = folder / config.base_model
    if local.is_dir() or not is_hub_id(config.base_model):
        _require_file(folder, f"{config.base_model}/model_index.json", "the base model's index")
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
                _require_file(folder, f"{config.base_model}/{part}/{weights}", f"the base model's {part} weights")
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


def load_pipeline(
    checkpoint: str | os.PathLike,
    *,
    pipeline_class: type,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    quantization: str = "none",
    offload: bool = False,
    masker: str | None = None,
    revision: str | None = None,
):
    """Load a zeroft checkpoint into a ready pipeline of ``pipeline_class``.

    Args:
        checkpoint: local checkpoint folder, or a Hub repo id (``org/name``).
        pipeline_class: :class:`~zeroft.ZeroFTPipeline` or a subclass; ``from_pretrained`` passes
            the class it was called on, so a subclass gets an instance of itself back.
        device: default CUDA if present, else MPS, else CPU.
        dtype: default fp16/bf16 on GPUs, fp32 on CPU.
        quantization: "none", "int8" (torchao, CPU or GPU), "bnb-8bit" or "bnb-4bit" (CUDA only),
            applied to the UNet and the text encoder.
        offload: keep weights on the CPU and move each model to the GPU only while it runs
            (diffusers' model CPU offload; CUDA only).
        masker: override the checkpoint's automatic masker ("border", "rembg:<model>").
        revision: Hub revision of the checkpoint.

    Raises:
        ModelUnavailableError: a file the checkpoint needs is missing (adapter, tuned UNet, local base
            model, encoder weights); checked before any model is built. (The automatic masker's model
            is checked when a photo first needs it: photos with their own mask or alpha never do.)
        HubUnavailableError: a Hub model is neither in the Hugging Face cache nor downloadable.
    """
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    check_quantization(quantization, device)
    check_fits(checkpoint, device, dtype, quantization)  # a preset too big for this CPU: before any download
    folder = resolve_checkpoint(checkpoint, revision)
    config = ZeroFTConfig.load(folder)
    served = getattr(pipeline_class, "backbone", "sd")
    if served != config.backbone:
        raise InputError(
            f"{checkpoint} is a {get_backbone(config.backbone).label} checkpoint; {pipeline_class.__name__} serves "
            f"{get_backbone(served).label}. Load it with zeroft.load_pipeline, which picks the class.")
    if offload and device.type != "cuda":
        raise InputError("CPU offload moves models between CPU and GPU memory; it needs a CUDA GPU.")
    unet_quant, text_quant = quantization_configs(quantization, dtype)

    # 1. Find every file before building anything: at full size the builds take minutes.
    _require_file(folder, ADAPTER_NAME, "the object attention weights")
    check_adapter_encoder(folder / ADAPTER_NAME, config.encoder, folder)  # the commonest pairing error, before downloads
    if config.unet_tuned:
        _require_file(folder, "unet/config.json", "the tuned UNet")
        _require_file(folder, f"unet/{UNET_WEIGHTS}", "the tuned UNet")
    base_source = _locate_base(folder, config)
    encoder_source = locate_encoder(config.encoder, folder)
    pipe_masker = Masker(masker or config.masker)  # its model is checked when a mask is first needed

    # 2. Build; int8 quantizes as it reads, the other modes through diffusers' and transformers' loaders.
    loaded, encoder = {}, None
    if quantization == "int8":
        loaded, encoder = _stream_int8(folder, config, base_source, encoder_source, dtype)
        unet_quant = text_quant = None  # nothing is left for from_pretrained to quantize
    unet = loaded.pop("unet", None)
    if unet is None and config.unet_tuned:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype, quantization_config=unet_quant, use_safetensors=True)
    base = _load_base(base_source, config, dtype, unet, unet_quant, text_quant, loaded)

    if encoder is None:
        encoder = ObjectEncoder.from_source(encoder_source, config.encoder).to(dtype=dtype)
    if encoder.embed_dim != config.image_embed_dim:
        raise ValueError(f"encoder gives {encoder.embed_dim}-d embeddings, the checkpoint expects {config.image_embed_dim}")
    load_object_attention(base.unet, load_file(str(folder / ADAPTER_NAME)))
    quantize_object_attention_(base.unet, quantization)

    components = {k: v for k, v in base.components.items() if k != "image_encoder"}
    pipe = pipeline_class(**components, object_encoder=encoder, zeroft_config=config, masker=pipe_masker)
    pipe.checkpoint_folder = folder
    pipe.quantization = quantization
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _is_adapter_key(key: str) -> bool:
    return key.startswith("encoder_hid_proj.") or ".processor." in key


def save_unet_without_adapter(unet: UNet2DConditionModel, folder: str | Path) -> None:
    """Write the UNet as a plain diffusers UNet folder, leaving out the object attention.

    ``unet.save_pretrained`` would store the adapter weights inside the UNet file while its
    config forgets them, so a reload would drop them silently; they live in adapter.safetensors.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("encoder_hid_dim_type") == "ip_image_proj":
        config["encoder_hid_dim_type"] = None
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    clean = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items() if not _is_adapter_key(k)}
    save_file(clean, str(folder / UNET_WEIGHTS), metadata={"format": "pt"})


def _write_base(pipe, folder: Path, unet_tuned: bool, backbone: Backbone) -> None:
    """The base pipeline's parts from memory; its UNet only when untuned (a tuned one lives in unet/)."""
    parts = {name: getattr(pipe, name) for name in ("vae", *backbone.text_encoders, *backbone.tokenizers, "scheduler")}
    # unet=None is on purpose; diffusers would warn "self.unet=None ... cannot be saved" on every export.
    pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)
    try:
        base = backbone.base_class()(**parts, unet=None, **backbone.base_arguments())
        base.save_pretrained(folder, safe_serialization=True)
    finally:
        pipeline_logger.setLevel(level)
    if not unet_tuned:
        # The UNet in memory carries the object attention; write it clean and list it in the index.
        save_unet_without_adapter(pipe.unet, folder / "unet")
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index["unet"] = ["diffusers", "UNet2DConditionModel"]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def cast_weight_files(folder: str | Path, dtype: torch.dtype) -> None:
    """Rewrite every .safetensors file under ``folder`` with its floating-point tensors in ``dtype``."""
    for path in Path(folder).rglob("*.safetensors"):
        tensors = load_file(str(path))
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(cast, str(path), metadata={"format": "pt"})


def save_checkpoint(
    pipe,
    folder: str | Path,
    unet_tuned: bool | None = None,
    config: ZeroFTConfig | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``pipe`` as a zeroft checkpoint folder (see zeroft.config for the layout).

    Args:
        pipe: the pipeline to save.
        folder: destination (created; existing files are overwritten).
        unet_tuned: write the whole UNet to ``unet/`` (whole-network training); default from the
            config. A tuned checkpoint's local ``base/`` then holds no UNet of its own.
        config: the config to record; default ``pipe.zeroft_config``.
        dtype: store floating-point weights in this dtype (e.g. ``torch.float16`` halves the
            size); loading casts back to the dtype asked for.
    """
    config = config or pipe.zeroft_config
    if config is None:
        raise ValueError("saving needs a ZeroFTConfig")
    if getattr(pipe, "quantization", "none") != "none":
        raise ValueError("a quantized pipeline cannot be saved as a checkpoint; load it without quantization")
    unet_tuned = config.unet_tuned if unet_tuned is None else unet_tuned
    backbone = get_backbone(getattr(pipe, "backbone", "sd"))
    config = config.replace(unet_tuned=unet_tuned, image_embed_dim=pipe.object_encoder.embed_dim,
                            cross_attention_dim=pipe.unet.config.cross_attention_dim, backbone=backbone.name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_hub_id(config.base_model):
        _write_base(pipe, folder / config.base_model, unet_tuned, backbone)
    if config.encoder.path is not None:
        pipe.object_encoder.save(folder / config.encoder.path)
    save_file(adapter_state_dict(pipe.unet), str(folder / ADAPTER_NAME), metadata={"format": "pt"})
    if unet_tuned:
        save_unet_without_adapter(pipe.unet, folder / "unet")
    if dtype is not None:
        cast_weight_files(folder, dtype)
    config.save(folder)
    write_model_card(folder, config)
    return folder


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "Upload zeroft checkpoint", api=None) -> str:
    """Upload a checkpoint folder to a Hub model repo (created if needed); returns the repo URL.

    ``api`` defaults to ``huggingface_hub.HfApi(token=token)``; tests pass a stand-in.
    """
    folder = Path(folder)
    ZeroFTConfig.load(folder)  # refuse to upload something that is not a checkpoint
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message)
    except Exception as error:
        raise HubUnavailableError(f"Could not upload to the Hub repo {repo_id!r} ({type(error).__name__}: {error}).") from error
    return str(url)

