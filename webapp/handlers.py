"""The functions behind the page and the API, as one class: each validates its input, makes one call into
zeroft and returns what the page shows.

The model loads on the first request (on ZeroGPU at start-up, webapp.zerogpu) and is shared by all
visitors, one generation at a time; each request carries its own photo and mask, and zeroft's caches
are keyed by content, so no request can see another's data.
"""

from __future__ import annotations

import functools
import json
import random

import gradio as gr
import numpy as np
from PIL import Image

import zeroft
from zeroft.config import EncoderConfig, ZeroFTConfig
from zeroft.encoder import object_view
from zeroft.images import LoadedImage
from zeroft.masking import DEFAULT_MASKER, ChosenMask, EmptyMaskError, is_empty, mask_cache

from . import zerogpu
from .catalogue import Checkpoints
from .editor import latest, lookup, photo_and_mask, remember
from .errors import user_error
from .examples import committed_mask
from .uploads import as_image

TIME_BUDGET = 120.0  # seconds one request may take (its estimate, zeroft.timing), so one visitor cannot hold
# the only worker for minutes; --time-budget changes it
SIZE_FALLBACK = (64, 1024, 64)  # size slider (smallest, largest, step) where no model's limits are known before loading
EXAMPLE_IMAGES = 2  # images an example click makes


@functools.lru_cache(maxsize=4)
def masker_for(spec: str) -> zeroft.Masker:
    """One masker per spec for the whole app: a rembg masker loads its ONNX session once, not per upload."""
    return zeroft.Masker(spec)


def empty_mask_message(error: EmptyMaskError) -> str:
    """An empty mask's message in the page's own words (the library's names the CLI's flags)."""
    if error.source == "alpha":
        return ("The photo's transparency, used as its mask, hides the whole photo. Paint the object with the "
                "pink brush, or upload a copy of the photo without transparency.")
    if error.source and error.source.startswith("automatic:"):
        return (f"The automatic mask ({error.source.partition(':')[2]}) found no object in this photo. Paint the "
                "object with the pink brush, or try a photo with the object on a plainer background.")
    return ("The mask is empty: nothing marks the object. Paint the object with the pink brush, "
            "or press Automatic mask.")


def automatic(photo: LoadedImage, config: ZeroFTConfig | None, allow_empty: bool = True) -> ChosenMask:
    """The photo's automatic mask with where it came from; an example photo's is its committed mask (no masker
    model needed), recorded as given. Kept in zeroft's own cache of automatic masks (zeroft.masking.mask_cache),
    which the pipeline reads too: uploads, buttons, /mask and generation mask a photo once.

    Args:
        allow_empty: return a mask that marks nothing, for the editor to show and the visitor to paint on;
            False refuses it with the page's words.
    """
    committed = committed_mask(photo)
    if committed is not None:
        return ChosenMask(committed, "given")
    spec = config.masker if config else DEFAULT_MASKER
    try:
        return zeroft.choose_mask(photo, masker=masker_for(spec), cache=mask_cache, allow_empty=allow_empty)
    except EmptyMaskError as error:
        raise user_error(empty_mask_message(error)) from None
    except zeroft.InputError as error:
        raise user_error(str(error)) from None
    except zeroft.ModelUnavailableError as error:
        raise user_error(f"The automatic mask is unavailable: {error} Paint the mask with the brush instead.") from None


def preview(photo: LoadedImage, mask: np.ndarray | None, config: ZeroFTConfig | None):
    """What the encoder sees: the masked, cropped object (None for an empty mask)."""
    if mask is None or is_empty(mask):
        return None
    return object_view(photo.rgb, mask, config.encoder if config else EncoderConfig())


FLUX_WEIGHTS_NOTE = (
    "On FLUX.1 the prompt is carried by the model's own embedded guidance (3.5; **Embedded guidance** under "
    "Advanced). **Text guidance** is true guidance "
    "against the negative prompt on top of it: 1 turns it off (the usual setting, and the fastest). **Object "
    "guidance** is true guidance over the photo's object: 1 is the adapter as diffusers runs it; more holds the "
    "object closer, each step then costing a second transformer call.")


def is_flux(config) -> bool:
    """A FLUX.1 model: its weights mean what FLUX_WEIGHTS_NOTE says, and it takes embedded guidance."""
    return config is not None and config.backbone == "flux"


def model_note(config) -> str:
    """The note shown under the model choice: the checkpoint's licence note (FLUX.1 [dev]'s non-commercial, gated
    licence) and, on FLUX.1, what the two weights mean; "" for the rest."""
    if config is None:
        return ""
    parts = []
    if config.licenses.get("note"):
        parts.append(f"**Licence:** {config.licenses['note']}")
    if is_flux(config):
        parts.append(FLUX_WEIGHTS_NOTE)
    return "\n\n".join(parts)


class Handlers:
    """The handlers of the app that offers ``offered``.

    Args:
        offered: the models, by the names visitors see.
        time_budget: a request estimated to take longer (seconds) is refused before it runs.
        loaded: pipelines loaded at start-up, by model name (ZeroGPU's default), used as they are when
            a request asks for that model unquantized.
    """

    def __init__(self, offered: Checkpoints, time_budget: float = TIME_BUDGET, loaded: dict | None = None):
        self.offered = offered
        self.time_budget = time_budget
        self.loaded = dict(loaded or {})
        self.generate = zerogpu.gpu(self.generate, self.gpu_seconds)  # ZeroGPU runs it on a GPU worker

    def pipeline(self, name: str, quantization: str):
        if name in self.loaded and quantization == "none":
            return self.loaded[name]
        try:
            return zeroft.get_pipeline(self.offered.where(name), quantization=quantization)
        except zeroft.InputError as error:
            raise user_error(self.offered.public(str(error))) from None
        except zeroft.ModelUnavailableError as error:
            raise user_error(self.offered.public(f"The model could not be loaded: {error}")) from None

    # ------------------------------------------------------------------ the editor

    def _show(self, session, photo: LoadedImage, auto: ChosenMask, use_auto: bool, checkpoint):
        session, _ = remember(session, photo, auto, use_auto)
        return *self.display(session, checkpoint), session

    def display(self, session: dict, checkpoint):
        """The editor's value (the strokes cleared by a blank layer) and the encoder's view of the last image shown."""
        shown = latest(session)
        blank = Image.new("RGBA", shown.photo.rgb.size, (0, 0, 0, 0))
        value = {"background": shown.background, "layers": [blank], "composite": None}
        mask = shown.auto.mask if shown.use_auto else None
        return value, preview(shown.photo, mask, self.offered.config(checkpoint))

    def on_upload(self, photo: LoadedImage | None, checkpoint, session=None):
        """A new photo, decoded on the server as the CLI decodes it, with its automatic mask. Its only output is
        the (invisible) state, so a bad file shows its one message and no error badge on the editor."""
        if photo is None:
            return gr.skip()
        return remember(session, photo, automatic(photo, self.offered.config(checkpoint)), True)[0]

    def automatic_mask(self, editor, checkpoint, session):
        photo, _ = photo_and_mask(editor, session)
        return self._show(session, photo, automatic(photo, self.offered.config(checkpoint)), True, checkpoint)

    def clear_mask(self, editor, checkpoint, session):
        photo, _ = photo_and_mask(editor, session)
        shown = lookup(session, editor["background"])
        auto = shown.auto if shown else ChosenMask(np.zeros((photo.rgb.height, photo.rgb.width), np.float32), "given")
        return self._show(session, photo, auto, False, checkpoint)

    def on_change(self, editor, checkpoint, session):
        """An example put into the editor gets the automatic mask; any edit refreshes the encoder's view."""
        if not editor or editor.get("background") is None:
            return gr.skip(), None, gr.skip()
        config = self.offered.config(checkpoint)
        if lookup(session, editor["background"]) is not None:  # an image this visitor was shown (maybe a late event)
            photo, chosen = photo_and_mask(editor, session)
            return gr.skip(), preview(photo, chosen.mask if chosen else None, config), gr.skip()
        try:
            photo = editor["background"]
            return self._show(session, photo, automatic(photo, config), True, checkpoint)
        except gr.Error:
            return gr.skip(), None, gr.skip()

    # ------------------------------------------------------------------ generation

    def generate(self, editor, prompt, negative_prompt, text_guidance, object_guidance, steps, num_images, seed,
                 random_seed, size, quantization, checkpoint, interval_on=None, interval_low=None, interval_high=None,
                 embedded_guidance=None, session=None, progress=gr.Progress()):
        """The page's and the API's /generate: (gallery of (image, caption), settings used, seed).

        ``embedded_guidance``: FLUX.1-dev's distilled guidance g (None: the pipeline's 3.5); other models ignore it, as
        the page hides its slider for them.

        ``interval_on``: guidance only for noise levels in (``interval_low``, ``interval_high``] (True), at every
        step (False), or as the model's defaults say (None, what an API call that leaves it out gets)."""
        photo, chosen = photo_and_mask(editor, session)
        if chosen is None:  # nothing painted on a photo the server did not show (an example, an API call)
            committed = committed_mask(photo)
            chosen = ChosenMask(committed, "given") if committed is not None else None
        if random_seed or seed is None:
            seed = random.randrange(2**31)
        pipe = self.pipeline(checkpoint, quantization)
        config = self.offered.config(checkpoint)
        family = {"embedded_guidance": embedded_guidance} if embedded_guidance is not None and is_flux(config) else {}
        progress(0, desc="generating")
        try:
            out = pipe(
                prompt, object_image=as_image(photo), object_mask=chosen, negative_prompt=negative_prompt,
                text_guidance=text_guidance, object_guidance=object_guidance, num_images=num_images,
                num_inference_steps=steps, seed=seed, height=size, width=size, time_budget=self.time_budget,
                guidance_interval=None if interval_on is None else (interval_low, interval_high) if interval_on else "off",
                callback=lambda step, total: progress((step, total), desc="generating"), **family,
            )
        except EmptyMaskError as error:
            raise user_error(empty_mask_message(error)) from None
        except zeroft.InputError as error:
            raise user_error(self.offered.public(str(error))) from None
        except zeroft.ModelUnavailableError as error:  # the automatic masker's model, when nothing was painted
            raise user_error(self.offered.public(f"A model could not be loaded: {error}")) from None
        settings = json.loads(self.offered.public(json.dumps({"checkpoint": checkpoint, **out.settings.to_dict()})))
        gallery = [(image, f"seed {s} · text {text_guidance:g} · object {object_guidance:g} · {steps} steps")
                   for image, s in zip(out.images, out.seeds)]
        return gallery, settings, seed

    def run_example(self, editor, prompt, checkpoint, progress=gr.Progress()):
        """An example at the selected model's own settings."""
        config = self.offered.config(checkpoint)
        d = config.defaults if config else zeroft.GenerationDefaults()
        return self.generate(editor, prompt, negative_prompt=d.negative_prompt, text_guidance=d.text_guidance,
                             object_guidance=d.object_guidance, steps=d.steps, num_images=EXAMPLE_IMAGES, seed=0,
                             random_seed=False, size=d.height, quantization="none", checkpoint=checkpoint,
                             session=None, progress=progress)

    def gpu_seconds(self, editor, prompt, negative_prompt, text_guidance, object_guidance, steps, num_images, seed,
                    random_seed, size, quantization, checkpoint, interval_on=None, interval_low=None, interval_high=None,
                    embedded_guidance=None, session=None, progress=None) -> int:
        """The GPU time a ZeroGPU call asks for (its duration function, called with generate's arguments)."""
        config = self.offered.config(checkpoint)
        native = self.offered.native_size(checkpoint) or (config.defaults.height if config else 1024)
        try:
            steps, num_images, size = int(steps), int(num_images), int(size)
        except (TypeError, ValueError):  # generate refuses such a request at once
            return zerogpu.OVERHEAD_SECONDS
        return zerogpu.gpu_seconds(steps=steps, num_images=num_images, size=size,
                                   backbone=config.backbone if config else "sdxl", native_size=native)

    # ------------------------------------------------------------------ the rest of the page and the API

    def mask_api(self, photo: LoadedImage | None) -> Image.Image:
        """The automatic object mask of a photo (white = object)."""
        if photo is None:
            raise user_error("Upload a photo first.")
        config = self.offered.config(self.offered.names[0]) if self.offered.names else None
        matte = automatic(photo, config, allow_empty=False).mask
        return Image.fromarray((matte * 255).round().astype(np.uint8), "L")

    def size_slider(self, checkpoint):
        """The size slider for a model: its range on this machine, its default size."""
        low, high, step = self.offered.size_range(checkpoint) or SIZE_FALLBACK
        config = self.offered.config(checkpoint)
        default = config.defaults.height if config else high
        return gr.update(minimum=low, maximum=high, step=step, value=min(max(default, low), high))

    def model_view(self, checkpoint):
        """What follows the selected model: the toy demo's note, which examples show (toy or real photos), the
        model's own note (:func:`model_note`: its licence line, what the weights mean on FLUX.1) and the embedded
        guidance slider (FLUX.1 with a guidance embedding: FLUX.1-dev)."""
        toy = self.offered.is_toy(checkpoint)
        config = self.offered.config(checkpoint)
        text = model_note(config)
        return (gr.update(visible=toy), gr.update(visible=toy), gr.update(visible=not toy),
                gr.update(value=text, visible=bool(text)), gr.update(visible=is_flux(config)))
