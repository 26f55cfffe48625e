"""The page: ``build_demo`` holds layout only; every model call goes through the handlers passed in
(webapp.handlers.Handlers, or a stand-in in tests)."""

from __future__ import annotations

import gradio as gr
import torch

import zeroft
from zeroft.guidance import PAPER_SDXL_INTERVAL
from zeroft.pipeline_flux import DEFAULT_EMBEDDED_GUIDANCE
from zeroft.validation import GUIDANCE_RANGE, MAX_PROMPT_CHARS, NUM_IMAGES_RANGE, STEPS_RANGE

from .catalogue import GPU_PRESETS, REAL_DEFAULT, Checkpoints
from .components import App, CheckpointChoice, NumberBox, PhotoEditor, PhotoInput, PhotoUpload, SeedBox, Setting
from .examples import Example
from .handlers import SIZE_FALLBACK

EMBEDDED_RANGE = (1.0, 10.0)  # FLUX.1-dev's distilled guidance, around FluxPipeline's default 3.5

CACHE_CLEANUP = (1800, 7200)  # gradio's upload/result cache: every 30 min, delete files older than 2 h
PIPELINE = "pipeline"  # the one concurrency group of every event that runs the shared pipeline
QUEUE_SIZE = 16  # requests waiting at most; one more is told the queue is full
TOY_NOTE = (
    "**This is the CPU demo.** The model selected, `zeroft-toy`, is a small model trained on coloured shapes "
    "(circles, squares and triangles, plain, striped or dotted) at 64 × 64 pixels. It understands photos of ONE "
    "such object on a plain background, like the examples below; a photo of a real object (your dog, a mug) "
    "comes back as coloured shapes. Real photos need a GPU and one of the real presets ("
    + ", ".join(f"`{name}`" for name in GPU_PRESETS) + f"): on a CUDA machine `python app.py` opens on "
    f"`{REAL_DEFAULT}`."
)
INTRO = ("# zeroft\nOne photo of an object + a prompt → new images of that same object, with no fine-tuning. "
         "Upload a photo: the automatic object mask is tinted pink. Edit it with the brush: pink adds to the "
         "object, dark marks background, the eraser takes strokes back.")


def quantization_choices() -> list[str]:
    """What the Quantization list offers here: int8 everywhere, bitsandbytes where a CUDA GPU is."""
    return ["none", "int8"] + (["bnb-8bit", "bnb-4bit"] if torch.cuda.is_available() else [])


def build_demo(handlers, checkpoints: Checkpoints, examples: list[Example] | None = None,
               real_examples: list[Example] | None = None) -> gr.Blocks:
    """The app's layout.

    Args:
        handlers: the functions behind it (webapp.handlers.Handlers' methods, by name).
        checkpoints: the models offered; the first is selected.
        examples: toy objects, shown while a toy-scale model is selected, with the note that this is the CPU demo.
        real_examples: photos, shown for the other models.
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
    h = handlers
    with App(title="zeroft", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(INTRO)
        note = gr.Markdown(TOY_NOTE, visible=toy, elem_id="toy-note")
        model_note = gr.Markdown("", visible=False, elem_id="model-note")  # licence and weight meanings (FLUX.1)
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
                                    max_length=MAX_PROMPT_CHARS, elem_id="prompt")
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
                    quantization = gr.Dropdown(quantization_choices(), value="none", label="Quantization",
                                               info="int8 shrinks the weights about 4x (CPU or GPU); bnb modes need a CUDA GPU.",
                                               elem_id="quantization")
                    interval = d.guidance_interval or PAPER_SDXL_INTERVAL
                    interval_on = gr.Checkbox(value=d.guidance_interval is not None, label="Guidance on a noise interval only",
                                              info="Guide only at steps whose noise level σ is in (low, high]; the other "
                                                   "steps run one branch instead of three, so it is faster. "
                                                   "0.28 to 5.42 is Kynkäänniemi et al.'s interval for SD-XL.",
                                              elem_id="interval-on")
                    with gr.Row():
                        interval_low = NumberBox(value=interval[0], minimum=0, step=0.01, label="σ low", elem_id="interval-low")
                        interval_high = NumberBox(value=interval[1], minimum=0, step=0.01, label="σ high",
                                                  elem_id="interval-high")
                    embedded = Setting(*EMBEDDED_RANGE, value=DEFAULT_EMBEDDED_GUIDANCE, step=0.5,
                                       label="Embedded guidance (FLUX.1-dev)", visible=False,
                                       info="The guidance FLUX.1-dev was distilled with, which carries the prompt: "
                                            "higher follows the text more closely.", elem_id="embedded-guidance")
                    checkpoint = CheckpointChoice(checkpoints.names, value=default, label="Model", elem_id="checkpoint")
                    checkpoint.offered = checkpoints
                run = gr.Button("Generate", variant="primary", elem_id="generate")
        gallery = gr.Gallery(label="Results", columns=4, height=300, format="png", buttons=["download", "fullscreen"], elem_id="gallery")
        used = gr.JSON(label="Settings used", elem_id="settings")

        inputs = [editor, prompt, negative, text_guidance, object_guidance, steps, num_images, seed, random_seed,
                  size, quantization, checkpoint, interval_on, interval_low, interval_high, embedded]
        session = gr.State(None)  # the images this visitor was shown, with their photos and masks (webapp.editor)
        upload.upload(h.on_upload, [upload, checkpoint, session], session, show_progress="hidden",
                      api_visibility="private").success(
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

        boxes = []
        for rows, visible, api_name in ((examples, toy, "run_example"), (real_examples, not toy, "run_real_example")):
            with gr.Column(visible=visible) as box:
                if rows:
                    shown = gr.Examples([[e.image, e.prompt] for e in rows], [editor, prompt], api_visibility="private",
                                        label="Examples" if rows is examples else "Example photos")
                    # run on click, in the pipeline's concurrency group (gr.Examples' run_on_click has a group of its own)
                    shown.load_input_event.then(h.run_example, [editor, prompt, checkpoint], [gallery, used, seed],
                                                api_name=api_name, api_visibility="undocumented",
                                                concurrency_id=PIPELINE, concurrency_limit=1)
            boxes.append(box)
        gr.on([demo.load, checkpoint.change], h.model_view, checkpoint, [note, *boxes, model_note, embedded], show_progress="hidden",
              api_visibility="private")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo
