"""Full-size CPU benchmark: load time, peak resident memory and seconds per step, none vs int8.

    python -m bench.full_size [--backbone sd15|sdxl|sd15-plus|sdxl-plus|flux|all] [--dtype auto|float32|bfloat16[,...]] [--dry-run]

Random weights at the real configurations (speed and memory do not depend on the values), written
once into ``--cache`` (default /work/bench-cache, outside git) and reused:

- sd15: SD1.5 UNet (860M), VAE (84M), CLIP ViT-L/14 text encoder (123M), at 512 px, with the
  OpenCLIP ViT-H/14 image tower (632M) as a transformers ``CLIPVisionModelWithProjection``;
- sdxl: SDXL base UNet (2.6B), VAE, CLIP ViT-L/14 text and OpenCLIP bigG/14 text encoder
  (``CLIPTextModelWithProjection``, 695M), at 1024 px, with the ViT-bigG/14 image tower (1.8B);
- sd15-plus, sdxl-plus: the same bases with the ViT-H/14 tower and an IP-Adapter Plus adapter (patch tokens through
  a resampler), as the Plus presets run (zeroft loader only);
- flux: FLUX.1-dev's transformer (11.9B), VAE (84M, 16 latent channels), CLIP ViT-L/14 and T5-XXL (4.8B) text
  encoders, with OpenAI's CLIP ViT-L/14 image tower (304M) and an XLabs-v2-shaped adapter, as the preset
  ip-adapter-flux-dev runs (zeroft loader, int8 only: bf16 weights alone are 33 GB, more than this machine has), at
  256 and 512 px, one load for both sizes. Its parts are written tensor by tensor from models built on the meta
  device (the transformer would not fit in memory whole), in shards with an index as the real repositories are.

Each case runs in a fresh process (so its peak, VmHWM, is its own) under a watchdog that stops it
if the machine runs short of memory (the machine is shared). Loaders: ``from_pretrained`` (int8:
torchao ``TorchAoConfig`` at load, as zeroft.assemble did before int8 streaming), ``streaming``
(zeroft.streaming: one tensor at a time, each Linear quantized as it is read) and ``zeroft``
(``load_pipeline`` on a zeroft checkpoint whose base is the random-weight folder, its encoder the
same image tower in open_clip's layout). int8 quantizes the UNet, the text encoder(s) and the image
tower (zeroft rows: what load_pipeline quantizes, the UNet and text encoders); the VAE is
convolutions and stays as it is. Per case: load seconds, RSS right after loading (and its anonymous
part), the peak during loading and over the whole run (and after each stage), and seconds per UNet
step with equal guidance weights (two branches: batch 2) and unequal ones (three branches: batch
3), then one VAE decode; zeroft rows time whole images. Times are from a shared 2-core machine,
so only their order of magnitude carries over; the memory figures do not depend on the load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import machine, report

ROOT = Path(__file__).resolve().parent.parent
LOADERS = ("from_pretrained", "streaming", "zeroft")
QUANTIZATIONS = ("none", "int8")
GIB = 1024 ** 3

# SD1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5, unet/ vae/ text_encoder/ config.json): diffusers'
# UNet2DConditionModel defaults are SD1.5's layout except cross_attention_dim and sample_size.
SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SD_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, sample_size=512)
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
# SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, the values diffusers'
# SDXL docs and its StableDiffusionXLPipeline tests scale down): 2.6B parameters.
SDXL_UNET = dict(sample_size=128, block_out_channels=[320, 640, 1280], layers_per_block=2, cross_attention_dim=2048,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 attention_head_dim=[5, 10, 20], transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
                 addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)  # 2816 = 1280 pooled text + 6 time ids x 256
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
# SDXL text_encoder_2: OpenCLIP ViT-bigG/14's text tower as transformers writes it (same repo, text_encoder_2/).
BIGG_TEXT = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
# Image towers: h94/IP-Adapter models/image_encoder and sdxl_models/image_encoder (see zeroft.presets).
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
VIT_BIGG = dict(VIT_H, hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, projection_dim=1280)

# FLUX.1-dev (black-forest-labs/FLUX.1-dev transformer/, vae/, text_encoder_2/ config.json): 19 double-stream and 38
# single-stream blocks of 3072; T5 v1.1 XXL's encoder; a 16-channel VAE. Its CLIP text encoder is CLIP_L_TEXT.
FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=[16, 56, 56])
FLUX_VAE = dict(SD_VAE, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False, force_upcast=True)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
              feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0,
              eos_token_id=1)
# OpenAI's CLIP ViT-L/14 vision tower (openai/clip-vit-large-patch14), the XLabs adapter's encoder.
VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
FLUX_SIZES = (256, 512)
FLUX_NUM_TOKENS = 16  # XLabs' v2 adapter

# part -> (class name, config); the order is the order of loading. dtype: of the weight files (SDXL's
# in fp32 would be 21 GB, most of this machine's memory: bf16, as its published fp16 variant halves it).
BACKBONES = {
    "sd15": dict(size=512, dtype="float32", encoder="ViT-H-14", parts={
        "text_encoder": ("CLIPTextModel", CLIP_L_TEXT), "image_encoder": ("CLIPVisionModelWithProjection", VIT_H),
        "unet": ("UNet2DConditionModel", SD15_UNET), "vae": ("AutoencoderKL", SD_VAE)}),
    "sdxl": dict(size=1024, dtype="bfloat16", encoder="ViT-bigG-14", parts={
        "text_encoder": ("CLIPTextModel", CLIP_L_TEXT), "text_encoder_2": ("CLIPTextModelWithProjection", BIGG_TEXT),
        "image_encoder": ("CLIPVisionModelWithProjection", VIT_BIGG), "unet": ("UNet2DConditionModel", SDXL_UNET),
        "vae": ("AutoencoderKL", SDXL_VAE)}),
}
# IP-Adapter Plus (the presets ip-adapter-plus-sd15 and ip-adapter-plus-sdxl-vit-h): the same bases, both with the
# ViT-H/14 tower, whose 257 x 1280 patch tokens go through diffusers' resampler (h94's files: 16 queries, depth 4,
# inner width 768 for SD1.5, 1280 for SDXL). Only the zeroft loader: the plain loaders' rows would be the base rows.
BACKBONES["sd15-plus"] = dict(BACKBONES["sd15"], plus=dict(num_tokens=16, resampler_width=768))
BACKBONES["sdxl-plus"] = dict(BACKBONES["sdxl"], encoder="ViT-H-14", plus=dict(num_tokens=16, resampler_width=1280),
                              parts={**BACKBONES["sdxl"]["parts"], "image_encoder": ("CLIPVisionModelWithProjection", VIT_H)})
BACKBONES["flux"] = dict(size=512, dtype="bfloat16", encoder="ViT-L-14-quickgelu", flux=True, parts={
    "text_encoder": ("CLIPTextModel", CLIP_L_TEXT), "text_encoder_2": ("T5EncoderModel", T5_XXL),
    "image_encoder": ("CLIPVisionModelWithProjection", VIT_L), "transformer": ("FluxTransformer2DModel", FLUX_TRANSFORMER),
    "vae": ("AutoencoderKL", FLUX_VAE)})
QUANTIZED_PARTS = ("unet", "text_encoder", "text_encoder_2", "image_encoder")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
NOTES = [
    "peak_gib is VmHWM of the case's own process (ru_maxrss inherits the parent's high-water mark across exec).",
    "from_pretrained maps safetensors files and its tensors stay file-backed (RssFile) until first used, so its "
    "RSS right after loading is small and its weights become resident during the first steps.",
    "sdxl/float32 without quantization is not run: its weights alone are 21.3 GB (19.8 GiB) of this machine's 23 GiB.",
    "int8 is torchao int8 weight-only on nn.Linear: SD1.5's UNet is 589M of 860M parameters in convolutions, which "
    "stay in the compute dtype; SDXL's UNet has 2233M of 2567M in Linear layers.",
    "zeroft rows go through load_pipeline (int8: zeroft.streaming for the UNet, text encoder(s) and object "
    "encoder, since 2026-12-02) and time whole 1-step images (encoders, UNet, decode); the table's last two "
    "columns are then seconds per image.",
    "Why zeroft's int8 stays above 0.6x at SD1.5 size: right after loading it holds 5.0 GiB, about its floor "
    "(0.8 GiB of runtime, the UNet's 589M convolution parameters in fp32 2.2 GiB, its Linear layers in int8 "
    "0.27 GB, ViT-H int8 1.18 GiB with nn.MultiheadAttention's projections left in fp32 by torchao, VAE 0.33 GB, "
    "text encoder 0.27 GB) = 0.6x of the unquantized peak alone; the text encoder's and the UNet's first calls "
    "then add about 0.7 and 0.6 GiB (probe of 2026-12-02).",
    "Times come from 2 cores shared with other jobs (one step per case): a 3-branch step faster than a 2-branch "
    "one is that noise; the memory figures do not depend on it.",
    "The sd15-plus and sdxl-plus rows (2026-12-06) ran beside a toy-world training run and the test suite on the "
    "same 2 cores: their seconds per image are 2-3x the base rows' for that reason, not the resampler's (16 queries "
    "over 257 tokens, depth 4: a small fraction of one UNet call); their peaks are as valid as the others'.",
    "flux (2026-12-06): one load, then at 256 and at 512 px one 1-step image per guidance form (1 branch: w_text = "
    "w_obj = 1; 2: w_obj 2; 3: w_obj 2, w_text 3.5 and a negative prompt), all branches in one batched transformer "
    "call; s/step is the transformer call alone (forward hooks), t5_s T5-XXL's encodes in that image (0 where the "
    "prompt cache answered). The random files match the real repositories' sizes (transformer 23.80 GB, T5-XXL "
    "encoder 9.52 GB). The peak (19.48 GiB) is reached while loading, not generating. The first 256 px image's "
    "step (44 s) includes first-call warm-up; per branch a step costs about 30 s at 256 px and 70-75 s at 512 px, "
    "as bf16 blocks timed alone (0.54 s per double- or single-stream block at 768 tokens).",
]


def model_class(name: str) -> type:
    import diffusers
    import transformers

    return getattr(diffusers, name, None) or getattr(transformers, name)


def build_part(class_name: str, config: dict):
    cls = model_class(class_name)
    if hasattr(cls, "config_class") and not hasattr(cls, "from_config"):
        return cls(cls.config_class(**config))
    return cls(**config)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field} (not Linux?)")


def rss_bytes() -> int:
    """Resident memory now (VmRSS), bytes."""
    return _status("VmRSS")


def peak_bytes() -> int:
    """Peak resident memory of this process (VmHWM), bytes.

    Not ``ru_maxrss``: Linux carries the parent's high-water mark across fork + exec into it (a
    child of a 4 GB parent reported 4.04 GB before loading anything); VmHWM starts afresh at exec.
    """
    return _status("VmHWM")


def base_folder(backbone: str, cache: Path) -> Path:
    return cache / f"{backbone}-{BACKBONES[backbone]['dtype']}"

SHARD_BYTES = 2 * 1024 ** 3


def _random_tensor(name: str, shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Norm scales 1, biases 0, other weights N(0, 1/fan_in): activations stay finite through 57 blocks."""
    if len(shape) == 1:
        return (torch.ones if name.endswith("weight") else torch.zeros)(shape, dtype=dtype)
    fan_in = max(1, shape[1:].numel())
    return (torch.randn(shape, generator=generator) * fan_in ** -0.5).to(dtype)


def build_empty(class_name: str, config: dict):
    """The part on the meta device (parameters take no memory), tied weights tied: T5's encoder.embed_tokens is its
    shared embedding, one tensor in the file as in FLUX.1-dev's text_encoder_2."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = build_part(class_name, config)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def write_random_part(class_name: str, config: dict, folder: Path, dtype: torch.dtype, seed: int = 0) -> None:
    """A model folder (config.json + safetensors shards + index) of random weights, written tensor by tensor.

    The model is built on the meta device (no memory); each tensor is drawn, gathered into a shard of at most
    SHARD_BYTES and written, so the largest part (FLUX.1's 11.9B transformer, 23.8 GB in bf16) never exists whole.
    Tied parameters are written once (as save_pretrained does); persistent buffers (real tensors: init_empty_weights
    leaves buffers on the CPU) are written as they are.
    """
    from safetensors.torch import save_file

    model = build_empty(class_name, config)
    diffusers_model = hasattr(model, "save_config")
    stem = "diffusion_pytorch_model" if diffusers_model else "model"
    tmp = folder.parent / f"{folder.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}

    def tensors():
        for name, parameter in model.named_parameters():  # tied ones once
            yield name, _random_tensor(name, parameter.shape, dtype, generator)
        for name, buffer in model.state_dict().items():
            if name not in parameters:
                yield name, buffer.detach().clone()

    shards, shard, shard_bytes = [], {}, 0  # shards: the tensor names of each shard written

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            save_file(shard, str(tmp / f"{stem}-{len(shards) + 1:05d}.safetensors"), metadata={"format": "pt"})
            shards.append(list(shard))
            shard, shard_bytes = {}, 0

    for name, tensor in tensors():
        if shard_bytes + tensor.nbytes > SHARD_BYTES:
            flush()
        shard[name] = tensor.contiguous()
        shard_bytes += tensor.nbytes
    flush()
    weight_map, size = {}, 0
    for index, names in enumerate(shards, 1):  # the real repositories' names: -0000i-of-0000N
        final = tmp / f"{stem}-{index:05d}-of-{len(shards):05d}.safetensors"
        (tmp / f"{stem}-{index:05d}.safetensors").rename(final)
        weight_map.update(dict.fromkeys(names, final.name))
        size += final.stat().st_size
    (tmp / f"{stem}.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    if diffusers_model:
        model.save_config(tmp)
    else:
        model.config.save_pretrained(tmp)
    tmp.rename(folder)  # a half-written part is never taken as done


def write_flux_models(folder: Path) -> Path:
    """FLUX.1-dev's pipeline folder at full size, random weights, plus image_encoder/ (the adapter's encoder)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from zeroft.tiny import tiny_t5_tokenizer, tiny_tokenizer

    spec = BACKBONES["flux"]
    for seed, (part, (class_name, config)) in enumerate(spec["parts"].items()):
        if not (folder / part / "config.json").is_file():
            write_random_part(class_name, config, folder / part, DTYPES[spec["dtype"]], seed)
    if not (folder / "tokenizer").is_dir():
        tiny_tokenizer(77).save_pretrained(folder / "tokenizer")
    if not (folder / "tokenizer_2").is_dir():  # token ids < 100: any vocabulary size does; padded to 512 as FLUX.1-dev
        tiny_t5_tokenizer().save_pretrained(folder / "tokenizer_2")
    if not (folder / "scheduler").is_dir():  # FLUX.1-dev's scheduler_config.json
        FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                        base_image_seq_len=256, max_image_seq_len=4096).save_pretrained(folder / "scheduler")
    index = {"_class_name": "FluxPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"]}
    for part, (class_name, _) in spec["parts"].items():
        if part != "image_encoder":
            index[part] = ["diffusers" if part in ("transformer", "vae") else "transformers", class_name]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def flux_adapter_state(dtype: torch.dtype, image_embed_dim: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of XLabs' v2 adapter's shapes in zeroft's layout (zeroft.adapter_flux): a projection to 16
    tokens of 4096, to_k_ip/to_v_ip (4096 -> 3072) in each of the 19 double-stream blocks."""
    config, generator = FLUX_TRANSFORMER, torch.Generator().manual_seed(seed)
    cross, inner = config["joint_attention_dim"], config["num_attention_heads"] * config["attention_head_dim"]
    shapes = {"image_proj.proj.weight": (FLUX_NUM_TOKENS * cross, image_embed_dim),
              "image_proj.proj.bias": (FLUX_NUM_TOKENS * cross,), "image_proj.norm.weight": (cross,),
              "image_proj.norm.bias": (cross,)}
    for block in range(config["num_layers"]):
        for kind in ("to_k_ip", "to_v_ip"):
            shapes.update({f"ip_adapter.{block}.{kind}.weight": (inner, cross), f"ip_adapter.{block}.{kind}.bias": (inner,)})
    return {name: _random_tensor(name, torch.Size(shape), dtype, generator) for name, shape in shapes.items()}


def write_models(backbone: str, cache: Path) -> Path:
    """The random-weight base folder (a diffusers pipeline layout + image_encoder/), written once."""
    from zeroft.tiny import tiny_tokenizer

    spec = BACKBONES[backbone]
    dtype = spec["dtype"]
    folder = base_folder(backbone, cache)
    if spec.get("flux"):
        return write_flux_models(folder)
    for part, (class_name, config) in spec["parts"].items():
        if (folder / part / "config.json").is_file():
            continue
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(DTYPES[dtype])  # built in the file dtype: a 2.6B UNet never exists in fp32
        try:
            model = build_part(class_name, config)
        finally:
            torch.set_default_dtype(previous)
        model.save_pretrained(folder / f"{part}.tmp")
        (folder / f"{part}.tmp").rename(folder / part)  # a half-written part is never taken as done
        del model
    xl = "text_encoder_2" in spec["parts"]
    for name in ("tokenizer",) + (("tokenizer_2",) if xl else ()):
        if not (folder / name).is_dir():
            tiny_tokenizer(77).save_pretrained(folder / name)  # token ids < 514: any vocabulary size does
    if not (folder / "scheduler").is_dir():
        from diffusers import EulerDiscreteScheduler

        EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                               steps_offset=1).save_pretrained(folder / "scheduler")
    pipeline = "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline"
    index = {"_class_name": pipeline, "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    for part, (class_name, _) in spec["parts"].items():
        if part != "image_encoder":  # zeroft's encoder is its own (checkpoint encoder/ below)
            index[part] = ["diffusers" if part in ("unet", "vae") else "transformers", class_name]
    for name in ("tokenizer", "tokenizer_2")[: 2 if xl else 1]:
        index[name] = ["transformers", "CLIPTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_checkpoint(backbone: str, base: Path) -> Path:
    """A zeroft checkpoint whose base (a link) is the random-weight folder, with a random adapter."""
    import open_clip
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from zeroft.adapter import initial_adapter_state_dict
    from zeroft.config import ADAPTER_NAME, EncoderConfig, GenerationDefaults, ZeroFTConfig
    from zeroft.streaming import load_streaming

    spec = BACKBONES[backbone]
    plus = spec.get("plus")
    folder = base.parent / f"{base.name}-zeroft"
    if (folder / "zeroft_config.json").is_file():
        return folder
    folder.mkdir(exist_ok=True)
    if not (folder / "base").exists():
        (folder / "base").symlink_to(base)
    encoder = folder / "encoder"
    encoder.mkdir(exist_ok=True)
    model_cfg = open_clip.get_model_config(spec["encoder"])
    (encoder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    weights = sorted((base / "image_encoder").glob("model*.safetensors"))  # one file, or FLUX's one shard
    if not (encoder / "open_clip_model.safetensors").exists():  # the transformers layout, which zeroft converts
        (encoder / "open_clip_model.safetensors").symlink_to(weights[0])
    if spec.get("flux"):
        save_file(flux_adapter_state(DTYPES[spec["dtype"]], model_cfg["embed_dim"]), str(folder / ADAPTER_NAME))
        config = ZeroFTConfig(
            base_model="base", backbone="flux",
            encoder=EncoderConfig(model_name=spec["encoder"], pretrained=None, path="encoder"),
            num_tokens=FLUX_NUM_TOKENS, image_embed_dim=model_cfg["embed_dim"],
            cross_attention_dim=FLUX_TRANSFORMER["joint_attention_dim"], masker="border",
            defaults=GenerationDefaults(text_guidance=1.0, object_guidance=1.0, height=spec["size"],
                                        width=spec["size"], steps=1),
            licenses={"all": "random weights made by bench.full_size"})
        config.save(folder)
        return folder
    unet = load_streaming(UNet2DConditionModel, base, subfolder="unet", dtype=None)  # in the file dtype
    width = model_cfg["vision_cfg"]["width"] if plus else model_cfg["embed_dim"]  # patch tokens' or pooled width
    state = (initial_adapter_state_dict(unet, width, plus["num_tokens"], projection="plus",
                                        resampler_width=plus["resampler_width"]) if plus
             else initial_adapter_state_dict(unet, width, 4))
    save_file({k: v.to(DTYPES[spec["dtype"]]) for k, v in state.items()}, str(folder / ADAPTER_NAME))
    config = ZeroFTConfig(
        base_model="base", backbone="sdxl" if "text_encoder_2" in spec["parts"] else "sd",
        encoder=EncoderConfig(model_name=spec["encoder"], pretrained=None, path="encoder"),
        projection="plus" if plus else "linear", num_tokens=plus["num_tokens"] if plus else 4,
        image_embed_dim=width, cross_attention_dim=unet.config.cross_attention_dim, masker="border",
        defaults=GenerationDefaults(height=spec["size"], width=spec["size"], steps=1),
        licenses={"all": "random weights made by bench.full_size"})
    config.save(folder)
    return folder


def load_parts(backbone: str, base: Path, loader: str, quantization: str, dtype: torch.dtype) -> tuple[dict, dict]:
    """(models, per-part load seconds and memory) for the plain-library loaders."""
    from zeroft.quantization import quantization_configs
    from zeroft.streaming import load_streaming

    diffusers_config, transformers_config = quantization_configs(quantization, dtype)
    models, parts = {}, {}
    for part, (class_name, _) in BACKBONES[backbone]["parts"].items():
        cls = model_class(class_name)
        started = time.perf_counter()
        quantized = quantization if part in QUANTIZED_PARTS else "none"
        if loader == "streaming":
            models[part] = load_streaming(cls, base, subfolder=part, dtype=dtype, quantization=quantized)
        else:
            kwargs = {}
            if quantized != "none":
                kwargs["quantization_config"] = diffusers_config if part == "unet" else transformers_config
            models[part] = cls.from_pretrained(base / part, dtype=dtype, **kwargs)
        parts[part] = dict(seconds=round(time.perf_counter() - started, 2), quantization=quantized,
                           rss_gib=round(rss_bytes() / GIB, 2), peak_gib=round(peak_bytes() / GIB, 2))
    return models, parts


@torch.no_grad()
def run_plain(backbone: str, models: dict, steps: int, dtype: torch.dtype) -> dict:
    """Encoders once, ``steps`` UNet calls at batch 2 and at batch 3, one VAE decode: seconds each."""
    size = BACKBONES[backbone]["size"]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 514, (3, 77), generator=generator)
    timings = {}
    started = time.perf_counter()
    text = models["text_encoder"](tokens, output_hidden_states=True).hidden_states[-2]  # (3, 77, 768)
    pooled = None
    if "text_encoder_2" in models:
        out = models["text_encoder_2"](tokens, output_hidden_states=True)
        text = torch.cat([text, out.hidden_states[-2]], dim=-1)  # (3, 77, 2048): SDXL's two towers side by side
        pooled = out.text_embeds  # (3, 1280)
    timings["text_encoders_s"] = round(time.perf_counter() - started, 2)
    peaks = timings["peak_after_gib"] = {"text_encoders": round(peak_bytes() / GIB, 2)}  # where the peak is reached
    started = time.perf_counter()
    models["image_encoder"](torch.randn(1, 3, 224, 224, generator=generator, dtype=dtype))
    timings["image_encoder_s"] = round(time.perf_counter() - started, 2)
    peaks["image_encoder"] = round(peak_bytes() / GIB, 2)
    latents = torch.randn(1, 4, size // 8, size // 8, generator=generator, dtype=dtype)  # (1, 4, H/8, W/8)
    for branches, label in ((2, "equal_weights"), (3, "unequal_weights")):
        kwargs = {}
        if pooled is not None:
            time_ids = torch.tensor([[size, size, 0, 0, size, size]] * branches, dtype=dtype)  # original, crop, target
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled[:branches], "time_ids": time_ids}
        seconds = []
        for step in range(steps):
            started = time.perf_counter()
            models["unet"](latents.expand(branches, -1, -1, -1), 999 - step, encoder_hidden_states=text[:branches],
                           **kwargs)
            seconds.append(time.perf_counter() - started)
        timings[f"{label}_s_per_step"] = round(sum(seconds) / len(seconds), 2)
        peaks[f"unet_batch_{branches}"] = round(peak_bytes() / GIB, 2)
    started = time.perf_counter()
    models["vae"].decode(latents)
    timings["vae_decode_s"] = round(time.perf_counter() - started, 2)
    peaks["vae_decode"] = round(peak_bytes() / GIB, 2)
    return timings


def load_zeroft(backbone: str, checkpoint: Path, quantization: str, dtype: torch.dtype):
    from zeroft import ZeroFTPipeline

    cls = ZeroFTPipeline
    if BACKBONES[backbone].get("flux"):
        from zeroft import ZeroFTFluxPipeline as cls  # noqa: N813
    elif "text_encoder_2" in BACKBONES[backbone]["parts"]:
        from zeroft import ZeroFTXLPipeline as cls  # noqa: N813
    pipe = cls.from_pretrained(checkpoint, device="cpu", dtype=dtype, quantization=quantization)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def object_photo():
    """The benchmark's reference photo: a red square on blue, 256 px."""
    from PIL import Image

    photo = Image.new("RGB", (256, 256), (30, 30, 220))
    photo.paste((220, 30, 30), (64, 64, 192, 192))
    return photo


def run_zeroft(pipe, steps: int) -> dict:
    """One image with equal weights (two branches) and one with unequal weights (three): seconds each."""
    photo = object_photo()
    timings = {}
    for label, weights in (("equal_weights", (5.0, 5.0)), ("unequal_weights", (5.0, 3.0))):
        started = time.perf_counter()
        pipe("an object", object_image=photo, text_guidance=weights[0], object_guidance=weights[1],
             num_inference_steps=steps, seed=0, output_type="np")
        timings[f"{label}_s_per_image"] = round(time.perf_counter() - started, 2)  # encoders + steps + decode
    return timings


class CallTimer:
    """Seconds spent in a module's forward calls (forward hooks): the transformer's steps, T5's encodes."""

    def __init__(self, module: torch.nn.Module):
        self.seconds, self.calls, self._started = 0.0, 0, None
        module.register_forward_pre_hook(lambda *_: setattr(self, "_started", time.perf_counter()))
        module.register_forward_hook(lambda *_: self._stop())

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += 1

    def take(self) -> tuple[float, int]:
        taken = (self.seconds, self.calls)
        self.seconds, self.calls = 0.0, 0
        return taken


# FLUX's three guidance forms (zeroft.pipeline_flux): branches -> (w_text, w_obj, negative prompt).
FLUX_FORMS = {1: (1.0, 1.0, None), 2: (1.0, 2.0, None), 3: (3.5, 2.0, "blurry, low quality")}


def run_zeroft_flux(pipe, steps: int) -> dict:
    """At each of FLUX_SIZES, one image per guidance form (1, 2 or 3 branches in one batched transformer call):
    seconds per image, per transformer step and in T5; the peak after each size (so the 256 px peak is its own)."""
    photo = object_photo()
    steps_timer, t5_timer = CallTimer(pipe.transformer), CallTimer(pipe.text_encoder_2)
    sizes = {}
    for size in FLUX_SIZES:
        row = sizes[str(size)] = {}
        for branches, (w_text, w_obj, negative) in FLUX_FORMS.items():
            started = time.perf_counter()
            pipe("an object", object_image=photo, text_guidance=w_text, object_guidance=w_obj,
                 negative_prompt=negative, num_inference_steps=steps, seed=0, height=size, width=size,
                 output_type="np")
            row[f"branches_{branches}_s_per_image"] = round(time.perf_counter() - started, 2)
            seconds, calls = steps_timer.take()
            row[f"branches_{branches}_s_per_step"] = round(seconds / max(calls, 1), 2)
            row[f"branches_{branches}_t5_s"] = round(t5_timer.take()[0], 2)  # 0 where the prompt cache answers
            row[f"peak_after_branches_{branches}_gib"] = round(peak_bytes() / GIB, 2)
        row["peak_gib"] = round(peak_bytes() / GIB, 2)
    return {"sizes": sizes}


def run_case(backbone: str, loader: str, quantization: str, steps: int, dtype_name: str, cache: Path, out: Path) -> None:
    torch.set_num_threads(2)
    dtype = DTYPES[dtype_name]
    base = base_folder(backbone, cache)
    started = time.perf_counter()
    if loader == "zeroft":
        pipe, parts = load_zeroft(backbone, base.parent / f"{base.name}-zeroft", quantization, dtype), {}
    else:
        models, parts = load_parts(backbone, base, loader, quantization, dtype)
    after_load = dict(load_s=round(time.perf_counter() - started, 2), rss_after_load_gib=round(rss_bytes() / GIB, 2),
                      peak_during_load_gib=round(peak_bytes() / GIB, 2),
                      rss_after_load_anon_gib=round(_status("RssAnon") / GIB, 2))
    if BACKBONES[backbone].get("flux"):
        timings = run_zeroft_flux(pipe, steps)
    else:
        timings = run_zeroft(pipe, steps) if loader == "zeroft" else run_plain(backbone, models, steps, dtype)
    # Weights mapped from a file (from_pretrained's lazy safetensors tensors) are RssFile: resident, but
    # clean pages the kernel may drop and read again; loaded or quantized ones are RssAnon.
    end = {kind: round(_status(f"Rss{kind.capitalize()}") / GIB, 2) for kind in ("anon", "file")}
    out.write_text(json.dumps(dict(after_load, peak_gib=round(peak_bytes() / GIB, 2), rss_end_gib=end, parts=parts,
                                   **timings)))


def watched(command: list[str], min_available_gib: float) -> str | None:
    """Run ``command``; stop it (and say why) if the machine's available memory drops too low."""
    process = subprocess.Popen(command, cwd=ROOT)
    while process.poll() is None:
        time.sleep(0.5)
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024 / GIB
        if available < min_available_gib:
            process.kill()
            process.wait()
            return f"stopped: the machine had {available:.1f} GiB available (under {min_available_gib})"
    return None if process.returncode == 0 else f"failed with exit code {process.returncode}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=[*BACKBONES, "all"], default="sd15",
                        help="all: sd15 and sdxl; the -plus backbones take --loaders zeroft")
    parser.add_argument("--dtype", default="auto",
                        help="compute dtype(s), comma-separated; auto: the files' (float32 for sd15, bfloat16 for sdxl)")
    parser.add_argument("--loaders", default=",".join(LOADERS))
    parser.add_argument("--quantizations", default=",".join(QUANTIZATIONS))
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path("/work/bench-cache"))
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "full_size.json")
    parser.add_argument("--min-available-gib", type=float, default=2.0)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and each model's size; write nothing")
    parser.add_argument("--report-only", action="store_true", help="recompute the summary of --results; run nothing")
    parser.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_write", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan(backbones: list[str]) -> dict:
    """Parameter counts at full size, from models built on the meta device (no memory, no files)."""
    return {backbone: {part: round(sum(p.numel() for p in build_empty(*spec).parameters()) / 1e6, 1)
                       for part, spec in BACKBONES[backbone]["parts"].items()} for backbone in backbones}


def main(argv=None) -> dict:
    args = parse_args(argv)
    backbones = ["sd15", "sdxl"] if args.backbone == "all" else [args.backbone]
    if args.backbone == "flux" and not (args._case or args.dry_run) and (args.loaders != "zeroft" or args.quantizations != "int8"):
        raise SystemExit("--backbone flux runs --loaders zeroft --quantizations int8 only: its bf16 weights alone "
                         "(transformer 23.8 GB, T5-XXL 9.5 GB) are more than this machine's memory")
    if args._write:  # in a process of its own, so that the parent stays small (see peak_bytes)
        backbone, zeroft = args._write.split(",")
        base = write_models(backbone, args.cache)
        if zeroft == "1":
            write_checkpoint(backbone, base)
        return {}
    if args._case:
        backbone, loader, quantization, dtype, out = args._case.split(",", 4)
        run_case(backbone, loader, quantization, args.steps, dtype, args.cache, Path(out))
        return {}
    if args.dry_run:
        return report({"benchmark": "full_size", "dry_run": True, "million_parameters": plan(backbones)},
                      "dry run: nothing written or measured")
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    cases = results.setdefault("cases", {})
    if args.report_only:
        results["peak_ratios"], results["notes"] = peak_ratios(cases), NOTES
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        return report(results, table(cases))
    results.update({"benchmark": "full_size", **machine(), "steps": args.steps})
    for backbone in backbones:
        failure = watched([sys.executable, "-m", "bench.full_size", "--cache", str(args.cache),
                           "--_write", f"{backbone},{int('zeroft' in args.loaders)}"], args.min_available_gib)
        if failure:
            raise RuntimeError(f"writing the {backbone} models {failure}")
        dtypes = [BACKBONES[backbone]["dtype"] if d == "auto" else d for d in args.dtype.split(",")]
        for dtype, loader in ((d, loader) for d in dtypes for loader in args.loaders.split(",")):
            for quantization in args.quantizations.split(","):
                name = f"{backbone}/{dtype}/{loader}/{quantization}"
                out = args.cache / f"case-{name.replace('/', '-')}.json"
                out.unlink(missing_ok=True)
                failure = watched([sys.executable, "-m", "bench.full_size", "--steps", str(args.steps), "--cache",
                                   str(args.cache), "--_case", f"{backbone},{loader},{quantization},{dtype},{out}"],
                                  args.min_available_gib)
                cases[name] = {"error": failure} if failure or not out.is_file() else json.loads(out.read_text())
                args.results.parent.mkdir(parents=True, exist_ok=True)
                args.results.write_text(json.dumps(results, indent=2) + "\n")  # after each case: hours of work
    results["peak_ratios"], results["notes"] = peak_ratios(cases), NOTES
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    return report(results, table(cases))


def peak_ratios(cases: dict) -> dict:
    """Each case's peak over the unquantized from_pretrained peak of the same backbone and dtype."""
    ratios = {}
    for name, case in sorted(cases.items()):
        backbone, dtype, loader, quantization = name.split("/")
        baseline = cases.get(f"{backbone}/{dtype}/from_pretrained/none", {})
        if "peak_gib" in case and "peak_gib" in baseline and name != f"{backbone}/{dtype}/from_pretrained/none":
            ratios[name] = round(case["peak_gib"] / baseline["peak_gib"], 2)
    return ratios


def table(cases: dict) -> str:
    lines = [f"{'case':40} {'load s':>7} {'RSS after load':>14} {'peak load':>9} {'peak':>6} {'s/step 2br':>10} {'3br':>6}"]
    for name, case in sorted(cases.items()):
        if "error" in case:
            lines.append(f"{name:40} {case['error']}")
            continue
        if "sizes" in case:  # FLUX: one load, a row per size
            for size, row in case["sizes"].items():
                lines.append(f"{name + ' ' + size + ' px':40} {case['load_s']:7.1f} {case['rss_after_load_gib']:11.2f} GiB "
                             f"{case['peak_during_load_gib']:9.2f} {row['peak_gib']:6.2f} "
                             + " ".join(f"{row[f'branches_{b}_s_per_step']:6.1f}" for b in FLUX_FORMS) + " (s/step 1/2/3br)")
            continue
        equal = case.get("equal_weights_s_per_step", case.get("equal_weights_s_per_image"))
        unequal = case.get("unequal_weights_s_per_step", case.get("unequal_weights_s_per_image"))
        lines.append(f"{name:40} {case['load_s']:7.1f} {case['rss_after_load_gib']:11.2f} GiB {case['peak_during_load_gib']:9.2f} "
                     f"{case['peak_gib']:6.2f} {equal:10.1f} {unequal:6.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
