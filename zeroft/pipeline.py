"""``ZeroFTPipeline``: Stable Diffusion 1.x conditioned on one object photo, with two guidance weights.

A subclass of diffusers' ``StableDiffusionPipeline`` that reuses its prompt encoding, latent
preparation and scheduler handling, and adds (1) the masked object encoder, (2) decoupled
object cross-attention in the UNet (zeroft.adapter) and (3) guidance with separate text and
object weights (zeroft.guidance), evaluated as up to three UNet branches in one batched call.
All three live in zeroft.generation's :class:`ZeroFTMixin`, shared with the SDXL pipeline
(zeroft.pipeline_xl); this module holds only what is Stable Diffusion 1.x's own.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from .config import ZeroFTConfig
from .encoder import ObjectEncoder
from .generation import GenerationSettings, ZeroFTMixin, ZeroFTOutput
from .guidance import combine_guidance, needed_branches
from .masking import Masker

__all__ = ["GenerationSettings", "ZeroFTOutput", "ZeroFTPipeline", "combine_guidance", "needed_branches"]


class ZeroFTPipeline(ZeroFTMixin, StableDiffusionPipeline):
    r"""Generate images of the object in one photo, in the scene a prompt describes (Stable Diffusion 1.x).

    Load a checkpoint with :meth:`from_pretrained` (see zeroft.assemble) and call it::

        pipe = ZeroFTPipeline.from_pretrained("assets/zeroft-toy")
        out = pipe("two objects on a green background", object_image="dog.png", num_images=4, seed=0)
        out.images[0].save("out.png")
    """

    backbone = "sd"
    model_cpu_offload_seq = "text_encoder->object_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor", "image_encoder", "object_encoder"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        object_encoder: ObjectEncoder | None = None,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
        zeroft_config: ZeroFTConfig | None = None,
        masker: Masker | None = None,
        cache_size: int = 64,
        quantization: str = "none",
    ):
        super().__init__(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=safety_checker, feature_extractor=feature_extractor, image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        self._init_zeroft(object_encoder, zeroft_config, masker, cache_size, quantization)

    def _text_conditions(self, prompt: str, negative_prompt: str) -> tuple[dict, dict]:
        """({"encoder_hidden_states": (1, T, C)} for the prompt, the same for the negative prompt)."""
        positive, negative = self.encode_prompt(prompt, self._execution_device, 1, True, negative_prompt)
        return {"encoder_hidden_states": positive}, {"encoder_hidden_states": negative}

    def _decode(self, latents: torch.Tensor, output_type: str, height: int, width: int):
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        return self.image_processor.postprocess(decoded, output_type=output_type,
                                                do_denormalize=[True] * latents.shape[0])
