"""``ZeroFTXLPipeline``: Stable Diffusion XL conditioned on one object photo, with two guidance weights.

A subclass of diffusers' ``StableDiffusionXLPipeline`` with the same object path and guidance
as ``ZeroFTPipeline`` (both from zeroft.generation's :class:`ZeroFTMixin`). What SDXL adds
goes with each guidance branch: the two text encoders' tokens, the pooled text embedding
(``text_embeds``, with the branch's text) and the size conditions (``time_ids``: original size,
crop corner, target size; Podell et al., 2023, sec. 2.2), computed as diffusers' SDXL pipeline
computes them. An empty negative prompt is SDXL's all-zeros unconditional text, as the base
model's ``force_zeros_for_empty_prompt`` asks.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from .config import ZeroFTConfig
from .encoder import ObjectEncoder
from .fence import sdxl_time_ids
from .generation import ZeroFTMixin
from .masking import Masker


class ZeroFTXLPipeline(ZeroFTMixin, StableDiffusionXLPipeline):
    r"""Generate images of the object in one photo, in the scene a prompt describes (Stable Diffusion XL).

    Example::

        pipe = ZeroFTXLPipeline.from_pretrained("ip-adapter-sdxl-vit-h")  # or zeroft.load_pipeline(...)
        out = pipe("a photo of it on the beach", object_image="dog.png", num_images=2, seed=0)
    """

    backbone = "sdxl"
    model_cpu_offload_seq = "text_encoder->text_encoder_2->object_encoder->unet->vae"
    _optional_components = ["tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "image_encoder",
                            "feature_extractor", "object_encoder"]

    def __init__(
        self,
        vae,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        unet,
        scheduler,
        object_encoder: ObjectEncoder | None = None,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
        zeroft_config: ZeroFTConfig | None = None,
        masker: Masker | None = None,
        cache_size: int = 64,
        quantization: str = "none",
    ):
        super().__init__(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, image_encoder=image_encoder,
            feature_extractor=feature_extractor, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            add_watermarker=add_watermarker,
        )
        self._init_zeroft(object_encoder, zeroft_config, masker, cache_size, quantization)

    def _text_conditions(self, prompt: str, negative_prompt: str) -> tuple[dict, dict]:
        """Tokens (1, T, C1+C2) and pooled embedding (1, P) of the prompt and of the negative prompt."""
        positive, negative, pooled, negative_pooled = self.encode_prompt(
            prompt, device=self._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=negative_prompt or None,  # None: zeros, when the base model asks for them
        )
        return ({"encoder_hidden_states": positive, "text_embeds": pooled},
                {"encoder_hidden_states": negative, "text_embeds": negative_pooled})

    def _size_conditions(self, height: int, width: int, batch: int) -> dict[str, torch.Tensor]:
        """{"time_ids": (N, 6)}: the image is generated whole at its size (no crop), as diffusers does."""
        projection_dim = self.text_encoder_2.config.projection_dim if self.text_encoder_2 is not None else None
        time_ids = sdxl_time_ids(self, height, width, dtype=self.unet.dtype, projection_dim=projection_dim)
        return {"time_ids": time_ids.to(self._execution_device).repeat(batch, 1)}

    def _decode(self, latents: torch.Tensor, output_type: str, height: int, width: int):
        """Step 9 of diffusers' ``StableDiffusionXLPipeline.__call__`` (0.42.1), which has no method of its own: fp16
        VAEs that ask for it (``force_upcast``) decode in fp32, latent statistics where the VAE has them, the
        watermark where one is set. tests/test_guidance.py checks the images against the stock pipeline's."""
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:
            self.vae.to(dtype=torch.float32)
        latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
        mean, std = getattr(self.vae.config, "latents_mean", None), getattr(self.vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / self.vae.config.scaling_factor + mean
        else:
            latents = latents / self.vae.config.scaling_factor
        decoded = self.vae.decode(latents, return_dict=False)[0]
        if upcast:
            self.vae.to(dtype=torch.float16)
        if self.watermark is not None:
            decoded = self.watermark.apply_watermark(decoded)
        return self.image_processor.postprocess(decoded, output_type=output_type)
