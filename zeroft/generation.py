"""What every zeroft pipeline shares: the object side, the limits of a request, the generation loop.

:class:`ZeroFTMixin` is listed before the diffusers pipeline in each zeroft pipeline's bases
(``ZeroFTPipeline(ZeroFTMixin, StableDiffusionPipeline)``, ``ZeroFTXLPipeline(ZeroFTMixin,
StableDiffusionXLPipeline)``). It owns (1) the masked object encoder and its content-hashed
caches, (2) the three-branch guidance of zeroft.guidance in one batched UNet call, and (3) the
numbered steps of ``__call__``. A family supplies three small hooks:

- ``_text_conditions(prompt, negative_prompt)``: the (1, ...) tensors the UNet takes for each
  text, as a dict holding ``encoder_hidden_states`` and any other added condition that goes with
  a text (SDXL's pooled ``text_embeds``);
- ``_size_conditions(height, width, batch)``: added conditions that depend on the output size
  only (SDXL's ``time_ids``), or {};
- ``_decode(latents, output_type, height, width)``: latents to images, as the family's diffusers pipeline does.

A family whose denoiser is not a UNet (FLUX.1's transformer, zeroft.pipeline_flux) also overrides the
denoiser's own hooks, whose defaults here are the UNet's: ``denoiser``, ``_prepare_latents``,
``_set_timesteps``, ``_step_kwargs``, ``_scale_input`` and ``_model_call``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .adapter import set_object_scale, uses_patch_tokens
from .cache import LRUCache, image_digest, mask_digest
from .assemble import assemble_pipeline
from .checkpoint import save_checkpoint
from .config import GenerationDefaults, ZeroFTConfig
from .encoder import ObjectEncoder, check_views
from .errors import InputError
from .guidance import batch_branches, branches_per_step, check_interval, combine_guidance, needed_branches
from .images import ImageInput, load_image
from .masking import ChosenMask, Masker, choose_mask, mask_cache
from .timing import BudgetWatch, StepTimes, StepWork
from .validation import (check_guidance, check_num_images, check_prompt, check_seed, check_size_for, check_steps,
                         native_size, size_limits)


@dataclass(frozen=True)
class GenerationSettings:
    """Every setting one generation ran with, the checkpoint's defaults filled in: what reproduces it."""

    prompt: str | list[str]  # a list when several prompts were generated in one batch
    negative_prompt: str
    text_guidance: float  # w_text
    object_guidance: float  # w_obj as applied: 0 when no photo or embedding was given
    steps: int
    num_images: int  # per prompt
    height: int
    width: int
    seed: int | None  # None when the caller passed generators or latents instead
    seeds: list[int]  # image i is reproduced by seed=seeds[i], num_images=1
    masks: list[str]  # where each reference photo's mask came from: "given", "alpha" or "automatic:<masker>"
    quantization: str
    device: str
    dtype: str  # the UNet's weights' dtype ("float32", "bfloat16", ...): it changes the pixels
    guidance_interval: list[float] | None = None  # [σ_lo, σ_hi]: guidance only at steps with σ in (σ_lo, σ_hi]
    embedded_guidance: float | None = None  # FLUX.1-dev's distilled guidance g; None for other backbones

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (the CLI's settings file, the app's "Settings used"); a setting only one
        backbone has (``embedded_guidance``) is left out where it does not apply."""
        settings = asdict(self)
        if settings["embedded_guidance"] is None:
            del settings["embedded_guidance"]
        return settings


EMBEDDING_CACHE_BYTES = 64 * 2**20  # object embeddings kept per pipeline: ~50 photos' ViT-H/14 patch tokens
# text conditions kept per pipeline: SD's entries are 0.5 MB, FLUX.1's T5 tokens (512 x 4096) 4 to 8 MB per text
PROMPT_CACHE_BYTES = 256 * 2**20


class EncodedObject(NamedTuple):
    """What :meth:`ZeroFTMixin.encode_object` returns; unpacks as ``(image_embeds, masks)``."""

    image_embeds: torch.Tensor  # (1, D) object embedding o on the pipeline's device, averaged over the photos
    masks: list[ChosenMask]  # each photo's mask as used (fitted, checked) and where it came from


@dataclass
class ZeroFTOutput:
    images: list  # PIL images, or a tensor/array for output_type "pt"/"np"/"latent"
    masks: list[np.ndarray] = field(default_factory=list)  # the object mask used for each reference photo
    image_embeds: torch.Tensor | None = None  # (1, D) or (P, D) object embedding(s) o, reusable as `image_embeds=`
    seeds: list[int] = field(default_factory=list)  # per-image seeds: image i is reproduced by seed=seeds[i], num_images=1
    settings: GenerationSettings | None = None  # every setting used, defaults filled in


class ZeroFTMixin:
    """The object path and the generation loop of a zeroft pipeline (see the module docstring)."""

    backbone = "sd"  # the zeroft_config.json "backbone" this class serves (zeroft.backbones)

    def _init_zeroft(self, object_encoder: ObjectEncoder | None, zeroft_config: ZeroFTConfig | None,
                     masker: Masker | None, cache_size: int, quantization: str = "none") -> None:
        """Register the object encoder and set up the caches; called by each family's ``__init__``.

        ``quantization`` is how the weights were loaded ("none", "int8", "bnb-8bit", "bnb-4bit"), recorded in every
        output's settings; the loader (zeroft.assemble) passes it, since it changes the pixels.
        """
        self.register_modules(object_encoder=object_encoder)
        self.zeroft_config = zeroft_config
        self.quantization = quantization
        self.masker = masker or Masker(zeroft_config.masker if zeroft_config else "border")
        self.mask_cache = mask_cache  # (photo digest, masker spec) -> automatic mask: one per process, the app's too
        # (photo, mask, encoder) digests -> (1, D) embedding, or (1, T, W) patch tokens (1.3 MB each for ViT-H/14)
        self.embedding_cache = LRUCache(cache_size, max_bytes=EMBEDDING_CACHE_BYTES)
        self.prompt_cache = LRUCache(cache_size, max_bytes=PROMPT_CACHE_BYTES)  # (prompt, negative) -> conditions
        self.encoder_calls = 0
        self.step_times = StepTimes()  # what a step costs here, learned from the runs (zeroft.timing)
        self.clock: Callable[[], float] = time.perf_counter  # times the steps; a fake one in tests

    # ------------------------------------------------------------------ object side

    def set_encoder_views(self, views: str) -> None:
        """Average the object embedding over these views of each photo (see zeroft.encoder.VIEWS).

        Recorded in ``zeroft_config`` so :meth:`save_pretrained` keeps it; cached embeddings of the
        old setting are never reused (the cache keys on the encoder's settings).
        """
        encoder_config = replace(self.object_encoder.config, views=check_views(views))
        self.object_encoder.config = encoder_config
        if self.zeroft_config is not None:
            self.zeroft_config = self.zeroft_config.replace(encoder=encoder_config)

    @torch.no_grad()
    def encode_object(self, images: ImageInput | Sequence[ImageInput], masks=None) -> EncodedObject:
        """The object embedding o = f_o(x ⊗ m), averaged over several reference photos, with each photo's mask.

        Each mask is decided by :func:`zeroft.masking.choose_mask` (the given one, else the photo's
        alpha, else the automatic masker, its masks kept in ``mask_cache``); embeddings are kept in
        ``embedding_cache``, so a repeated photo is masked and encoded once.

        Args:
            images: one reference photo or a list of photos of the same object.
            masks: matching masks (None entries: the photo's alpha, else automatic); None for all.

        Returns:
            :class:`EncodedObject`: ((1, D) embedding on the pipeline's device, the :class:`ChosenMask` of
            each photo); ``encode_object(photo)[0]`` is the embedding, to pass as ``image_embeds=``.

        Raises:
            EmptyMaskError: a mask marks nothing (its ``source`` says which).
            InputError: no photo, a count of masks other than of photos, a mask of another shape.
        """
        if self.object_encoder is None:
            raise ValueError("this pipeline has no object encoder; pass image_embeds instead")
        if isinstance(images, (list, tuple)):
            if not images:
                raise InputError("Give at least one reference photo.")
            photos = list(images)
        else:
            photos = [images]
        masks = list(masks) if isinstance(masks, (list, tuple)) else [masks] * len(photos)
        if len(masks) != len(photos):
            raise InputError(f"Got {len(photos)} reference photos but {len(masks)} masks.")
        embeddings, chosen = [], []
        for photo, mask in zip(photos, masks):
            loaded = load_image(photo, "reference photo")
            used = choose_mask(loaded, mask, self.masker, self.mask_cache)
            key = (image_digest(loaded.rgb), mask_digest(used.mask), self.object_encoder.identity, self.uses_patch_tokens)

            def encode(rgb=loaded.rgb, mask=used.mask):
                self.encoder_calls += 1
                pixels = self.object_encoder.preprocess(rgb, mask)[None]
                if self.uses_patch_tokens:
                    return self.object_encoder.tokens(pixels).float().cpu()  # (1, T, W)
                return self.object_encoder(pixels).float().cpu()  # (1, D)

            embeddings.append(self.embedding_cache.get_or_create(key, encode))
            chosen.append(used)
        embedding = torch.cat(embeddings).mean(0, keepdim=True)
        return EncodedObject(embedding.to(self._execution_device), chosen)

    def set_object_scale(self, scale: float) -> None:
        """Scale of the object attention in every layer; 0 turns the object branch off entirely."""
        set_object_scale(self.denoiser, scale)

    # ------------------------------------------------------------------ text side

    def encode_prompt_cached(self, prompt: str, negative_prompt: str) -> tuple[dict, dict]:
        """The UNet conditions of the prompt and of the negative prompt, (1, ...) tensors each, cached.

        Each is a dict holding ``encoder_hidden_states`` (1, T, C) and the family's other
        text conditions (SDXL: ``text_embeds`` (1, P)); see the module docstring.
        """
        device = self._execution_device
        positive, negative = self.prompt_cache.get_or_create(
            (prompt, negative_prompt), lambda: self._text_conditions(prompt, negative_prompt))
        return ({k: v.to(device) for k, v in positive.items()}, {k: v.to(device) for k, v in negative.items()})

    def _size_conditions(self, height: int, width: int, batch: int) -> dict[str, torch.Tensor]:
        """Added UNet conditions that depend only on the output size; none for Stable Diffusion 1.x."""
        return {}

    # ------------------------------------------------------------------ the denoiser (a UNet's, by default)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network the object attention lives in and the sampler calls: the UNet (FLUX: the transformer)."""
        return self.unet

    def _prepare_latents(self, batch: int, height: int, width: int, dtype: torch.dtype, device: torch.device,
                         generator, latents: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """(initial latents (N, C, h, w), what every denoiser call needs besides them: nothing for a UNet)."""
        latents = self.prepare_latents(batch, self.unet.config.in_channels, height, width, dtype, device, generator,
                                       latents)
        return latents, {}

    def _set_timesteps(self, steps: int, device: torch.device, height: int, width: int) -> torch.Tensor:
        """Set the scheduler's timesteps for ``steps`` at this output size (FLUX shifts them with the size)."""
        self.scheduler.set_timesteps(steps, device=device)
        return self.scheduler.timesteps

    def _step_kwargs(self, generator) -> dict:
        """Extra arguments of ``scheduler.step`` (DDIM's eta, the generator of stochastic samplers)."""
        return self.prepare_extra_step_kwargs(generator, 0.0)

    def _scale_input(self, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.scale_model_input(model_input, t)

    def _model_call(self, model_input: torch.Tensor, t: torch.Tensor, text: torch.Tensor, added_cond_kwargs: dict,
                    context: dict) -> torch.Tensor:
        """One denoiser call on the batched branches (zeroft.guidance.batch_branches' text and added conditions)."""
        return self.unet(model_input, t, encoder_hidden_states=text, added_cond_kwargs=added_cond_kwargs,
                         return_dict=False)[0]

    def _family_settings(self) -> dict:
        """Settings only this family has, for :class:`GenerationSettings` (FLUX: ``embedded_guidance``)."""
        return {}

    def _check_grid(self, height: int, width: int) -> None:
        """Refuse sizes the denoiser's latent grid cannot take beyond :func:`zeroft.validation.check_size`'s
        multiple of 8 (FLUX packs 2 x 2 latents: multiples of 16)."""

    # ------------------------------------------------------------------ limits of one request

    @property
    def uses_patch_tokens(self) -> bool:
        """True for an IP-Adapter Plus model: o is the encoder's patch tokens (1, T, W), not its pooled (1, D)."""
        if self.zeroft_config is not None:
            return self.zeroft_config.projection == "plus"
        return uses_patch_tokens(self.denoiser)

    def null_object(self) -> torch.Tensor:
        """ϕ on the CPU, float32: zeros (1, D) for the pooled projection, the tokens of an all-zero normalised image
        (1, T, W) for Plus (zeroft.encoder.ObjectEncoder.null_tokens, computed once there)."""
        if not self.uses_patch_tokens:
            return torch.zeros(1, self.image_embed_dim)
        if self.object_encoder is None:
            raise ValueError("an IP-Adapter Plus pipeline needs its object encoder for the null object")
        return self.object_encoder.null_tokens().float().cpu().clone()  # a copy: outputs hand it to the caller

    @property
    def image_embed_dim(self) -> int:
        """D, the width of the object embedding o (and of the null embedding ϕ)."""
        return self.zeroft_config.image_embed_dim if self.zeroft_config else self.object_encoder.embed_dim

    @property
    def native_size(self) -> int:
        """The output side the backbone was made for, in pixels (zeroft.validation.native_size)."""
        defaults = self.zeroft_config.defaults if self.zeroft_config else None
        return native_size(self.unet.config.sample_size, self.vae_scale_factor, defaults)

    def size_limits(self) -> tuple[int, int]:
        """(smallest, largest) output side on this pipeline's device: zeroft.validation.size_limits."""
        return size_limits(self.native_size, self._execution_device)

    @property
    def unit_seconds(self) -> float | None:
        """Seconds of one cost unit here (one UNet call, one image, native size): measured on first use by
        :meth:`measure_unit_seconds`, then what the last generation under a time budget measured (zeroft.timing).
        Set it by hand to skip the first measurement (a known device, a test)."""
        return self.step_times.unit_seconds

    @unit_seconds.setter
    def unit_seconds(self, value: float | None) -> None:
        self.step_times.unit_seconds = value

    @torch.no_grad()
    def measure_unit_seconds(self, clock: Callable[[], float] | None = None, warm_up: bool = True) -> float:
        """Time one UNet call on one image at the native size (after a warm-up call) and keep it.

        The result, ``self.unit_seconds``, is the cost unit of zeroft.validation.estimate_seconds;
        ``__call__(time_budget=...)`` measures it on first use, and again before refusing a request
        whose single step would not fit (zeroft.timing).

        Args:
            clock: seconds as a float (default ``self.clock``); a fake clock makes the measurement deterministic.
            warm_up: make one untimed call first (the first call allocates and picks kernels).
        """
        clock = clock or self.clock
        device = self._execution_device
        native = self.native_size
        positive, _ = self.encode_prompt_cached("", "")
        latents, context = self._prepare_latents(1, native, native, positive["encoder_hidden_states"].dtype, device,
                                                 torch.Generator("cpu").manual_seed(0), None)
        null = self.null_object().to(device)  # (1, D) or (1, T, W)
        text, added_cond_kwargs = batch_branches(["text"], positive, positive, null, null,
                                                 self._size_conditions(native, native, 1))
        timestep = torch.tensor(500.0, device=device)

        def one_call():
            self._model_call(latents, timestep, text, added_cond_kwargs, context)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        if warm_up:
            one_call()  # the first call allocates and picks kernels; it is not what a step costs
        start = clock()
        one_call()
        self.unit_seconds = max(clock() - start, 1e-9)
        return self.unit_seconds

    # ------------------------------------------------------------------ generation

    def _default(self, name: str, value, without_config=None):
        """``value``, else the checkpoint's default ``name``; a pipeline built without a zeroft config takes
        ``without_config`` where given (the native size), else zeroft's own (zeroft.config.GenerationDefaults)."""
        if value is not None:
            return value
        if self.zeroft_config is not None:
            return getattr(self.zeroft_config.defaults, name)
        return without_config if without_config is not None else getattr(GenerationDefaults(), name)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        object_image: ImageInput | Sequence[ImageInput] | None = None,
        object_mask=None,
        image_embeds: torch.Tensor | None = None,
        negative_prompt: str | None = None,
        text_guidance: float | None = None,
        object_guidance: float | None = None,
        num_images: int = 1,
        num_inference_steps: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        callback: Callable[[int, int], None] | None = None,
        output_type: str = "pil",
        time_budget: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
    ) -> ZeroFTOutput:
        r"""Generate ``num_images`` images of the reference object in the scene of ``prompt``.

        Args:
            prompt: text c describing the scene; a list of P prompts generates them in one batch
                (then ``image_embeds`` may hold one embedding per prompt, shape (P, D)).
            object_image: reference photo (path, bytes, PIL, array) or a list of photos of one object.
            object_mask: mask(s) for the photo(s); None = the photo's alpha, else automatic.
            image_embeds: precomputed object embedding(s), (1, D) or (P, D), instead of ``object_image``.
            negative_prompt: text ∅ for the unconditional branch; default from the checkpoint.
            text_guidance: w_text in [0, 30]; default from the checkpoint.
            object_guidance: w_obj in [0, 30]; default from the checkpoint. 0 ignores the object.
            num_images: 1..8 images per prompt.
            num_inference_steps: 1..150 sampler steps; default from the checkpoint.
            seed: image i (in prompt-major order) uses seed + i, so any image can be regenerated alone.
            generator: torch generator(s), instead of ``seed``.
            height, width: output size, multiples of 8 within :meth:`size_limits`; default from the checkpoint.
            latents: initial noise (P·num_images, C, h, w), instead of drawing it.
            callback: called as ``callback(step, total)`` after every UNet step and once more after
                decoding; ``total`` is the number of steps the scheduler takes (which may exceed
                ``num_inference_steps``: PNDM) plus one for the decode.
            output_type: "pil", "np", "pt" or "latent".
            time_budget: seconds this request may take. The estimate follows what steps cost on this
                machine (zeroft.timing): a request whose single step would not fit is refused before any
                denoising; one estimated over the budget is refused after its first two steps if they,
                as measured, say so.
            guidance_interval: (σ_lo, σ_hi): the three-branch guidance only at steps whose noise level σ
                (zeroft.guidance.noise_levels) is in (σ_lo, σ_hi], one conditional branch ε(c,o) at the others;
                default from the checkpoint (None: every step). Kynkäänniemi et al. (2024) use (0.28, 5.42] for SD-XL.

        Raises:
            InputError: a setting out of range, a size outside :meth:`size_limits`, an empty mask,
                or a request over ``time_budget``.
        """
        # 1. Check inputs and fill defaults from the checkpoint
        prompts = [prompt] if isinstance(prompt, str) or prompt is None else list(prompt)
        if not prompts:
            raise InputError("Give at least one prompt.")
        prompts = [check_prompt("prompt", p) for p in prompts]
        negative_prompt = check_prompt("negative prompt", self._default("negative_prompt", negative_prompt))
        text_guidance = check_guidance("text guidance", self._default("text_guidance", text_guidance))
        object_guidance = check_guidance("object guidance", self._default("object_guidance", object_guidance))
        num_images = check_num_images(num_images)
        steps = check_steps(self._default("steps", num_inference_steps))
        native = self.native_size
        device = self._execution_device
        height = check_size_for("height", self._default("height", height, native), native, device)
        width = check_size_for("width", self._default("width", width, native), native, device)
        self._check_grid(height, width)
        seed = check_seed(seed)
        guidance_interval = check_interval(self._default("guidance_interval", guidance_interval))
        if object_image is not None and image_embeds is not None:
            raise InputError("Give either a reference photo or precomputed image_embeds, not both.")
        if object_image is None and image_embeds is None:
            object_guidance = 0.0  # no object: plain text-to-image with guidance w_text
        batch = len(prompts) * num_images

        # 2. Object embedding o (mask + encoder, both cached) and the null embedding ϕ
        chosen: list[ChosenMask] = []
        if object_image is not None:
            image_embeds, chosen = self.encode_object(object_image, object_mask)
        null = self.null_object()  # ϕ: (1, D), or (1, T, W) for Plus
        if image_embeds is None:
            image_embeds = null
        item = null.shape[1:]  # one object's shape
        if image_embeds.shape[-len(item):] != item:
            raise InputError(f"image_embeds of shape {tuple(image_embeds.shape)} do not fit this model, which takes "
                             f"{'x'.join(map(str, item))} per object.")
        image_embeds = image_embeds.to(device).reshape(-1, *item)  # (1 or P, D) or (1 or P, T, W)
        if image_embeds.shape[0] not in (1, len(prompts)):
            raise InputError(f"Got {image_embeds.shape[0]} object embeddings for {len(prompts)} prompts.")
        object_embeds = image_embeds.expand(len(prompts), *item).repeat_interleave(num_images, 0)  # (N, ...)
        null_embeds = null.to(device=device, dtype=object_embeds.dtype).expand_as(object_embeds)

        # 3. Encode the prompts and the negative prompt (cached), and the size conditions
        encoded = [self.encode_prompt_cached(p, negative_prompt) for p in prompts]
        positive = {key: torch.cat([e[0][key] for e in encoded]).repeat_interleave(num_images, 0)
                    for key in encoded[0][0]}  # (N, ...) each
        negative = {key: value.expand(batch, *value.shape[1:]) for key, value in encoded[0][1].items()}  # (N, ...)
        size_conditions = self._size_conditions(height, width, batch)

        # 4. Prepare latent variables (one generator per image, so image i depends on seed + i only) and timesteps
        seeds: list[int] = []
        if generator is None and seed is not None:
            seeds = [seed + i for i in range(batch)]
            generator = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        timesteps = self._set_timesteps(steps, device, height, width)  # first: the initial noise's scale may need it
        text_dtype = positive["encoder_hidden_states"].dtype
        latents, context = self._prepare_latents(batch, height, width, text_dtype, device, generator, latents)
        extra_step_kwargs = self._step_kwargs(generator)

        # 5. Refuse a request that would take longer than the budget
        branches = needed_branches(text_guidance, object_guidance)
        per_step = branches_per_step(self.scheduler, timesteps, branches, guidance_interval)
        mean_branches = sum(map(len, per_step)) / len(per_step)  # cost units per image and step, on average
        watch = None
        if time_budget is not None:
            work = StepWork(steps=len(timesteps), num_images=batch, height=height, width=width, native_size=native,
                            branches=len(branches) if guidance_interval is None else mean_branches)
            if self.step_times.estimate(work) is None:
                self.measure_unit_seconds()
            watch = BudgetWatch(time_budget, work, self.step_times.estimate(work), clock=self.clock,
                                remeasure=lambda: self.measure_unit_seconds(warm_up=False) * work.units_per_step)

        # 6. Batch the guidance branches: (∅,ϕ), (c,ϕ), (c,o), only those with non-zero weight (and outside a
        # guidance interval only the conditional one)
        batched = {tuple(b): batch_branches(b, positive, negative, object_embeds, null_embeds, size_conditions)
                   for b in per_step}  # branches -> ((k·N, T, C), added conditions)

        # 7. Denoising loop
        self._num_timesteps = len(timesteps)
        total = len(timesteps) + 1  # the UNet calls and the decode
        with self.progress_bar(total=total) as progress_bar:
            for i, t in enumerate(timesteps):
                if watch is not None:
                    watch.begin_step()
                running = per_step[i]
                text_batch, added_cond_kwargs = batched[tuple(running)]
                model_input = self._scale_input(torch.cat([latents] * len(running)), t)
                noise_pred = self._model_call(model_input, t, text_batch, added_cond_kwargs, context)
                eps = dict(zip(running, noise_pred.chunk(len(running))))
                noise_pred = combine_guidance(eps, text_guidance, object_guidance)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if watch is not None:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)  # time the step, not its launch
                    watch.end_step(len(running) / work.branches)  # may refuse the request after its probe steps
                progress_bar.update()
                if callback is not None:
                    callback(i + 1, total)
            if watch is not None:
                self.step_times.record(watch.work, watch.seconds_per_step())

            # 8. Decode
            images = latents if output_type == "latent" else self._decode(latents, output_type, height, width)
            progress_bar.update()
            if callback is not None:
                callback(total, total)
        self.maybe_free_model_hooks()
        settings = GenerationSettings(
            prompt=prompt if isinstance(prompt, str) else prompts, negative_prompt=negative_prompt,
            text_guidance=text_guidance, object_guidance=object_guidance, steps=steps, num_images=num_images,
            height=height, width=width, seed=seed if seeds else None, seeds=seeds, masks=[c.source for c in chosen],
            quantization=self.quantization, device=str(device),
            dtype=str(self.denoiser.dtype).removeprefix("torch."),
            guidance_interval=list(guidance_interval) if guidance_interval is not None else None,
            **self._family_settings(),
        )
        return ZeroFTOutput(images=images, masks=[c.mask for c in chosen], image_embeds=image_embeds.cpu(), seeds=seeds,
                            settings=settings)

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def from_pretrained(cls, checkpoint, **kwargs):
        """Load a zeroft checkpoint folder, Hub repo or preset as this class; see :func:`zeroft.assemble.assemble_pipeline`
        (``zeroft.load_pipeline`` picks the class a checkpoint records)."""
        return assemble_pipeline(checkpoint, pipeline_class=cls, **kwargs)

    def save_pretrained(self, folder, unet_tuned: bool | None = None, **kwargs) -> None:
        """Write a zeroft checkpoint folder; see :func:`zeroft.checkpoint.save_checkpoint`."""
        save_checkpoint(self, folder, unet_tuned=unet_tuned, **kwargs)
