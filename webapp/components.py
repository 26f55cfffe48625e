"""The app's input components: gradio's own, reading uploads through zeroft (webapp.uploads) and answering
a bad value with a plain message instead of gradio's generic error.

This is the one module of the app that relies on gradio internals, checked on gradio 6.31.0 (pyproject.toml
caps gradio below 7 for them; tests/test_app_fence.py fails when an upgrade changes one):

- ``gr.ImageEditor.blob_storage``: where the editor's uploaded blobs wait for ``preprocess`` (keyed by id);
- ``Block.get_block_name``: which of gradio's front-end components a subclass is drawn with;
- ``Blocks.preprocess_data``: the step where a request's payloads become values, which raises
  ``InvalidPathError`` for a file that was never uploaded and pydantic's ``ValidationError`` for a
  payload of the wrong shape.
"""

from __future__ import annotations

import gradio as gr
from gradio.exceptions import InvalidPathError

from .catalogue import Checkpoints
from .errors import user_error
from .uploads import decode_upload

GRADIO_CHECKED = "6.31.0"  # the gradio release the internals above were read from


def _layers(payload_layers) -> list:
    if payload_layers is None:
        return []
    if not isinstance(payload_layers, (list, tuple)):
        raise user_error("The editor's layers must be a list of images.")
    return [layer for layer in payload_layers if layer is not None]


class PhotoEditor(gr.ImageEditor):
    """The editor; its value reaches the handlers as ``{"background": LoadedImage | None, "layers": [LoadedImage]}``."""

    def preprocess(self, payload):
        if payload is None:
            return None
        data = self.blob_storage.pop(payload.id, None) if payload.id is not None else payload
        if data is None:
            return {"background": None, "layers": [], "composite": None}
        background = decode_upload(data.background) if data.background is not None else None
        layers = [decode_upload(layer, "mask layer") for layer in _layers(data.layers)]
        return {"background": background, "layers": layers, "composite": None}  # the composite is not used

    def get_block_name(self) -> str:
        return "imageeditor"  # the browser renders gradio's own editor


class PhotoInput(gr.Image):
    """The /mask endpoint's photo, as a LoadedImage."""

    def preprocess(self, payload):
        return None if payload is None else decode_upload(payload)

    def get_block_name(self) -> str:
        return "image"


class PhotoUpload(gr.UploadButton):
    """The photo upload: the file itself reaches the server (the editor's own upload decodes in the browser)."""

    def preprocess(self, payload):
        if payload is None:
            return None
        return decode_upload(payload[0] if isinstance(payload, gr.data_classes.ListFiles) else payload)

    def get_block_name(self) -> str:
        return "uploadbutton"


class NumberSetting:
    """Mixin for sliders and number boxes: a value that is not a number (an API call's "5", null) is named plainly.

    ``optional``: None is a value (the seed box: no seed); elsewhere None is refused.
    """

    optional = False

    def preprocess(self, payload):
        if payload is None and self.optional:
            return None
        if isinstance(payload, bool) or not isinstance(payload, (int, float)):
            raise user_error(f"{self.label} must be a number, not {repr(payload)[:40]}.")
        try:
            return super().preprocess(payload)
        except gr.Error as error:  # gradio's own range check, which would log a traceback for a plain refusal
            raise user_error(error.message) from None


class Setting(NumberSetting, gr.Slider):
    def get_block_name(self) -> str:
        return "slider"


class NumberBox(NumberSetting, gr.Number):
    def get_block_name(self) -> str:
        return "number"


class SeedBox(NumberSetting, gr.Number):
    optional = True  # no seed: the handler draws one

    def get_block_name(self) -> str:
        return "number"


class CheckpointChoice(gr.Dropdown):
    """The model selector: takes an offered name or an alias of one (see Checkpoints), refuses others plainly."""

    offered: Checkpoints | None = None  # set after construction, so it never enters the page's config

    def preprocess(self, payload):
        name = self.offered.name(payload) if self.offered else None
        if name is None:
            names = ", ".join(self.offered.names) if self.offered else ""
            raise user_error(f"That checkpoint is not offered by this app; choose one of: {names}.")
        return name

    def get_block_name(self) -> str:
        return "dropdown"


class App(gr.Blocks):
    """gr.Blocks whose requests with a file that was never uploaded, or a value of the wrong shape, get a message
    naming the input (gradio answers ``"error": null`` and logs a traceback)."""

    async def preprocess_data(self, block_fn, inputs, *args, **kwargs):
        try:
            return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
        except InvalidPathError:
            raise user_error("A file in this request was not uploaded to this app: upload it first "
                             "(gradio_client's handle_file does).") from None
        except (TypeError, ValueError, AttributeError) as error:  # pydantic's ValidationError is a ValueError
            if isinstance(error, gr.Error):
                raise
            raise user_error(f"A value in this request has the wrong shape for {_input_label(block_fn, error)}: "
                             "send what the API page (\"Use via API\") shows for it.") from None


def _input_label(block_fn, error: Exception) -> str:
    """The label of the input whose payload failed, where the error names its model; else "one of the inputs"."""
    text = str(error)
    for block in getattr(block_fn, "inputs", []) or []:
        model = getattr(block, "data_model", None)
        label = getattr(block, "label", None)
        if label and model is not None and getattr(model, "__name__", "") in text:
            return f"the {label!r} input"
    return "one of the inputs"
