"""zeroft's Gradio app: one photo of an object + a prompt → new images of that object.

    python app.py [--checkpoint DIR_OR_ID] [--host 127.0.0.1] [--port 7860] [--share]

Layout lives in ``build_demo``; the handlers below turn the editor's photo and mask layers into
one call into zeroft. The model loads on the first request (``import app`` loads no weights)
and is shared by all users; each request carries its own photo and mask, and zeroft's caches
are keyed by content, so no request can see another's data.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import zeroft
from zeroft.config import EncoderConfig, ZeroFTConfig
from zeroft.encoder import object_view
from zeroft.presets import EMBEDDED_CHECKPOINT
from zeroft.validation import GUIDANCE_RANGE, NUM_IMAGES_RANGE, STEPS_RANGE

try:  # on Hugging Face Spaces (ZeroGPU) this requests a GPU per call; elsewhere spaces.GPU(f) is f
    import spaces

    gpu = spaces.GPU
except ImportError:  # spaces is optional off Spaces
    def gpu(function):
        return function

ASSETS = Path(__file__).resolve().parent / "assets"
EXAMPLES = ASSETS / "examples"
MAX_UPLOAD = "20mb"
QUANTIZATION_CHOICES = ["none", "int8"] + (["bnb-8bit", "bnb-4bit"] if torch.cuda.is_available() else [])


def allowed_checkpoints(extra: str | None = None) -> list[str]:
    """The checkpoint selector's allow-list: the embedded model, the operator's, and GPU presets."""
    choices = [str(EMBEDDED_CHECKPOINT)] if EMBEDDED_CHECKPOINT.is_dir() else []
    if extra and extra not in choices:
        choices.insert(0, extra)
    if torch.cuda.is_available() and os.environ.get("HF_HUB_OFFLINE") != "1":
        choices.append("ip-adapter-sd15")
    return choices


def checkpoint_config(name: str) -> ZeroFTConfig | None:
    """A local checkpoint's config without loading weights (None for Hub checkpoints not yet loaded)."""
    path = Path(name)
    return ZeroFTConfig.load(path) if (path / zeroft.config.CONFIG_NAME).is_file() else None


# ---------------------------------------------------------------------------------------------- editor glue
#
# The editor shows the photo with the automatic mask tinted pink on it. Strokes on its layer
# edit that mask: the pink brush adds, the dark brush removes, the eraser takes strokes back.
# (gradio 6.31's editor stores layers set from Python but does not draw them, hence the tint
# on the background instead of a mask layer.) The untinted photo and the automatic mask stay
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


def strokes(editor: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(added, removed) masks in [0, 1] painted on the editor's layers."""
    added = np.zeros((size[1], size[0]), np.float32)
    removed = np.zeros_like(added)
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        rgba = np.asarray(layer.convert("RGBA").resize(size), dtype=np.float32) / 255.0
        alpha = np.clip(rgba[..., 3] / 0.6, 0, 1)  # the brushes paint at 60 % opacity
        is_add = rgba[..., 0] > 0.5
        added = np.maximum(added, np.where(is_add, alpha, 0))
        removed = np.maximum(removed, np.where(is_add, 0, alpha))
    return added, removed


def photo_and_mask(editor: dict | None, session: dict | None = None) -> tuple[Image.Image, np.ndarray | None]:
    """The photo and the mask to encode; mask None means 'automatic' (nothing painted, no session)."""
    if not editor or editor.get("background") is None:
        raise gr.Error("Upload a photo first.")
    shown = editor["background"]
    if session and session.get("shown") == zeroft.cache.image_digest(shown):
        photo, base = session["photo"], session["auto"] if session["use_auto"] else None
    else:
        photo, base = shown, None
    layers = [layer for layer in editor.get("layers") or [] if layer is not None]
    if base is None and not layers:
        return photo, None
    added, removed = strokes(editor, photo.size)
    mask = added if base is None else np.maximum(base, added)
    return photo, mask * (1 - removed)


class PlainUploadErrors:
    """Mixin for image components: an unreadable upload is reported in plain words, not a stack trace."""

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise gr.Error("The photo could not be read: it is not an image file (PNG, JPEG, WebP, ...) or it is damaged.") from None


class PhotoEditor(PlainUploadErrors, gr.ImageEditor):
    def get_block_name(self) -> str:
        return "imageeditor"  # the browser renders gradio's own editor


class PhotoInput(PlainUploadErrors, gr.Image):
    def get_block_name(self) -> str:
        return "image"


# ---------------------------------------------------------------------------------------------- handlers


def _pipeline(checkpoint: str, quantization: str, allowed: list[str]):
    if checkpoint not in allowed:
        raise gr.Error("That checkpoint is not offered by this app.")
    try:
        return zeroft.get_pipeline(checkpoint, quantization=quantization)
    except zeroft.InputError as error:
        raise gr.Error(str(error)) from None
    except zeroft.ModelUnavailableError as error:
        raise gr.Error(f"The model could not be loaded: {error}") from None


def _automatic(photo: Image.Image, checkpoint: str) -> np.ndarray:
    config = checkpoint_config(checkpoint)
    try:
        masker = zeroft.Masker(config.masker if config else zeroft.masking.DEFAULT_MASKER)
        return zeroft.choose_mask(zeroft.load_image(photo), masker=masker)
    except zeroft.InputError as error:
        raise gr.Error(str(error)) from None
    except zeroft.ModelUnavailableError as error:
        raise gr.Error(f"The automatic mask is unavailable: {error} Paint the mask with the brush instead.") from None


def _preview(photo: Image.Image, mask: np.ndarray | None, checkpoint: str):
    if mask is None or float((mask >= 0.5).mean()) < zeroft.masking.MIN_MASK_AREA:
        return None
    config = checkpoint_config(checkpoint)
    return object_view(photo.convert("RGB"), mask, config.encoder if config else EncoderConfig())


def make_handlers(allowed: list[str]):
    """The functions behind the UI and the API: generate, automatic_mask, clear_mask, on_change, mask_api."""

    def show(photo, auto, use_auto, checkpoint):
        background = tinted(photo, auto) if use_auto else photo.convert("RGBA")
        session = {"photo": photo, "auto": auto, "use_auto": use_auto, "shown": zeroft.cache.image_digest(background)}
        blank = Image.new("RGBA", photo.size, (0, 0, 0, 0))  # replaces (clears) any strokes
        value = {"background": background, "layers": [blank], "composite": None}
        return value, _preview(photo, auto if use_auto else None, checkpoint), session

    def automatic_mask(editor, checkpoint, session):
        photo, _ = photo_and_mask(editor, session)
        return show(photo, _automatic(photo, checkpoint), True, checkpoint)

    def clear_mask(editor, checkpoint, session):
        photo, _ = photo_and_mask(editor, session)
        auto = session["auto"] if session else np.zeros((photo.height, photo.width), np.float32)
        return show(photo, auto, False, checkpoint)

    def on_change(editor, checkpoint, session):
        """A new photo gets the automatic mask; any edit refreshes the preview of the encoder's view."""
        if not editor or editor.get("background") is None:
            return gr.skip(), None, None
        if session and session.get("shown") == zeroft.cache.image_digest(editor["background"]):
            photo, mask = photo_and_mask(editor, session)
            return gr.skip(), _preview(photo, mask, checkpoint), session
        try:
            return show(editor["background"], _automatic(editor["background"], checkpoint), True, checkpoint)
        except gr.Error:
            return gr.skip(), None, None

    def generate(editor, prompt, negative_prompt, text_guidance, object_guidance, steps, num_images, seed,
                 random_seed, size, quantization, checkpoint, session=None, progress=gr.Progress()):
        photo, mask = photo_and_mask(editor, session)
        if random_seed or seed is None:
            seed = random.randrange(2**31)
        pipe = _pipeline(checkpoint, quantization, allowed)
        progress(0, desc="generating")
        try:
            out = pipe(
                prompt, object_image=photo, object_mask=mask, negative_prompt=negative_prompt,
                text_guidance=text_guidance, object_guidance=object_guidance, num_images=num_images,
                num_inference_steps=steps, seed=seed, height=size, width=size,
                callback=lambda step, total: progress((step, total), desc="generating"),
            )
        except zeroft.InputError as error:
            raise gr.Error(str(error)) from None
        settings = {"checkpoint": Path(checkpoint).name, **out.settings.to_dict()}
        gallery = [(image, f"seed {s} · text {text_guidance:g} · object {object_guidance:g} · {steps} steps")
                   for image, s in zip(out.images, out.seeds)]
        return gallery, settings, seed

    def mask_api(photo: Image.Image | None) -> Image.Image:
        """The automatic object mask of a photo (white = object)."""
        if photo is None:
            raise gr.Error("Upload a photo first.")
        matte = _automatic(photo, allowed[0] if allowed else "")
        try:
            matte = zeroft.prepare_mask(matte, photo.size)
        except zeroft.InputError as error:
            raise gr.Error(str(error)) from None
        return Image.fromarray((matte * 255).round().astype(np.uint8), "L")

    return gpu(generate), automatic_mask, clear_mask, on_change, mask_api


# ---------------------------------------------------------------------------------------------- layout


def build_demo(generate, automatic_mask, clear_mask, on_change, mask_api, checkpoints: list[str],
               examples: list[list] | None = None) -> gr.Blocks:
    """The app's layout; every model call goes through the handler functions passed in."""
    default = checkpoints[0] if checkpoints else ""
    config = checkpoint_config(default) if default else None
    d = config.defaults if config else zeroft.GenerationDefaults()
    with gr.Blocks(title="zeroft") as demo:
        gr.Markdown("# zeroft\nOne photo of an object + a prompt → new images of that same object, "
                    "with no fine-tuning. Upload a photo: the automatic object mask is tinted pink. "
                    "Edit it with the brush: pink adds to the object, dark marks background, the eraser takes strokes back.")
        with gr.Row():
            with gr.Column(scale=1):
                editor = PhotoEditor(label="Photo and object mask", type="pil", image_mode="RGBA",
                                     sources=("upload", "clipboard"), format="png", elem_id="photo",
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
                text_guidance = gr.Slider(*GUIDANCE_RANGE, value=d.text_guidance, step=0.5, label="Text guidance",
                                          info="How strongly to follow the prompt.", elem_id="text-guidance")
                object_guidance = gr.Slider(*GUIDANCE_RANGE, value=d.object_guidance, step=0.5, label="Object guidance",
                                            info="How strongly to keep the object; lower follows the text more, 0 ignores the photo.",
                                            elem_id="object-guidance")
                with gr.Row():
                    steps = gr.Slider(*STEPS_RANGE, value=d.steps, step=1, label="Steps", elem_id="steps")
                    num_images = gr.Slider(*NUM_IMAGES_RANGE, value=2, step=1, label="Images", elem_id="num-images")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    random_seed = gr.Checkbox(value=True, label="Random seed", elem_id="random-seed")
                with gr.Accordion("Advanced", open=False):
                    size = gr.Slider(64, 1024, value=d.height, step=64, label="Size (pixels)", elem_id="size")
                    quantization = gr.Dropdown(QUANTIZATION_CHOICES, value="none", label="Quantization",
                                               info="int8 shrinks weights ~3.7x (CPU or GPU); bnb modes need a CUDA GPU.")
                    checkpoint = gr.Dropdown(checkpoints, value=default, label="Model", allow_custom_value=False,
                                             elem_id="checkpoint")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
        gallery = gr.Gallery(label="Results", columns=4, height=300, format="png", buttons=["download", "fullscreen"], elem_id="gallery")
        used = gr.JSON(label="Settings used", elem_id="settings")

        inputs = [editor, prompt, negative, text_guidance, object_guidance, steps, num_images, seed, random_seed,
                  size, quantization, checkpoint]
        session = gr.State(None)  # this user's untinted photo and automatic mask
        auto_button.click(automatic_mask, [editor, checkpoint, session], [editor, masked, session], api_visibility="private")
        clear_button.click(clear_mask, [editor, checkpoint, session], [editor, masked, session], api_visibility="private")
        gr.on([editor.upload, editor.change], on_change, [editor, checkpoint, session], [editor, masked, session],
              show_progress="hidden", trigger_mode="always_last", api_visibility="private")
        run.click(generate, inputs + [session], [gallery, used, seed], api_name="generate", concurrency_limit=1)
        with gr.Row(visible=False):  # the /mask API endpoint: photo in, mask out
            mask_photo = PhotoInput(type="pil", image_mode="RGBA", label="photo")
            mask_result = gr.Image(type="pil", format="png", label="mask")
            mask_button = gr.Button("mask")
        mask_button.click(mask_api, mask_photo, mask_result, api_name="mask", concurrency_limit=2)
        if examples:
            def run_example(photo, example_prompt, progress=gr.Progress()):
                return generate(photo, example_prompt, d.negative_prompt, d.text_guidance, d.object_guidance,
                                d.steps, 2, 0, False, d.height, "none", default, None, progress)

            gr.Examples(examples, [editor, prompt], [gallery, used, seed], fn=run_example, run_on_click=True,
                        cache_examples=False, api_visibility="private")
    return demo


def load_examples() -> list[list]:
    import json

    listing = EXAMPLES / "examples.json"
    if not listing.is_file():
        return []
    return [[str(EXAMPLES / e["image"]), e["prompt"]] for e in json.loads(listing.read_text())]


def create_app(checkpoint: str | None = None) -> gr.Blocks:
    allowed = allowed_checkpoints(checkpoint)
    demo = build_demo(*make_handlers(allowed), checkpoints=allowed, examples=load_examples())
    demo.queue(max_size=16, default_concurrency_limit=1)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="zeroft's Gradio app")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder, Hub id or preset (default: embedded)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    create_app(args.checkpoint).launch(server_name=args.host, server_port=args.port, share=args.share,
                                       max_file_size=MAX_UPLOAD, allowed_paths=[str(EXAMPLES)])


if __name__ == "__main__":
    main()
