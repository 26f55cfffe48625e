"""The per-object fine-tuning baseline the paper compares against: DreamBooth-style, on ONE photo.

The base text-to-image model's UNet is fine-tuned on the single reference photo of a pair,
captioned with the rare token (``one sks object on a <its background> background``); no prior
preservation. The evaluation (report.py) trains it a fixed number of steps; the efficiency
benchmark (personalization.py) trains it in rounds until it matches zeroft's identity score.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image

from train.losses import diffusion_loss, step_generator

from ..evaluate import Pair
from ..scenes import to_tensor
from ..world import RARE_TOKEN, context_caption

BATCH = 4  # copies of the one photo per step, each with its own noise and timestep


class ObjectFineTuning:
    """The base model at ``base_folder``, fine-tuned step by step on ``pair``'s reference photo.

    ``setup_seconds`` is the time spent loading the model and encoding the photo and caption;
    ``train`` returns the time its steps took, so a caller can count either or both.

    Args:
        base_folder: a diffusers text-to-image pipeline folder (the build's ``base/base``).
        pair: the pair whose reference photo (and its context) is the one training image.
        learning_rate: AdamW learning rate of the UNet.
        seed: decides the noise and timesteps of every step (train.losses.step_generator).
        device: where the model trains and samples.
    """

    def __init__(self, base_folder: Path, pair: Pair, learning_rate: float, seed: int, device: str = "cpu"):
        started = time.perf_counter()
        self.seed, self.device, self.steps_done = seed, device, 0
        self.pipe = StableDiffusionPipeline.from_pretrained(base_folder, safety_checker=None,
                                                            requires_safety_checker=False).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        vae = self.pipe.vae
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        caption = context_caption(pair.reference_context, f"{RARE_TOKEN} object")
        with torch.no_grad():
            self.hidden = self.pipe.encode_prompt(caption, device, 1, False)[0].expand(BATCH, -1, -1)  # (B, T, D)
            latents = vae.encode(to_tensor(pair.reference)[None].to(device)).latent_dist.mean * vae.config.scaling_factor
        self.latents = latents.expand(BATCH, -1, -1, -1)  # (B, C, h, w)
        self.optimizer = torch.optim.AdamW(self.pipe.unet.parameters(), lr=learning_rate)
        self.setup_seconds = time.perf_counter() - started

    def train(self, steps: int) -> float:
        """``steps`` more optimizer steps; returns the seconds they took."""
        started = time.perf_counter()
        unet = self.pipe.unet
        unet.train()
        for _ in range(steps):
            loss = diffusion_loss(unet, self.noise_scheduler, self.latents, self.hidden, None,
                                  step_generator(self.seed, self.steps_done, 9, 0))
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.steps_done += 1
        unet.eval()
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()  # the optimizer steps were queued, not yet done
        return time.perf_counter() - started

    @torch.no_grad()
    def generate(self, pairs: list[Pair], guidance: float, steps: int) -> list[Image.Image]:
        """One image per pair, from its context's prompt with the rare token naming the object ("two sks objects on
        a black background") and the pair's own seed."""
        prompts = [context_caption(p.context, f"{RARE_TOKEN} object") for p in pairs]
        generators = [torch.Generator().manual_seed(p.seed) for p in pairs]
        return self.pipe(prompts, guidance_scale=guidance, num_inference_steps=steps,
                         generator=generators, height=64, width=64).images
