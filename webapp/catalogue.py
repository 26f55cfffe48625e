"""The models the app offers, by the names visitors see and send, and the one it opens on.

Where each model lives (a server folder, a preset, a Hub id) stays on the server: the page and
every message show names only (:meth:`Checkpoints.public`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import zeroft
from zeroft.locate import is_hub_id, native_size_of
from zeroft.config import ZeroFTConfig
from zeroft.presets import EMBEDDED_CHECKPOINT, IP_ADAPTER_PRESETS, PRESET_NAMES
from zeroft.quantization import pick_device
from zeroft.validation import size_limits

from .paths import APP_DIR

GPU_PRESETS = tuple(IP_ADAPTER_PRESETS)  # offered where a CUDA GPU is: ip-adapter-sd15, -sdxl-vit-h, -sdxl, -plus-*, -flux-dev
# The default where a GPU is: SDXL (1024 px) with IP-Adapter Plus, the public choice for objects (it keeps
# details from the encoder's patch tokens, DreamBench++ concept preservation 0.833 against 0.59 for plain ViT-G
# SDXL), with the ViT-H/14 image encoder (632M parameters, a 2.5 GB file shared with the SD1.5 presets) rather
# than bigG (1,845M, 3.7 GB in fp16). Plus copies its reference (prompt following 0.413 against 0.64): its
# preset starts at w_obj = w_text / 2, and the mask and the object weight are what a visitor turns next.
REAL_DEFAULT = "ip-adapter-plus-sdxl-vit-h"
CHECKPOINT_ENV = "ZEROFT_CHECKPOINT"  # the default model where --checkpoint is not given (a Space's variable)
REAL_SCALE = 256  # px: a model whose native side is smaller is a toy (the embedded one: 64 px, coloured shapes)


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


def _looks_like_path(spec: str) -> bool:
    return os.path.isabs(spec) or spec.startswith((".", "~")) or os.sep in spec and not is_hub_id(spec)


def check_checkpoint(spec: str) -> None:
    """Refuse, before the app starts, a model it could never load: a missing folder, a folder that is no
    zeroft checkpoint (or whose config is unreadable), a name that is neither a preset nor a Hub id.

    A Hub id is checked when it first loads (that needs the network); everything else is checked here.

    Raises:
        zeroft.InputError: naming the problem and what is accepted.
    """
    if spec in PRESET_NAMES or spec == "default":
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / zeroft.config.CONFIG_NAME).is_file():
            raise zeroft.InputError(f"{spec} is not a zeroft checkpoint: it has no {zeroft.config.CONFIG_NAME}.")
        try:
            ZeroFTConfig.load(path)
        except (OSError, ValueError) as error:
            raise zeroft.InputError(f"{spec} has an unreadable {zeroft.config.CONFIG_NAME}: {error}") from None
        return
    if path.exists() or _looks_like_path(spec):
        raise zeroft.InputError(f"The checkpoint folder {spec} does not exist." if not path.exists()
                                else f"{spec} is a file, not a checkpoint folder.")
    if not is_hub_id(spec):
        raise zeroft.InputError(f"Checkpoint {spec!r} is neither a checkpoint folder, a preset "
                                f"({', '.join(PRESET_NAMES)}) nor a Hub repo id (org/name).")


class Checkpoints:
    """The models this app offers, by the names users see and send; where each one lives stays on the server.

    Names: ``zeroft-toy`` for the embedded model, a preset's name, a local folder's name, a Hub id.
    Also accepted: the operator's ``--checkpoint`` as written unless it is absolute, and a local folder's
    path relative to the app's folder (``assets/zeroft-toy``).

    Raises:
        zeroft.InputError: ``extra`` is a model the app could never load (:func:`check_checkpoint`).
    """

    def __init__(self, extra: str | None = None):
        self._where: dict[str, str] = {}  # name → what zeroft.get_pipeline loads
        self._aliases: dict[str, str] = {}  # other accepted spelling → name
        if extra:
            check_checkpoint(extra)
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
