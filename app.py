"""zeroft's Gradio app: one photo of an object + a prompt → new images of that object.

    python app.py [--checkpoint DIR_OR_ID] [--host 127.0.0.1] [--port 7860] [--share]

It opens on the best model the machine can run (app_inputs.default_checkpoint: --checkpoint, else
$ZEROFT_CHECKPOINT, else the real SDXL preset on a CUDA GPU, else the embedded toy model, which the
page then introduces as the CPU demo); the examples follow the selected model (toy objects, or real
photos with committed masks).

Layout lives in ``build_demo``; the handlers below turn the photo and the editor's mask layers
(app_editor.py) into one call into zeroft. The model loads on the first request (``import app``
loads no weights; on ZeroGPU it loads at start-up, app_zerogpu.py) and is shared by all users, one
generation at a time; each request carries its own photo and mask, and zeroft's caches are keyed
by content, so no request can see another's data.

Every image the app reads (the uploaded photo, mask layers, the /mask endpoint's photo) is the
file's own bytes decoded by ``zeroft.load_image``, as the CLI decodes it: gradio's own conversion
is bypassed, so 16-bit, palette and EXIF-rotated photos, bombs and broken files are handled one way
(app_inputs.py: the offered models, uploads and input components).
"""

from __future__ import annotations

import app_zerogpu  # first: on ZeroGPU, spaces must be imported before anything initialises CUDA

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
from app_editor import ADD, REMOVE, TINT, photo_and_mask, shown_digest, strokes, tinted  # noqa: F401
from app_inputs import (APP_DIR, CHECKPOINT_ENV, GPU_PRESETS, MAX_UPLOAD, REAL_DEFAULT, REAL_EXAMPLES, TOY_EXAMPLES, App,  # noqa: F401
                        CheckpointChoice, Checkpoints, Example, PhotoEditor, PhotoInput, PhotoUpload, SeedBox,
                        Setting, allowed_checkpoints, as_image, committed_mask, default_checkpoint, load_examples, user_error)
from zeroft.config import EncoderConfig, ZeroFTConfig
from zeroft.encoder import object_view
from zeroft.images import LoadedImage
from zeroft.validation import GUIDANCE_RANGE, NUM_IMAGES_RANGE, STEPS_RANGE

EXAMPLES = TOY_EXAMPLES  # the toy examples (the gradio_client example in README.md uses one)
EXAMPLE_FOLDERS = [str(TOY_EXAMPLES), str(REAL_EXAMPLES)]  # the folders launch() may serve files from
CACHE_CLEANUP = (1800, 7200)  # gradio's upload/result cache: every 30 min, delete files older than 2 h
PIPELINE = "pipeline"  # the one concurrency group of every event that runs the shared pipeline
TIME_BUDGET = 120.0  # seconds one request may take (its estimate, zeroft.validation.check_time_budget), so one
# user cannot hold the only worker for minutes; --time-budget changes it
SIZE_FALLBACK = (64, 1024, 64)  # size slider (smallest, largest, step) where no model's limits are known before loading
QUANTIZATION_CHOICES = ["none", "int8"] + (["bnb-8bit", "bnb-4bit"] if torch.cuda.is_available() else [])
TOY_NOTE = (
    "**This is the CPU demo.** The model selected, `zeroft-toy`, is a small model trained on coloured shapes "
    "(circles, squares and triangles, plain, striped or dotted) at 64 × 64 pixels. It understands photos of ONE "
    "such object on a plain background, like the examples below; a photo of a real object (your dog, a mug) "
    "comes back as coloured shapes. Real photos need a GPU and one of the real presets ("
    + ", ".join(f"`{name}`" for name in GPU_PRESETS) + f"): on a CUDA machine `python app.py` opens on "
    f"`{REAL_DEFAULT}`."
)


# ---------------------------------------------------------------------------------------------- handlers


@functools.lru_cache(maxsize=4)
def _masker(spec: str) -> zeroft.Masker:
    """One masker per spec for the whole app: a rembg masker loads its ONNX session once, not per upload."""
    return zeroft.Masker(spec)


_automatic_masks = zeroft.cache.LRUCache(64)  # (photo digest, masker spec) -> mask, shared by uploads, buttons, /mask


def _automatic(photo: LoadedImage, config: ZeroFTConfig | None) -> np.ndarray:
    """The photo's automatic mask; an example photo's is its committed mask (no masker model needed)."""
    committed = committed_mask(photo)
    if committed is not None:
        return committed
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
    model_view: Callable
    gpu_seconds: Callable


def make_handlers(offered: Checkpoints, time_budget: float = TIME_BUDGET, loaded: dict | None = None) -> Handlers:
    """The handlers of the app that offers ``offered``; a request estimated over ``time_budget`` seconds is refused.

    ``loaded``: pipelines loaded at start-up, by model name (ZeroGPU's default), used as they are when
    a request asks for that model unquantized.
    """

    def pipeline(name: str, quantization: str):
        if loaded and name in loaded and quantization == "none":
            return loaded[name]
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
        if mask is None:  # nothing painted and no session (an example, an API call): an example's committed mask
            mask = committed_mask(photo)
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

    def model_view(checkpoint):
        """What follows the selected model: the toy demo's note, and which examples show (toy or real photos)."""
        toy = offered.is_toy(checkpoint)
        return gr.update(visible=toy), gr.update(visible=toy), gr.update(visible=not toy)

    def gpu_seconds(editor, prompt, negative_prompt, text_guidance, object_guidance, steps, num_images, seed,
                    random_seed, size, quantization, checkpoint, session=None, progress=None) -> int:
        """The GPU time a ZeroGPU call asks for (its duration function, called with generate's arguments)."""
        config = offered.config(checkpoint)
        native = offered.native_size(checkpoint) or (config.defaults.height if config else 1024)
        try:
            steps, num_images, size = int(steps), int(num_images), int(size)
        except (TypeError, ValueError):  # generate refuses such a request at once
            return app_zerogpu.OVERHEAD_SECONDS
        return app_zerogpu.gpu_seconds(steps=steps, num_images=num_images, size=size,
                                       backbone=config.backbone if config else "sdxl", native_size=native)

    return Handlers(app_zerogpu.gpu(generate, gpu_seconds), automatic_mask, clear_mask, on_change, on_upload, display,
                    size_slider, mask_api, model_view, gpu_seconds)


# ---------------------------------------------------------------------------------------------- layout


def build_demo(handlers: Handlers, checkpoints: Checkpoints, examples: list[Example] | None = None,
               real_examples: list[Example] | None = None) -> gr.Blocks:
    """The app's layout; every model call goes through the handler functions passed in.

    ``examples`` (toy objects) show while a toy-scale model is selected, with the note that this is the
    CPU demo; ``real_examples`` (photos) show for the others.
    """
    default = checkpoints.names[0] if checkpoints.names else ""
    toy = checkpoints.is_toy(default) if default else True
    first = (examples if toy else real_examples) or examples or real_examples or []
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
        note = gr.Markdown(TOY_NOTE, visible=toy, elem_id="toy-note")
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
                prompt = gr.Textbox(label="Prompt", value=(first[0].prompt if first else ""), lines=2,
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

        def run_example(example_editor, example_prompt, name, progress=gr.Progress()):
            """An example at the selected model's own settings."""
            config = checkpoints.config(name)
            e = config.defaults if config else zeroft.GenerationDefaults()
            return h.generate(example_editor, example_prompt, e.negative_prompt, e.text_guidance, e.object_guidance,
                              e.steps, 2, 0, False, e.height, "none", name, None, progress)

        boxes = []
        for rows, visible, api_name in ((examples, toy, "run_example"), (real_examples, not toy, "run_real_example")):
            with gr.Column(visible=visible) as box:
                if rows:
                    shown = gr.Examples([[e.image, e.prompt] for e in rows], [editor, prompt], api_visibility="private",
                                        label="Examples" if rows is examples else "Example photos")
                    # run on click, in the pipeline's concurrency group (gr.Examples' run_on_click has a group of its own)
                    shown.load_input_event.then(run_example, [editor, prompt, checkpoint], [gallery, used, seed],
                                                api_name=api_name, api_visibility="undocumented",
                                                concurrency_id=PIPELINE, concurrency_limit=1)
            boxes.append(box)
        gr.on([demo.load, checkpoint.change], h.model_view, checkpoint, [note, *boxes], show_progress="hidden",
              api_visibility="private")
    return demo


def create_app(checkpoint: str | None = None, time_budget: float = TIME_BUDGET) -> gr.Blocks:
    """The app on ``checkpoint``, else on app_inputs.default_checkpoint's choice (the real default where a GPU is).

    On ZeroGPU the default model is loaded, to ``cuda``, now (app_zerogpu); elsewhere on the first request.
    """
    offered = Checkpoints(default_checkpoint(checkpoint))
    default = offered.names[0]
    pipe = app_zerogpu.preload(lambda: zeroft.get_pipeline(offered.where(default), device="cuda",
                                                           dtype=app_zerogpu.ZEROGPU_DTYPE))
    handlers = make_handlers(offered, time_budget, loaded={default: pipe} if pipe is not None else None)
    demo = build_demo(handlers, checkpoints=offered, examples=load_examples(TOY_EXAMPLES),
                      real_examples=load_examples(REAL_EXAMPLES))
    demo.queue(max_size=16, default_concurrency_limit=1)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="zeroft's Gradio app")
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint folder, Hub id or preset (default: ${CHECKPOINT_ENV}, else {REAL_DEFAULT} on a "
                        "CUDA GPU, else the embedded toy model)")
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
                                       max_file_size=MAX_UPLOAD, allowed_paths=EXAMPLE_FOLDERS)


if __name__ == "__main__":
    main()
