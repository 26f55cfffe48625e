"""The denoising objective and the frozen encoders around it, with explicit random generators.

Every random draw (noise, timesteps, VAE posterior samples) comes from a generator the caller
seeds from (seed, step, micro-batch, rank), never from global RNG state: that is what makes a
resumed run end bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zeroft.cache import LRUCache


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """A CPU generator determined by (seed, step, micro-batch, rank) alone."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & (2**63 - 1))


class TextEncoderCache:
    """Frozen text-encoder outputs per caption (toy and class-name captions repeat a lot)."""

    def __init__(self, tokenizer, text_encoder, maxsize: int = 4096):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.cache = LRUCache(maxsize)

    @torch.no_grad()
    def __call__(self, captions: list[str], device) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            tokens = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt").input_ids
            hidden = self.text_encoder(tokens.to(self.text_encoder.device))[0].cpu()
            for caption, row in zip(missing, hidden):
                self.cache.put(caption, row)
        return torch.stack([self.cache.get(c) for c in captions]).to(device)  # (B, T, C)


@torch.no_grad()
def encode_latents(vae, pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → scaled latents, sampled from the VAE posterior with ``generator``."""
    posterior = vae.encode(pixel_values.to(device=vae.device, dtype=vae.dtype)).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
    latents = posterior.mean + posterior.std * noise
    return latents * vae.config.scaling_factor


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   image_embeds: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Mean squared error of the UNet's ε- or v-prediction on noised latents (Ho et al., 2020, eq. 14).

    Args:
        latents: (B, C, h, w) clean latents.
        encoder_hidden_states: (B, T, C_text) text tokens.
        image_embeds: (B, D) object embeddings (zeros = ϕ), or None for a UNet without object attention.
    """
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
    timesteps = timesteps.to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    added = None if image_embeds is None else {"image_embeds": [image_embeds[:, None, :]]}  # (B, 1, D)
    prediction = unet(noisy, timesteps, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added).sample
    return F.mse_loss(prediction.float(), target.float())
