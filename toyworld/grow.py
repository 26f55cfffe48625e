"""Grow a ``lat32`` zeroft model out of a trained ``v1`` one, instead of training its base from scratch.

The ``lat32`` UNet is v1's levels below one new 32×32 level (models.make_unet), so most of a trained v1
model fits it: v1's level i becomes lat32's level i + 1 (16×16, 8×8, 4×4), the middle block and the time
embedding carry over, and the object attention (adapter) has the same layers in the same order. What is new
is the 32×32 level, the layers that join it to the 16×16 level, and ``conv_in``/``conv_out`` for the
2×-down VAE's 32×32×4 latents; they keep their fresh initialisation.

The timestep embedding must carry over too, or every grafted resnet's ``time_emb_proj`` stays fresh (a first
try that left it out trained slower: docs/experiments/2026-11-28-grown-lat32.md). A plain lat32 UNet embeds timesteps in 4 × 32 = 128
dimensions, v1 in 4 × 64 = 256, so the grown UNet keeps v1's 256 (``time_embedding_dim``). Its sinusoidal input is
32-dimensional, not 64: with ``freq_shift`` 0, those 16 frequencies are exactly v1's even ones (cos half, then sin
half), so ``linear_1`` starts from v1's columns, each odd frequency's column added to the even one below it (an
approximation: the odd frequencies are gone).

A lat32 build from scratch needs its own base stage and about 26,000 zeroft steps (a working day on a
2-core CPU); this starts the zeroft stage from what the shipped model already
learned (which object tokens mean which shape, colour and pattern, at 8×8 and 4×4) and lets the
whole-network training fit the new outer level to it. The grown model keeps the source's text encoder,
tokenizer, scheduler and object encoder, which its attention layers were trained with.

    python -m toyworld build --unet lat32 --grow-from assets/zeroft-toy --work runs/grow ...
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open

from zeroft.config import ZeroFTConfig
from zeroft.errors import InputError

from .models import make_unet

# Parameter-name prefixes of the lat32 UNet → those of the v1 UNet they are taken from.
LEVELS = {"down_blocks.1.": "down_blocks.0.", "down_blocks.2.": "down_blocks.1.", "down_blocks.3.": "down_blocks.2.",
          "up_blocks.0.": "up_blocks.0.", "up_blocks.1.": "up_blocks.1.", "up_blocks.2.": "up_blocks.2.",
          "mid_block.": "mid_block.", "time_embedding.": "time_embedding."}


def source_name(name: str) -> str | None:
    """The v1 parameter a lat32 parameter is grown from, or None for a new one."""
    for target, source in LEVELS.items():
        if name.startswith(target):
            return source + name[len(target):]
    return None


def merged_frequencies(weight: torch.Tensor, width: int) -> torch.Tensor:
    """v1's ``time_embedding.linear_1`` weight (out, 2h) for a sinusoid of ``width`` = h dimensions: each half
    (cos, sin) keeps the even frequencies, each with the next odd frequency's column added."""
    half = weight.shape[1] // 2
    if width * 2 != weight.shape[1]:
        raise ValueError(f"cannot map a {weight.shape[1]}-dimensional timestep input onto {width}")
    parts = [weight[:, start:start + half] for start in (0, half)]
    return torch.cat([part[:, 0::2] + part[:, 1::2] for part in parts], dim=1)


def graft(unet: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict:
    """Copy into ``unet`` (lat32) every tensor of ``source`` (a v1 UNet's state dict) whose mapped name and shape
    match, and ``time_embedding.linear_1.weight`` through :func:`merged_frequencies`; returns counts of what was
    taken and what stayed new."""
    state = unet.state_dict()
    taken, new_params, taken_params = [], 0, 0
    for name, tensor in state.items():
        origin = source_name(name)
        value = source.get(origin) if origin is not None else None
        if value is not None and name == "time_embedding.linear_1.weight" and value.shape != tensor.shape \
                and value.shape[0] == tensor.shape[0] and value.shape[1] == 2 * tensor.shape[1]:
            value = merged_frequencies(value, tensor.shape[1])
        if value is not None and value.shape == tensor.shape:
            state[name] = value.to(tensor.dtype)
            taken.append(name)
            taken_params += tensor.numel()
        else:
            new_params += tensor.numel()
    unet.load_state_dict(state)
    return {"tensors_taken": len(taken), "tensors_new": len(state) - len(taken),
            "parameters_taken": taken_params, "parameters_new": new_params}


def grow(source: Path, vae_folder: Path, base_out: Path, init_out: Path, encoder_out: Path, seed: int) -> dict:
    """Write a lat32 base pipeline (``base_out``: the source's text encoder, tokenizer and scheduler, the VAE in
    ``vae_folder``, the grown UNet), the zeroft checkpoint that starts training (``init_out``: grown UNet and the
    source's adapter) and the source's object encoder (``encoder_out``)."""
    config = ZeroFTConfig.load(source)
    if not config.unet_tuned:
        raise InputError(f"{source} holds an adapter-only checkpoint; growing needs a whole-network one (unet/)")
    if config.encoder.path is None:
        raise InputError(f"{source} names no local object encoder to carry over")
    source_unet = UNet2DConditionModel.from_pretrained(source / "unet", torch_dtype=torch.float32)
    if tuple(source_unet.config.block_out_channels) != (64, 128, 128) or source_unet.config.sample_size != 16:
        raise InputError(f"{source}/unet is not a toy world v1 UNet (block_out_channels "
                         f"{list(source_unet.config.block_out_channels)}, sample_size {source_unet.config.sample_size})")
    # v1's timestep-embedding width, so the grafted resnets keep their time input (module docstring)
    unet = make_unet(seed, "lat32", source_unet.time_embedding.linear_2.out_features)
    report = graft(unet, source_unet.state_dict())
    base = StableDiffusionPipeline.from_pretrained(
        source / config.base_model, unet=unet, vae=AutoencoderKL.from_pretrained(vae_folder, torch_dtype=torch.float32),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
        torch_dtype=torch.float32)
    for folder in (base_out, init_out, encoder_out):
        if folder.exists():
            shutil.rmtree(folder)
    base.save_pretrained(base_out, safe_serialization=True)
    init_out.mkdir(parents=True)
    unet.save_pretrained(init_out / "unet", safe_serialization=True)
    shutil.copyfile(source / "adapter.safetensors", init_out / "adapter.safetensors")
    with safe_open(str(source / "adapter.safetensors"), "pt") as adapter:  # to_k_ip and to_v_ip per layer
        layers = sum(key.startswith("ip_adapter.") for key in adapter.keys()) // 2
    config.replace(unet_tuned=True).save(init_out)
    shutil.copytree(source / config.encoder.path, encoder_out)
    return {**report, "source": str(source), "adapter_layers": layers,
            "source_steps": config.training.get("steps")}


def grow_stage(source: Path, work: Path, seed: int) -> dict:
    """The build's stand-in for the encoder and base stages: done once, recorded in ``done.json`` files."""
    done = work / "base" / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if info.get("grown_from") != str(source):
            raise InputError(f"{work} holds a base {('grown from ' + info['grown_from']) if info.get('grown_from') else 'trained from scratch'}, "
                             f"not one grown from {source}: use another --work folder")
        return info
    info = grow(source, work / "vae" / "vae", work / "base" / "base", work / "grow" / "init",
                work / "encoder" / "encoder", seed)
    info = {"unet": "lat32", "grown_from": str(source), **info}
    (work / "encoder" / "done.json").write_text(json.dumps({"copied_from": str(source / "encoder")}, indent=2) + "\n")
    done.write_text(json.dumps(info, indent=2) + "\n")
    return info
