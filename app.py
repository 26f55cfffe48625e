"""zeroft's Gradio app: one photo of an object + a prompt → new images of that object.

    python app.py [--checkpoint DIR_OR_ID] [--host 127.0.0.1] [--port 7860] [--share]

Layout lives in ``build_demo``; the handlers below turn the photo and the editor's mask layers
into one call into zeroft. The model loads on the first request (``import app`` loads no weights)
and is shared by all users, one generation at a time; each request carries its own photo and
mask, and zeroft's caches are keyed by content, so no request can see another's data.

Every image the app reads (the uploaded photo, mask layers, the /mask endpoint's photo) is the
file's own bytes decoded by ``zeroft.load_image``, as the CLI decodes it: gradio's own conversion
is bypassed, so 16-bit, palette and EXIF-rotated photos, bombs and broken files are handled one way
(app_inputs.py: the offered models, uploads and input components).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch
from PIL import Image

import zeroft
from app_inputs import (APP_DIR, MAX_UPLOAD, App, CheckpointChoice, Checkpoints, PhotoEditor, PhotoInput,  # noqa: F401
                        PhotoUpload, SeedBox, Setting, allowed_checkpoints, as_image, user_error)
from zeroft.config import EncoderConfig, ZeroFTConfig
from zeroft.encoder import object_view
from zeroft.images import LoadedImage
from zeroft.masking import fit_mask
from zeroft.validation import GUIDANCE_RANGE, NUM_IMAGES_RANGE, STEPS_RANGE

try:  # on Hugging Face Spaces (ZeroGPU) this requests a GPU per call; elsewhere spaces.GPU(f) is f
    import spaces

    gpu = spaces.GPU
except ImportError:  # spaces is optional off Spaces
    def gpu(function):
        return function

EXAMPLES = APP_DIR / "assets" / "examples"
CACHE_CLEANUP = (1800, 7200)  # gradio's upload/result cache: every 30 min, delete files older than 2 h
PIPELINE = "pipeline"  # the one concurrency group of every event that runs the shared pipeline
TIME_BUDGET = 120.0  # seconds one request may take (its estimate, zeroft.validation.check_time_budget), so one
# user cannot hold the only worker for minutes; --time-budget changes it
SIZE_FALLBACK = (64, 1024, 64)  # size slider (smallest, largest, step) where no model's limits are known before loading
QUANTIZATION_CHOICES = ["none", "int8"] + (["bnb-8bit", "bnb-4bit"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------- editor glue
#
# The editor shows the photo with the automatic mask tinted pink on it. Strokes on its layer
# edit that mask: the pink brush adds, the dark brush removes, the eraser takes strokes back.
# (gradio 6.31's editor stores layers set from Python but does not draw them, hence the tint
# on the background instead of a mask layer.) The decoded photo and the automatic mask stay
# in the session's state; API calls, which have no state, send the plain photo and optional
# stroke layers, and get the automatic mask when they paint nothing.

ADD = (255, 0, 200)  # brush colour that marks the object
REMOVE = (40, 40, 40)  # brush colour that marks background
TINT = 0.45  # opacity of the automatic mask's pink on the photo


def tinted(photo: Image.Image, mask: np.ndarray) -> Image.Image:
    rgba = np.asarray(photo.convert("RGBA"), dtype=np.float32)
    weight = (TINT * mask)[..., None]
    rgba[..., :3] = rgba[..., :3] * (1 - weight) + np.array(ADD, np.float32) * weight
    return Image.fromarray(rgba.round().astype(np.uint8), "RGBA")


def strokes(layers: list[LoadedImage], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(added, removed) masks in [0, 1] painted on the layers, fitted to the photo by zeroft's rule.

    Raises:
        gr.Error: a layer whose aspect ratio differs from the photo's (zeroft.masking.fit_mask).
    """
    added = np.zeros((size[1], size[0]), np.float32)
    removed = np.zeros_like(added)
    for layer in layers:
        rgb = np.asarray(layer.rgb, dtype=np.float32) / 255.0
        opacity = np.ones(rgb.shape[:2], np.float32) if layer.alpha is None else layer.alpha
        alpha = np.clip(opacity / 0.6, 0, 1)  # the brushes paint at 60 % opacity
        is_add = rgb[..., 0] > 0.5
        try:
            added = np.maximum(added, fit_mask(np.where(is_add, alpha, 0), size))
            removed = np.maximum(removed, fit_mask(np.where(is_add, 0, alpha), size))
        except zeroft.InputError as error:
            raise user_error(str(error)) from None
    return added, removed


def shown_digest(background: Image.Image | LoadedImage) -> str:
    """Identifies the (opaque) image the editor shows, whether built here or read back from the browser."""
    rgb = background.rgb if isinstance(background, LoadedImage) else background.convert("RGB")
    return zeroft.cache.image_digest(rgb)


def photo_and_mask(editor: dict | None, session: dict | None = None) -> tuple[LoadedImage, np.ndarray | None]:
    """The photo and the mask to encode; mask None means 'the photo's alpha, else automatic' (nothing painted, no session)."""
    if not editor or editor.get("background") is None:
        raise user_error("Upload a photo first.")
    shown = editor["background"]
    if session and session.get("shown") == shown_digest(shown):
        photo, base = session["photo"], session["auto"] if session["use_auto"] else None
    else:
        photo, base = shown, None
    layers = editor.get("layers") or []
    if base is None and not layers:
        return photo, None
    added, removed = strokes(layers, photo.rgb.size)
    mask = added if base is None else np.maximum(base, added)
    return photo, mask * (1 - removed)


# ---------------------------------------------------------------------------------------------- handlers


@functools.lru_cache(maxsize=4)
def _masker(spec: str) -> zeroft.Masker:
    """One masker per spec for the whole app: a rembg masker loads its ONNX session once, not per upload."""
    return zeroft.Masker(spec)


_automatic_masks = zeroft.cache.LRUCache(64)  # (photo digest, masker spec) -> mask, shared by uploads, buttons, /mask


def _automatic(photo: LoadedImage, config: ZeroFTConfig | None) -> np.ndarray:
    try:
        masker = _masker(config.masker if config else zeroft.masking.DEFAULT_MASKER)
        return zeroft.choose_mask(photo, masker=masker, cache=_automatic_masks)
    except zeroft.InputError as error:
        raise user_error(str(error)) from None
    except zeroft.ModelUnavailableError as error:
        raise user_error(f"The automatic mask is unavailable: {error} Paint the mask with the brush instead.") from None


def _preview(photo: LoadedImage, mask: np.ndarray | None, config: ZeroFTConfig | None):
    if mask is None or float((mask >= 0.5).mean()) < zeroft.masking.MIN_MASK_AREA:
        return None
    return object_view(photo.rgb, mask, config.encoder if config else EncoderConfig())


@dataclass(frozen=True)
class Handlers:
    """The functions behind the UI and the API; a test builds the layout alone with stubs."""

    generate: Callable
    automatic_mask: Callable
    clear_mask: Callable
    on_change: Callable
    on_upload: Callable
    display: Callable
    size_slider: Callable
    mask_api: Callable


def make_handlers(offered: Checkpoints, time_budget: float = TIME_BUDGET) -> Handlers:
    """The handlers of the app that offers ``offered``; a request estimated over ``time_budget`` seconds is refused."""

    def pipeline(name: str, quantization: str):
        try:
            return zeroft.get_pipeline(offered.where(name), quantization=quantization)
        except zeroft.InputError as error:
            raise user_error(offered.public(str(error))) from None
        except zeroft.ModelUnavailableError as error:
            raise user_error(offered.public(f"The model could not be loaded: {error}")) from None

    def remember(photo: LoadedImage, auto, use_auto) -> dict:
        """The session: the decoded photo, its automatic mask, and the image the editor shows for it."""
        background = tinted(photo.rgb, auto) if use_auto else photo.rgb.convert("RGBA")
        return {"photo": photo, "auto": auto, "use_auto": use_auto, "background": background,
                "shown": shown_digest(background)}

    def display(session: dict, checkpoint):
        """The editor's value (the strokes cleared by a blank layer) and the encoder's view for a session."""
        photo = session["photo"]
        blank = Image.new("RGBA", photo.rgb.size, (0, 0, 0, 0))
        value = {"background": session["background"], "layers": [blank], "composite": None}
        return value, _preview(photo, session["auto"] if session["use_auto"] else None, offered.config(checkpoint))

    def show(photo: LoadedImage, auto, use_auto, checkpoint):
        session = remember(photo, auto, use_auto)
        return *display(session, checkpoint), session

    def on_upload(photo: LoadedImage | None, checkpoint):
        """A new photo, decoded on the server as the CLI decodes it, with its automatic mask. Its only output is
        the (invisible) session, so a bad file shows its one message and no error badge on the editor."""
        if photo is None:
            return gr.skip()
        return remember(photo, _automatic(photo, offered.config(checkpoint)), True)

    def automatic_mask(editor, checkpoint, session):
        photo, _ = photo_and_mask(editor, session)
        return show(photo, _automatic(photo, offered.config(checkpoint)), True, checkpoint)

    def clear_mask(editor, checkpoint, session):
        photo, _ = photo_and_mask(editor, session)
        auto = session["auto"] if session else np.zeros((photo.rgb.height, photo.rgb.width), np.float32)
        return show(photo, auto, False, checkpoint)

    def on_change(editor, checkpoint, session):
        """An example put into the editor gets the automatic mask; any edit refreshes the encoder's view."""
        if not editor or editor.get("background") is None:
            return gr.skip(), None, None
        if session and session.get("shown") == shown_digest(editor["background"]):
            photo, mask = photo_and_mask(editor, session)
            return gr.skip(), _preview(photo, mask, offered.config(checkpoint)), session
        try:
            photo = editor["background"]
            return show(photo, _automatic(photo, offered.config(checkpoint)), True, checkpoint)
        except gr.Error:
            return gr.skip(), None, None

    def generate(editor, prompt, negative_prompt, text_guidance, object_guidance, steps, num_images, seed,
                 random_seed, size, quantization, checkpoint, session=None, progress=gr.Progress()):
        photo, mask = photo_and_mask(editor, session)
        if random_seed or seed is None:
            seed = random.randrange(2**31)
        pipe = pipeline(checkpoint, quantization)
        progress(0, desc="generating")
        try:
            out = pipe(
                prompt, object_image=as_image(photo), object_mask=mask, negative_prompt=negative_prompt,
                text_guidance=text_guidance, object_guidance=object_guidance, num_images=num_images,
                num_inference_steps=steps, seed=seed, height=size, width=size, time_budget=time_budget,
                callback=lambda step, total: progress((step, total), desc="generating"),
            )
        except zeroft.InputError as error:
            raise user_error(offered.public(str(error))) from None
        except zeroft.ModelUnavailableError as error:  # the automatic masker's model, when nothing was painted
            raise user_error(offered.public(f"A model could not be loaded: {error}")) from None
        settings = json.loads(offered.public(json.dumps({"checkpoint": checkpoint, **out.settings.to_dict()})))
        gallery = [(image, f"seed {s} · text {text_guidance:g} · object {object_guidance:g} · {steps} steps")
                   for image, s in zip(out.images, out.seeds)]
        return gallery, settings, seed

    def mask_api(photo: LoadedImage | None) -> Image.Image:
        """The automatic object mask of a photo (white = object)."""
        if photo is None:
            raise user_error("Upload a photo first.")
        matte = _automatic(photo, offered.config(offered.names[0]) if offered.names else None)
        try:
            matte = zeroft.prepare_mask(matte, photo.rgb.size)
        except zeroft.InputError as error:
            raise user_error(str(error)) from None
        return Image.fromarray((matte * 255).round().astype(np.uint8), "L")

    def size_slider(checkpoint):
        """The size slider for a model: its range on this machine, its default size."""
        low, high, step = offered.size_range(checkpoint) or SIZE_FALLBACK
        config = offered.config(checkpoint)
        default = config.defaults.height if config else high
        return gr.update(minimum=low, maximum=high, step=step, value=min(max(default, low), high))

    return Handlers(gpu(generate), automatic_mask, clear_mask, on_change, on_upload, display, size_slider, mask_api)


# ---------------------------------------------------------------------------------------------- layout


def build_demo(handlers: Handlers, checkpoints: Checkpoints, examples: list[list] | None = None) -> gr.Blocks:
    """The app's layout; every model call goes through the handler functions passed in."""
    default = checkpoints.names[0] if checkpoints.names else ""
    config = checkpoints.config(default)
    d = config.defaults if config else zeroft.GenerationDefaults()
    # the size slider spans every offered model's range (API calls are checked by the library, per model);
    # a page narrows it to the selected model's range on load and on every change of model
    ranges = [r for r in map(checkpoints.size_range, checkpoints.names) if r] or [SIZE_FALLBACK]
    size_low, size_high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    with App(title="zeroft", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown("# zeroft\nOne photo of an object + a prompt → new images of that same object, "
                    "with no fine-tuning. Upload a photo: the automatic object mask is tinted pink. "
                    "Edit it with the brush: pink adds to the object, dark marks background, the eraser takes strokes back.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = PhotoUpload("Upload a photo", file_types=["image"], variant="primary", size="sm", elem_id="upload")
                editor = PhotoEditor(label="Photo and object mask", type="pil", image_mode="RGBA", sources=[],
                                     format="png", elem_id="photo",
                                     brush=gr.Brush(colors=[("#ff00c8", 0.6), ("#282828", 0.6)], default_color=("#ff00c8", 0.6),
                                                    color_mode="fixed"),
                                     height=420)
                with gr.Row():
                    auto_button = gr.Button("Automatic mask", size="sm", elem_id="auto-mask")
                    clear_button = gr.Button("Clear mask", size="sm", elem_id="clear-mask")
                masked = gr.Image(label="What the encoder sees", interactive=False, height=160, elem_id="preview")
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value=(examples[0][1] if examples else ""), lines=2,
                                    max_length=zeroft.validation.MAX_PROMPT_CHARS, elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", value=d.negative_prompt, elem_id="negative")
                text_guidance = Setting(*GUIDANCE_RANGE, value=d.text_guidance, step=0.5, label="Text guidance",
                                        info="How strongly to follow the prompt.", elem_id="text-guidance")
                object_guidance = Setting(*GUIDANCE_RANGE, value=d.object_guidance, step=0.5, label="Object guidance",
                                          info="How strongly to keep the object; lower follows the text more, 0 ignores the photo.",
                                          elem_id="object-guidance")
                with gr.Row():
                    steps = Setting(*STEPS_RANGE, value=d.steps, step=1, label="Steps", elem_id="steps")
                    num_images = Setting(*NUM_IMAGES_RANGE, value=2, step=1, label="Images", elem_id="num-images")
                with gr.Row():
                    seed = SeedBox(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    random_seed = gr.Checkbox(value=True, label="Random seed", elem_id="random-seed")
                with gr.Accordion("Advanced", open=False):
                    size = Setting(size_low, size_high, value=min(max(d.height, size_low), size_high),
                                   step=min(r[2] for r in ranges), label="Size (pixels)", elem_id="size")
                    quantization = gr.Dropdown(QUANTIZATION_CHOICES, value="none", label="Quantization",
                                               info="int8 shrinks weights ~3.7x (CPU or GPU); bnb modes need a CUDA GPU.")
                    checkpoint = CheckpointChoice(checkpoints.names, value=default, label="Model", elem_id="checkpoint")
                    checkpoint.offered = checkpoints
                run = gr.Button("Generate", variant="primary", elem_id="generate")
        gallery = gr.Gallery(label="Results", columns=4, height=300, format="png", buttons=["download", "fullscreen"], elem_id="gallery")
        used = gr.JSON(label="Settings used", elem_id="settings")

        inputs = [editor, prompt, negative, text_guidance, object_guidance, steps, num_images, seed, random_seed,
                  size, quantization, checkpoint]
        session = gr.State(None)  # this user's decoded photo and automatic mask
        h = handlers
        upload.upload(h.on_upload, [upload, checkpoint], session, show_progress="hidden", api_visibility="private").success(
            h.display, [session, checkpoint], [editor, masked], show_progress="hidden", api_visibility="private")
        auto_button.click(h.automatic_mask, [editor, checkpoint, session], [editor, masked, session], api_visibility="private")
        clear_button.click(h.clear_mask, [editor, checkpoint, session], [editor, masked, session], api_visibility="private")
        editor.change(h.on_change, [editor, checkpoint, session], [editor, masked, session], show_progress="hidden",
                      trigger_mode="always_last", api_visibility="private")
        gr.on([demo.load, checkpoint.change], h.size_slider, checkpoint, size, show_progress="hidden",
              api_visibility="private")
        run.click(h.generate, inputs + [session], [gallery, used, seed], api_name="generate", concurrency_id=PIPELINE,
                  concurrency_limit=1)
        with gr.Row(visible=False):  # the /mask API endpoint: photo in, mask out
            mask_photo = PhotoInput(type="pil", image_mode="RGBA", label="photo")
            mask_result = gr.Image(type="pil", format="png", label="mask")
            mask_button = gr.Button("mask")
        mask_button.click(h.mask_api, mask_photo, mask_result, api_name="mask", concurrency_limit=2)
        if examples:
            def run_example(example_editor, example_prompt, progress=gr.Progress()):
                return h.generate(example_editor, example_prompt, d.negative_prompt, d.text_guidance, d.object_guidance,
                                d.steps, 2, 0, False, d.height, "none", default, None, progress)

            shown = gr.Examples(examples, [editor, prompt], api_visibility="private")
            # run on click, in the pipeline's concurrency group (gr.Examples' own run_on_click has a group of its own)
            shown.load_input_event.then(run_example, [editor, prompt], [gallery, used, seed], api_name="run_example",
                                        api_visibility="undocumented", concurrency_id=PIPELINE, concurrency_limit=1)
    return demo


def load_examples() -> list[list]:
    listing = EXAMPLES / "examples.json"
    if not listing.is_file():
        return []
    return [[str(EXAMPLES / e["image"]), e["prompt"]] for e in json.loads(listing.read_text())]


def create_app(checkpoint: str | None = None, time_budget: float = TIME_BUDGET) -> gr.Blocks:
    offered = Checkpoints(checkpoint)
    demo = build_demo(make_handlers(offered, time_budget), checkpoints=offered, examples=load_examples())
    demo.queue(max_size=16, default_concurrency_limit=1)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="zeroft's Gradio app")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder, Hub id or preset (default: embedded)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--time-budget", type=float, default=TIME_BUDGET, metavar="SECONDS",
                        help=f"refuse a request estimated to take longer (default {TIME_BUDGET:g})")
    args = parser.parse_args(argv)
    if not args.time_budget > 0:
        parser.error("--time-budget must be a positive number of seconds")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    create_app(args.checkpoint, args.time_budget).launch(server_name=args.host, server_port=args.port, share=args.share,
                                       max_file_size=MAX_UPLOAD, allowed_paths=[str(EXAMPLES)])


if __name__ == "__main__":
    main()
