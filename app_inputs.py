"""What zeroft's app reads, and how: the offered models by the names users see, uploads decoded by
zeroft as the CLI decodes them (capped before decoding), and input components that answer a bad
value with a plain message instead of gradio's generic error.

Split from app.py, which keeps the layout and the handlers; app.py re-exports these names.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from gradio.exceptions import InvalidPathError
from PIL import Image

import zeroft
from zeroft.checkpoint import native_size_of
from zeroft.config import ZeroFTConfig
from zeroft.images import LoadedImage
from zeroft.presets import EMBEDDED_CHECKPOINT, IP_ADAPTER_PRESETS, PRESET_NAMES
from zeroft.quantization import pick_device
from zeroft.validation import size_limits

APP_DIR = Path(__file__).resolve().parent
GPU_PRESETS = tuple(IP_ADAPTER_PRESETS)  # offered where a CUDA GPU is: ip-adapter-sd15, -sdxl-vit-h, -sdxl
# The default where a GPU is: SDXL (1024 px), with the ViT-H/14 image encoder (632M parameters, a 2.5 GB
# file shared with ip-adapter-sd15) rather than ip-adapter-sdxl's ViT-bigG/14 (1,845M, 3.7 GB in fp16):
# a smaller download, start-up and memory for the same UNet and adapter layout (zeroft/presets.py). We found
# no documented quality reason to prefer bigG; ip-adapter-sdxl stays one choice away in the Model list.
REAL_DEFAULT = "ip-adapter-sdxl-vit-h"
CHECKPOINT_ENV = "ZEROFT_CHECKPOINT"  # the default model where --checkpoint is not given (a Space's variable)
REAL_SCALE = 256  # px: a model whose native side is smaller is a toy (the embedded one: 64 px, coloured shapes)
MAX_UPLOAD = 20 * 2**20  # bytes: the cap on every file the app decodes, whatever route it came by


def user_error(message: str) -> gr.Error:
    """A plain message for the user; expected input errors print no traceback in the server's log."""
    return gr.Error(message, print_exception=False)


def real_models_here() -> bool:
    """Whether the real presets are offered: a CUDA GPU (a ZeroGPU Space's included) and the Hub not switched off."""
    return torch.cuda.is_available() and os.environ.get("HF_HUB_OFFLINE") != "1"


def default_checkpoint(checkpoint: str | None = None) -> str | None:
    """The model the app opens on: ``--checkpoint``, else $ZEROFT_CHECKPOINT, else REAL_DEFAULT where the real
    presets are offered, else None (the embedded toy model)."""
    return checkpoint or os.environ.get(CHECKPOINT_ENV) or (REAL_DEFAULT if real_models_here() else None)


def checkpoint_config(where: str) -> ZeroFTConfig | None:
    """A local checkpoint's config without loading weights (None for Hub checkpoints not yet loaded)."""
    path = Path(where)
    return ZeroFTConfig.load(path) if (path / zeroft.config.CONFIG_NAME).is_file() else None


class Checkpoints:
    """The models this app offers, by the names users see and send; where each one lives stays on the server.

    Names: ``zeroft-toy`` for the embedded model, a preset's name, a local folder's name, a Hub id.
    Also accepted: the operator's ``--checkpoint`` as written unless it is absolute, and a local folder's
    path relative to the app's folder (``assets/zeroft-toy``).
    """

    def __init__(self, extra: str | None = None):
        self._where: dict[str, str] = {}  # name → what zeroft.get_pipeline loads
        self._aliases: dict[str, str] = {}  # other accepted spelling → name
        if extra:
            self._add(extra)
        if EMBEDDED_CHECKPOINT.is_dir():
            self._add("zeroft-toy")
        if real_models_here():
            for preset in GPU_PRESETS:  # real-scale models: minutes per image on a CPU, seconds on a GPU
                self._add(preset)

    def _add(self, spec: str) -> None:
        path = Path(spec).expanduser()
        if spec in ("zeroft-toy", "default") or (path.is_dir() and path.resolve() == EMBEDDED_CHECKPOINT.resolve()):
            name, where = "zeroft-toy", str(EMBEDDED_CHECKPOINT)
        elif spec in PRESET_NAMES:
            name, where = spec, spec
        elif path.is_dir() or path.is_absolute() or spec.startswith((".", "~")):
            name, where = path.name, str(path.resolve())
            while name in self._where and self._where[name] != where:
                name += "+"
        else:  # a Hub id: public already
            name, where = spec, spec
        self._where.setdefault(name, where)
        # an absolute path is no alias: accepting it would confirm a visitor's guess of where the model lives
        for alias in (spec, self._relative(where), "default" if name == "zeroft-toy" else None):
            if alias and alias != name and not os.path.isabs(alias):
                self._aliases.setdefault(alias, name)

    @staticmethod
    def _relative(where: str) -> str | None:
        path = Path(where)
        if path.is_absolute() and path.is_relative_to(APP_DIR):
            return path.relative_to(APP_DIR).as_posix()
        return None

    @property
    def names(self) -> list[str]:
        return list(self._where)

    def name(self, value) -> str | None:
        """The offered name ``value`` stands for, or None."""
        if not isinstance(value, str):
            return None
        if value in self._where:
            return value
        return self._aliases.get(value) or self._aliases.get(os.path.normpath(value))

    def where(self, name: str) -> str:
        return self._where[name]

    def config(self, name: str) -> ZeroFTConfig | None:
        """A model's config without loading weights: a folder's own, or what a preset's will say (its
        defaults, masker and encoder; the adapter's dimensions, unknown before its file is read, are 0)."""
        where = self._where.get(name)
        if where in IP_ADAPTER_PRESETS:
            return IP_ADAPTER_PRESETS[where].zeroft_config(image_embed_dim=0, cross_attention_dim=0, num_tokens=0)
        return checkpoint_config(where) if where is not None else None

    def native_size(self, name: str) -> int | None:
        """A model's native output side from its config files or its preset (None where that needs a download)."""
        where = self._where.get(name)
        if where in IP_ADAPTER_PRESETS:
            return IP_ADAPTER_PRESETS[where].native_size
        if where is None or not Path(where).is_dir():
            return None
        try:
            return native_size_of(where)
        except (OSError, ValueError, zeroft.InputError):
            return None  # loading the model reports what is wrong with it

    def is_toy(self, name: str) -> bool:
        """Whether a model is toy-scale: the embedded one (coloured shapes, 64 px) or any under REAL_SCALE."""
        native = self.native_size(name)
        return name == "zeroft-toy" or (native is not None and native < REAL_SCALE)

    def size_range(self, name: str) -> tuple[int, int, int] | None:
        """(smallest, largest, step) output side for a model on this machine: zeroft.validation.size_limits of its
        native size (None where that is not at hand without a download)."""
        native = self.native_size(name)
        if native is None:
            return None
        low, high = size_limits(native, pick_device(None))
        return low, high, max(8, native // 64 * 8)

    def public(self, text: str) -> str:
        """``text`` with every server path of an offered model replaced by its name, and no other server folder."""
        for name, where in sorted(self._where.items(), key=lambda item: -len(item[1])):
            if os.path.isabs(where):
                text = text.replace(where, name)
        return text.replace(str(APP_DIR), ".").replace(str(Path.home()), "~")


def allowed_checkpoints(extra: str | None = None) -> list[str]:
    """Where the offered models live, the default first: for the server's own use (the page shows only names)."""
    offered = Checkpoints(default_checkpoint(extra))
    return [offered.where(name) for name in offered.names]


# ---------------------------------------------------------------------------------------------- examples

TOY_EXAMPLES = APP_DIR / "assets" / "examples"  # held-out toy objects, for toy-scale models
REAL_EXAMPLES = APP_DIR / "assets" / "examples-real"  # real photos with committed masks (LICENSES.md there)


@dataclass(frozen=True)
class Example:
    """One example row: a photo, its prompt and, for real photos, the object mask made once and committed."""

    image: str  # path of the photo
    prompt: str
    mask: str | None = None  # path of an 8-bit mask (white = object) the size of the photo


def load_examples(folder: Path = TOY_EXAMPLES) -> list[Example]:
    """The examples listed in ``folder/examples.json`` (records: image, prompt, optional mask, identity)."""
    listing = folder / "examples.json"
    if not listing.is_file():
        return []
    return [Example(str(folder / e["image"]), e["prompt"], str(folder / e["mask"]) if e.get("mask") else None)
            for e in json.loads(listing.read_text())]


@functools.lru_cache(maxsize=1)
def _committed_masks() -> dict[tuple[tuple[int, int], str], str]:
    """(size, digest) of each example photo as zeroft decodes it → its committed mask file."""
    masks = {}
    for example in load_examples(TOY_EXAMPLES) + load_examples(REAL_EXAMPLES):
        if example.mask:
            rgb = zeroft.load_image(example.image).rgb
            masks[(rgb.size, zeroft.cache.image_digest(rgb))] = example.mask
    return masks


def committed_mask(photo: LoadedImage) -> np.ndarray | None:
    """The committed mask in [0, 1] of an example photo (by content, however it arrived), else None.

    It stands in for the automatic mask, so a real example works where the automatic masker's model
    has not been downloaded.
    """
    masks = _committed_masks()
    if not any(size == photo.rgb.size for size, _ in masks):  # most photos: no digest to compute
        return None
    path = masks.get((photo.rgb.size, zeroft.cache.image_digest(photo.rgb)))
    if path is None:
        return None
    return zeroft.prepare_mask(np.asarray(Image.open(path).convert("L"), np.float32) / 255.0, photo.rgb.size)


# ---------------------------------------------------------------------------------------------- reading uploads


def upload_bytes(item, what: str) -> bytes:
    """The raw bytes of one uploaded image, at most MAX_UPLOAD of them, read before anything decodes them.

    ``item`` is a file in gradio's cache (a path, or FileData with a path), the editor's blob bytes, or
    FileData whose url is a base64 ``data:`` URL (gradio itself would decode those with no size limit).
    """
    limit, too_large = MAX_UPLOAD, f"The {what} is larger than {MAX_UPLOAD // 2**20} MB."
    url = getattr(item, "url", None)
    if isinstance(item, (bytes, bytearray)):
        data = bytes(item)
    elif isinstance(url, str) and url.startswith("data:"):
        encoded = url.partition(",")[2]
        if len(encoded) // 4 * 3 > limit + 3:  # refuse before decoding the base64 itself
            raise user_error(too_large)
        try:
            data = base64.b64decode(encoded)
        except (binascii.Error, ValueError):
            raise user_error(f"The {what} is not valid base64 data.") from None
    else:
        path = Path(item) if isinstance(item, (str, os.PathLike)) else Path(getattr(item, "path", None) or "")
        if not str(path) or not path.is_file():
            raise user_error(f"The {what} did not arrive; upload it again.")
        if path.stat().st_size > limit:
            raise user_error(too_large)
        data = path.read_bytes()
    if len(data) > limit:
        raise user_error(too_large)
    return data


def decode_upload(item, what: str = "photo") -> LoadedImage:
    """One uploaded image through ``zeroft.load_image`` (the CLI's reader), errors as plain messages."""
    try:
        return zeroft.load_image(upload_bytes(item, what), what)
    except zeroft.InputError as error:
        raise user_error(str(error)) from None


def as_image(photo: LoadedImage) -> Image.Image:
    """The decoded photo as one PIL image that ``zeroft.load_image`` reads back identically (RGBA when it has alpha)."""
    if photo.alpha is None:
        return photo.rgb
    rgba = photo.rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((photo.alpha * 255).round().astype(np.uint8), "L"))
    return rgba


class PhotoEditor(gr.ImageEditor):
    """The editor; its value reaches the handlers as ``{"background": LoadedImage | None, "layers": [LoadedImage]}``."""

    def preprocess(self, payload):
        if payload is None:
            return None
        data = self.blob_storage.pop(payload.id, None) if payload.id is not None else payload
        if data is None:
            return {"background": None, "layers": [], "composite": None}
        background = decode_upload(data.background) if data.background is not None else None
        layers = [decode_upload(layer, "mask layer") for layer in data.layers or [] if layer is not None]
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
    """Mixin for sliders and number boxes: a value that is not a number (an API call's "5") is named plainly."""

    def preprocess(self, payload):
        if payload is not None and (isinstance(payload, bool) or not isinstance(payload, (int, float))):
            raise user_error(f"{self.label} must be a number, not {repr(payload)[:40]}.")
        return super().preprocess(payload)


class Setting(NumberSetting, gr.Slider):
    def get_block_name(self) -> str:
        return "slider"


class SeedBox(NumberSetting, gr.Number):
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
    """gr.Blocks whose requests naming a file that was never uploaded get a message (gradio answers ``"error": null``)."""

    async def preprocess_data(self, *args, **kwargs):
        try:
            return await super().preprocess_data(*args, **kwargs)
        except InvalidPathError:
            raise user_error("A file in this request was not uploaded to this app: upload it first "
                             "(gradio_client's handle_file does).") from None
