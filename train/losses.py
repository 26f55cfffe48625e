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

from .data import DROPPED_CAPTION


TEXT_CACHE_BYTES = 2 * 2**30  # FLUX's 512 T5 tokens of 4096 are 8 MB a caption in fp32: bound the cache in bytes


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """A CPU generator determined by (seed, step, micro-batch, rank) alone."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & (2**63 - 1))


def conditions_on_text_time(unet) -> bool:
    """Whether the UNet adds a pooled text embedding and size conditions to its time embedding (SDXL's
    ``addition_embed_type="text_time"``): then it needs ``text_embeds`` and ``time_ids`` with every call."""
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


class TextEncoderCache:
    """Frozen text conditions per caption (toy and class-name captions repeat a lot).

    A call returns ``{"encoder_hidden_states": (B, T, C)}`` (FLUX.1, ``flux``: also ``pooled_projections`` (B, P), as
    FluxPipeline.encode_prompt gives them), and with ``pooled`` (an SDXL UNet,
    :func:`conditions_on_text_time`) also ``{"text_embeds": (B, P)}``: then the tokens are both text
    encoders' penultimate hidden states joined and the pooled embedding the second encoder's, computed by
    the base pipeline's own ``encode_prompt``, so training conditions as inference does. Where the base
    model asks for zeros for an empty prompt (``force_zeros_for_empty_prompt``: SDXL base), a dropped
    caption (train.data.DROPPED_CAPTION) gives zeros, tokens and pooled alike: that is the unconditional
    input of its guidance, and what zeroft's inference uses for an empty negative prompt.

    Args:
        base: the diffusers base pipeline, holding the frozen tokenizers and text encoders.
        pooled: also return the pooled embedding (SDXL).
    """

    def __init__(self, base, pooled: bool = False, maxsize: int = 4096, flux: bool = False):
        self.base, self.pooled, self.flux = base, pooled, flux
        self.zeros_for_dropped = bool(base.config.get("force_zeros_for_empty_prompt", False))
        self.cache = LRUCache(maxsize, max_bytes=TEXT_CACHE_BYTES)

    def _encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        if self.flux:  # FLUX.1: T5 tokens (B, 512, C) and the pooled CLIP text (B, P), from FluxPipeline.encode_prompt
            tokens, pooled, _ = self.base.encode_prompt(captions, prompt_2=None, device=self.base.text_encoder_2.device,
                                                        num_images_per_prompt=1)
            return {"encoder_hidden_states": tokens, "pooled_projections": pooled}
        if not self.pooled:
            tokenizer, text_encoder = self.base.tokenizer, self.base.text_encoder
            tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                               truncation=True, return_tensors="pt").input_ids
            return {"encoder_hidden_states": text_encoder(tokens.to(text_encoder.device))[0]}
        hidden, _, pooled, _ = self.base.encode_prompt(captions, device=self.base.text_encoder_2.device,
                                                       num_images_per_prompt=1, do_classifier_free_guidance=False)
        return {"encoder_hidden_states": hidden, "text_embeds": pooled}  # (B, T, C1 + C2), (B, P)

    @torch.no_grad()
    def __call__(self, captions: list[str], device) -> dict[str, torch.Tensor]:
        for caption in dict.fromkeys(captions):
            if caption in self.cache:
                continue
            # One caption per call: batched, a matmul may round differently with what else is in the batch
            # (the tiny SDXL's pooled projection does), and then a resumed run, whose cache starts empty,
            # would not condition exactly as an uninterrupted one.
            conditions = {name: value[0].cpu() for name, value in self._encode([caption]).items()}
            if self.zeros_for_dropped and caption == DROPPED_CAPTION:
                conditions = {name: torch.zeros_like(value) for name, value in conditions.items()}
            self.cache.put(caption, conditions)
        rows = [self.cache.get(c) for c in captions]
        return {name: torch.stack([r[name] for r in rows]).to(device) for name in rows[0]}


LATENT_CACHE_BYTES = 2 * 2**30  # FLUX at 512 px: (16, 64, 64) mean and std in fp32, 0.5 MB an image: ~4,000 images


def vae_posterior(vae, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE's posterior for ``pixel_values`` (B, 3, H, W) in [-1, 1]."""
    posterior = vae.encode(pixel_values.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return posterior.mean, posterior.std


class LatentCache:
    """Each training image's VAE posterior (mean, std), kept so that an image seen again skips the VAE encoder.

    The target photos are read deterministically (a centre crop at the training resolution, no augmentation), so an
    image's posterior is the same every time it is drawn; latents are still sampled from it with the step's generator,
    as :func:`encode_latents` does without the cache. Keys are (stream, record) pairs; a byte-bounded LRU in memory.
    """

    def __init__(self, vae, max_bytes: int = LATENT_CACHE_BYTES):
        self.vae = vae
        self.cache = LRUCache(2**31, max_bytes=max_bytes)
        self.encoded = 0  # images that went through the VAE encoder

    def posterior(self, pixel_values: torch.Tensor, keys: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (B, C, h, w), of ``pixel_values`` (B, 3, H, W): cached ones looked up, the rest encoded
        in one batch and stored."""
        found = {i: self.cache.get(key) for i, key in enumerate(keys)}
        missing = [i for i, value in found.items() if value is None]
        if missing:
            mean, std = vae_posterior(self.vae, pixel_values[missing])
            for row, i in enumerate(missing):
                found[i] = (mean[row].detach().clone(), std[row].detach().clone())
                self.cache.put(keys[i], found[i])
            self.encoded += len(missing)
        return (torch.stack([found[i][0] for i in range(len(keys))]), torch.stack([found[i][1] for i in range(len(keys))]))


@torch.no_grad()
def encode_latents(vae, pixel_values: torch.Tensor, generator: torch.Generator, cache: LatentCache | None = None,
                   keys: list | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → scaled (and for FLUX shifted) latents, sampled from the VAE posterior with
    ``generator``; with ``cache`` (and the images' ``keys``) the posterior of an image seen before is looked up."""
    mean, std = vae_posterior(vae, pixel_values) if cache is None else cache.posterior(pixel_values, keys)
    noise = torch.randn(mean.shape, generator=generator).to(mean)
    latents = mean + std * noise
    shift = getattr(vae.config, "shift_factor", None) or 0.0  # FLUX's VAE shifts before scaling; SD's has none
    return (latents - shift) * vae.config.scaling_factor


def flow_matching_loss(transformer, latents: torch.Tensor, image_ids: torch.Tensor, text: dict[str, torch.Tensor],
                       image_embeds: torch.Tensor, generator: torch.Generator, weighting_scheme: str = "none",
                       guidance: float | None = 1.0) -> torch.Tensor:
    """FLUX.1's rectified-flow objective (Esser et al. 2024; diffusers' FLUX training examples): the transformer's
    velocity at x_σ = (1 − σ)·x + σ·ε against ε − x, in FLUX's packed 2 x 2 patches.

    σ is drawn per sample by ``weighting_scheme`` (diffusers.training_utils: uniform for "none", logit-normal with
    mean 0 and std 1, "mode" with scale 1.29) and the squared error weighted by it (sigma_sqrt, cosmap; 1 otherwise);
    the transformer sees timestep σ (FluxPipeline passes t / 1000 = σ) and the embedded guidance ``guidance`` (1 in
    training, as those examples use; None for a transformer without it, FLUX.1-schnell's; the caller reads its
    config, since a transformer wrapped for several processes has none).

    Args:
        latents: (B, C, h, w) clean latents, scaled and shifted (:func:`encode_latents`).
        image_ids: (h/2 · w/2, 3) the packed grid's position ids (FluxPipeline.prepare_latents).
        text: ``encoder_hidden_states`` (B, T, C) T5 tokens and ``pooled_projections`` (B, P) pooled CLIP text.
        image_embeds: (B, D) object embeddings (ϕ where dropped).
    """
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

    from zeroft.fence import flux_pack_latents

    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    sigmas = compute_density_for_timestep_sampling(weighting_scheme, batch, logit_mean=0.0, logit_std=1.0,
                                                   mode_scale=1.29, generator=generator).to(latents.device)
    sigma = sigmas.view(-1, 1, 1, 1).to(latents.dtype)
    noisy = flux_pack_latents((1.0 - sigma) * latents + sigma * noise)
    target = flux_pack_latents(noise - latents)
    hidden = text["encoder_hidden_states"]
    embedded = None
    if guidance is not None:
        embedded = torch.full((batch,), float(guidance), device=latents.device, dtype=torch.float32)
    prediction = transformer(
        hidden_states=noisy, timestep=sigmas.to(latents.dtype), guidance=embedded,
        pooled_projections=text["pooled_projections"], encoder_hidden_states=hidden,
        txt_ids=torch.zeros(hidden.shape[1], 3, device=hidden.device, dtype=hidden.dtype), img_ids=image_ids,
        joint_attention_kwargs={"ip_adapter_image_embeds": [image_embeds.unsqueeze(1)]}, return_dict=False)[0]
    weighting = compute_loss_weighting_for_sd3(weighting_scheme, sigmas).view(-1, 1, 1).float()
    return (weighting * (prediction.float() - target.float()) ** 2).mean()


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   image_embeds: torch.Tensor | None, generator: torch.Generator,
                   added_cond_kwargs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean squared error of the UNet's ε- or v-prediction on noised latents (Ho et al., 2020, eq. 14).

    Args:
        latents: (B, C, h, w) clean latents.
        encoder_hidden_states: (B, T, C_text) text tokens.
        image_embeds: (B, D) object embeddings (zeros = ϕ), (B, T, W) patch tokens for IP-Adapter Plus, or None for
            a UNet without object attention.
        added_cond_kwargs: the UNet's other conditions, e.g. SDXL's ``{"text_embeds": (B, P), "time_ids": (B, 6)}``.
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
    added = dict(added_cond_kwargs or {})
    if image_embeds is not None:
        added["image_embeds"] = [image_embeds.unsqueeze(1)]  # (B, 1, D) or (B, 1, T, W)
    prediction = unet(noisy, timesteps, encoder_hidden_states=encoder_hidden_states,
                      added_cond_kwargs=added or None).sample
    return F.mse_loss(prediction.float(), target.float())
