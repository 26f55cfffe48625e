"""Per-step cost of the toy world's base-model training step on one device, per UNet variant and batch size.

One step = text encoder + UNet forward and backward (v-prediction loss) and AdamW, on a FIXED batch, so data
loading is left out; the CPU time to render one batch of scenes is printed beside it, since rendering feeds
every step of the base stage. Sizes a build's budget for a device (see toyworld.budget.GPU).

    python -m toyworld steps --device cuda            # measured on an H200: toyworld/results/gpu-h200-2026-11-27
"""

from __future__ import annotations

import json
import time

import torch
from diffusers import DDPMScheduler

from train.losses import diffusion_loss, step_generator

from ..models import make_scheduler, make_text_encoder, make_tokenizer, make_unet
from ..runtime import build_device
from ..scenes import Scenes
from ..stages import SceneBatch, caption_tokens
from ..world import split_identities

WARMUP = 3  # untimed steps first: allocator, kernels and caches settle


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(variant: str, size: int, precision: str, captions: list[str], device: torch.device,
                     steps: int) -> float:
    """Mean seconds of ``steps`` base training steps of a fresh ``variant`` UNet at batch ``size``, after WARMUP.

    ``precision`` "bf16" runs the forward passes under bf16 autocast (what train.train --mixed_precision bf16 does).
    """
    unet, text_encoder = make_unet(0, variant).to(device), make_text_encoder(0).to(device)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    noise_scheduler = DDPMScheduler.from_config(make_scheduler().config)
    side = unet.config.sample_size
    latents = torch.randn(size, unet.config.in_channels, side, side, device=device)  # (B, C, side, side)
    captions = (captions * (size // len(captions) + 1))[:size]
    tokens = caption_tokens(make_tokenizer(), captions).to(device)
    for step in range(WARMUP + steps):
        if step == WARMUP:
            _sync(device)
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            hidden = text_encoder(tokens)[0]
            loss = diffusion_loss(unet, noise_scheduler, latents, hidden, None, step_generator(0, step, 5, 0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - started) / steps


def step_costs(device: str, batches: list[int], unets: list[str], steps: int, render: int,
               precisions: list[str]) -> dict:
    """Time rendering ``render`` scenes once, then one base training step per (UNet, batch, precision); prints a
    table and returns the report.

    Args:
        device: auto, cpu or cuda (runtime.build_device).
        batches: batch sizes.
        unets: UNet variants (models.UNETS).
        steps: timed steps of each, after WARMUP steps.
        render: scenes rendered on the CPU and timed (their captions feed the text encoder).
        precisions: "fp32" and/or "bf16" (autocast).
    """
    device = build_device(device)
    train_ids, _ = split_identities()
    started = time.perf_counter()
    batch = SceneBatch(Scenes(5, train_ids), render)(0)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              f"render_{render}_scenes_s": round(time.perf_counter() - started, 3), "seconds_per_step": {}}
    print(f"device {report['device']}; rendering {render} scenes: {report[f'render_{render}_scenes_s']} s")
    print("| UNet | batch | precision | s/step | samples/s |\n| --- | --- | --- | --- | --- |")
    for variant, size, precision in [(v, b, p) for v in unets for b in batches for p in precisions]:
        seconds = seconds_per_step(variant, size, precision, batch["caption"], device, steps)
        key = f"{variant}@{size}" + ("" if precision == "fp32" else f"@{precision}")
        report["seconds_per_step"][key] = round(seconds, 4)
        print(f"| {variant} | {size} | {precision} | {seconds:.4f} | {size / seconds:,.0f} |", flush=True)
    print(json.dumps(report))
    return report
