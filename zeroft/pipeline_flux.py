"""``ZeroFTFluxPipeline``: FLUX.1 conditioned on one object photo, with the object weight as true guidance.

A subclass of diffusers' ``FluxPipeline`` with the object side, caches, limits and numbered ``__call__`` of every
zeroft pipeline (zeroft.generation's :class:`ZeroFTMixin`); this module holds only what is FLUX.1's own: the
transformer as denoiser (packed 2 x 2 latents, position ids, flow-matching timesteps shifted with the image size),
the T5 and CLIP text conditions, the embedded guidance, and the decode.

Guidance. FLUX.1-dev is guidance-distilled: the text is carried by the embedded guidance g (``embedded_guidance``,
diffusers' ``guidance_scale``, 3.5 by default), which every transformer call v_g gets. zeroft's weights are true
guidance terms on top of it, the three-branch form of zeroft.guidance over v_g:

    v̂ = v_g(∅,ϕ) + w_text·[v_g(c,ϕ) − v_g(∅,ϕ)] + w_obj·[v_g(c,o) − v_g(c,ϕ)]

- w_text is true text guidance against the negative prompt (diffusers' ``true_cfg_scale``); at 1, its usual value on
  FLUX.1-dev, the (∅,ϕ) branch is not evaluated;
- w_obj is true guidance over the object (the form OminiControl's ``image_guidance_scale`` takes); at w_obj = 1 and
  w_text = 1 one branch runs, v_g(c,o): stock FLUX with the adapter;
- ϕ is the embedding of a black image, what diffusers gives the negative branch when no negative IP image is set,
  so that w_text = w_obj = s with a negative prompt is stock ``FluxPipeline`` + ``load_ip_adapter`` +
  ``true_cfg_scale=s`` (tests/test_flux_pipeline.py).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

from .cache import LRUCache
from .config import ZeroFTConfig
from .encoder import ObjectEncoder
from .errors import InputError
from .fence import flux_unpack_latents
from .generation import PROMPT_CACHE_BYTES, ZeroFTMixin
from .masking import Masker
from .validation import check_guidance, native_size

DEFAULT_EMBEDDED_GUIDANCE = 3.5  # FluxPipeline's guidance_scale default
MAX_SEQUENCE_LENGTH = 512  # T5 tokens of a prompt, FluxPipeline's default (FLUX.1-dev's maximum)


class ZeroFTFluxPipeline(ZeroFTMixin, FluxPipeline):
    r"""Generate images of the object in one photo, in the scene a prompt describes (FLUX.1).

    Example::

        pipe = zeroft.load_pipeline("ip-adapter-flux-dev")  # FLUX.1 [dev]: non-commercial licence, gated repository
        out = pipe("a photo of it on the beach", object_image="dog.png", object_guidance=2.0, seed=0)
    """

    backbone = "flux"
    model_cpu_offload_seq = "text_encoder->text_encoder_2->object_encoder->transformer->vae"
    _optional_components = ["image_encoder", "feature_extractor", "object_encoder"]

    def __init__(
        self,
        scheduler,
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        transformer,
        object_encoder: ObjectEncoder | None = None,
        image_encoder=None,
        feature_extractor=None,
        zeroft_config: ZeroFTConfig | None = None,
        masker: Masker | None = None,
        cache_size: int = 64,
        quantization: str = "none",
    ):
        super().__init__(
            scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
            text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
            image_encoder=image_encoder, feature_extractor=feature_extractor,
        )
        self._init_zeroft(object_encoder, zeroft_config, masker, cache_size, quantization)
        self._embedded_guidance = DEFAULT_EMBEDDED_GUIDANCE
        # text -> its conditions: T5-XXL is the costliest encoder here, so a negative prompt shared by many prompts
        # (usually "") is encoded once, not once per (prompt, negative prompt) pair as prompt_cache keys them
        self.text_cache = LRUCache(cache_size, max_bytes=PROMPT_CACHE_BYTES)

    # ------------------------------------------------------------------ what FLUX.1 adds to a call

    def __call__(self, *args, embedded_guidance: float | None = None, **kwargs):
        """:meth:`ZeroFTMixin.__call__`, plus ``embedded_guidance``: the guidance g FLUX.1-dev was distilled with,
        given to every transformer call (diffusers' ``guidance_scale``; default 3.5; ignored by FLUX.1-schnell,
        which has none). ``text_guidance`` and ``object_guidance`` are true guidance on top of it (module docstring)."""
        self._embedded_guidance = check_guidance(
            "embedded guidance", DEFAULT_EMBEDDED_GUIDANCE if embedded_guidance is None else embedded_guidance)
        return super().__call__(*args, **kwargs)

    def _family_settings(self) -> dict:
        return {"embedded_guidance": self._embedded_guidance if self.transformer.config.guidance_embeds else None}

    # ------------------------------------------------------------------ object side

    def null_object(self) -> torch.Tensor:
        """ϕ (1, D) on the CPU, float32: the encoder's embedding of a black image, what diffusers' FluxPipeline
        gives the (∅) branch when no negative IP image is set (zeroft.encoder.ObjectEncoder.black_embedding)."""
        if self.object_encoder is None:
            raise ValueError("a FLUX pipeline needs its object encoder for the null object")
        return self.object_encoder.black_embedding().float().cpu().clone()

    # ------------------------------------------------------------------ text side

    def _text_conditions(self, prompt: str, negative_prompt: str) -> tuple[dict, dict]:
        """T5 tokens (1, 512, 4096) and the pooled CLIP embedding (1, 768) of the prompt and of the negative prompt,
        each from ``text_cache`` or encoded once."""
        return self.text_cache.get_or_create(prompt, lambda: self._encode_text(prompt)), \
            self.text_cache.get_or_create(negative_prompt, lambda: self._encode_text(negative_prompt))

    def _encode_text(self, text: str) -> dict:
        tokens, pooled, _ = self.encode_prompt(prompt=text, prompt_2=None, device=self._execution_device,
                                               num_images_per_prompt=1, max_sequence_length=MAX_SEQUENCE_LENGTH)
        return {"encoder_hidden_states": tokens, "pooled_projections": pooled}

    # ------------------------------------------------------------------ the denoiser: FLUX.1's transformer

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    @property
    def native_size(self) -> int:
        """1024 px for FLUX.1 (FluxPipeline's default size), or the checkpoint's default size if larger."""
        defaults = self.zeroft_config.defaults if self.zeroft_config else None
        return native_size(self.default_sample_size, self.vae_scale_factor, defaults)

    def _check_grid(self, height: int, width: int) -> None:
        multiple = self.vae_scale_factor * 2
        for name, value in (("height", height), ("width", width)):
            if value % multiple:
                raise InputError(f"{name} must be a multiple of {multiple} for FLUX.1 (it packs 2 x 2 latents), "
                                 f"not {value}.")

    def _prepare_latents(self, batch, height, width, dtype, device, generator, latents):
        """Packed noise (N, h/2 · w/2, 4C) and the latent grid's position ids, as FluxPipeline draws them."""
        latents, image_ids = self.prepare_latents(batch, self.transformer.config.in_channels // 4, height, width,
                                                  dtype, device, generator, latents)
        return latents, {"img_ids": image_ids}

    def _set_timesteps(self, steps: int, device: torch.device, height: int, width: int) -> torch.Tensor:
        """FluxPipeline's schedule: σ from 1 to 1/steps, shifted by μ, which grows with the number of latent patches."""
        sigmas = None if getattr(self.scheduler.config, "use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        patches = (height // (self.vae_scale_factor * 2)) * (width // (self.vae_scale_factor * 2))
        mu = calculate_shift(patches, self.scheduler.config.get("base_image_seq_len", 256),
                             self.scheduler.config.get("max_image_seq_len", 4096),
                             self.scheduler.config.get("base_shift", 0.5), self.scheduler.config.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(self.scheduler, steps, device, sigmas=sigmas, mu=mu)
        self.scheduler.set_begin_index(0)
        return timesteps

    def _step_kwargs(self, generator) -> dict:
        return {}

    def _scale_input(self, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model_input  # flow matching feeds the latents as they are

    def _model_call(self, model_input, t, text, added_cond_kwargs, context) -> torch.Tensor:
        """One transformer call, as FluxPipeline makes it: timestep / 1000, the embedded guidance, the pooled CLIP
        text, T5 tokens with their (zero) position ids, the object tokens through ``joint_attention_kwargs``."""
        count = model_input.shape[0]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], self._embedded_guidance, device=model_input.device,
                                  dtype=torch.float32).expand(count)
        timestep = t.expand(count).to(model_input.dtype)
        text_ids = torch.zeros(text.shape[1], 3, device=text.device, dtype=text.dtype)
        return self.transformer(
            hidden_states=model_input, timestep=timestep / 1000, guidance=guidance,
            pooled_projections=added_cond_kwargs["pooled_projections"], encoder_hidden_states=text,
            txt_ids=text_ids, img_ids=context["img_ids"],
            joint_attention_kwargs={"ip_adapter_image_embeds": added_cond_kwargs["image_embeds"]},
            return_dict=False,
        )[0]

    def _decode(self, latents: torch.Tensor, output_type: str, height: int, width: int):
        """FluxPipeline's decode: unpack the 2 x 2 patches, undo the VAE's scale and shift, decode."""
        latents = flux_unpack_latents(latents, height, width, self.vae_scale_factor)
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        decoded = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        return self.image_processor.postprocess(decoded, output_type=output_type)
