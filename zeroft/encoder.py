"""The frozen object encoder f_o: an open_clip image tower applied to the masked photo.

Implements the paper's object embedding o = f_o(x ⊗ m) (Jia et al., 2023, sec. 3.2): the
background is replaced by a flat colour, the photo is optionally cropped to the object, padded
to a square, resized to the encoder's input size and normalised; the output is the
unnormalised image embedding (B, D), the same quantity IP-Adapter feeds its projection.

Weights are only ever read from safetensors: from a local folder in open_clip's layout
(``open_clip_config.json`` + ``open_clip_model.safetensors``), from a Hub repo in that layout
(``hf-hub:org/name``), or from an open_clip pretrained tag whose Hub repo carries safetensors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .config import EncoderConfig
from .errors import HubUnavailableError
from .masking import BACKGROUND_FILLS, apply_mask, mask_bbox

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


def _load_safetensors_into(model: nn.Module, weights: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    visual_missing = [k for k in missing if k.startswith("visual.")]
    if visual_missing or unexpected:
        raise ValueError(
            f"{weights} does not fit the encoder config: missing {visual_missing[:5]}, unexpected {unexpected[:5]}"
        )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip warns "initialized randomly" when built without weights; zeroft loads them next."""
    drop = _DropRandomInitWarning()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def _hub_file(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as error:
        raise HubUnavailableError(
            f"Could not get {filename} from the Hugging Face Hub repo {repo_id!r} "
            f"({type(error).__name__}). Check the network, or use a local encoder folder."
        ) from error


def load_open_clip_folder(folder: str | Path, weights: Path | None = None) -> tuple[nn.Module, dict]:
    """A whole open_clip model from the local layout (config + safetensors): (model, preprocess cfg)."""
    import open_clip

    folder = Path(folder)
    weights = weights or folder / OPEN_CLIP_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"encoder folder {folder} has no {OPEN_CLIP_WEIGHTS} (only safetensors are loaded)")
    with _quiet_random_init_warning():
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    _load_safetensors_into(model, weights)
    return model, json.loads((folder / OPEN_CLIP_CONFIG).read_text()).get("preprocess_cfg", {})


def _build_open_clip(config: EncoderConfig, root: Path | None) -> tuple[nn.Module, dict, Path | None]:
    """Return (open_clip model, preprocess cfg, local source folder or None)."""
    import open_clip

    if config.path is not None or config.model_name.startswith("hf-hub:"):
        if config.path is not None:
            folder = Path(config.path) if root is None else root / config.path
            if not (folder / OPEN_CLIP_CONFIG).is_file():
                raise FileNotFoundError(f"encoder folder {folder} has no {OPEN_CLIP_CONFIG}")
            weights = folder / OPEN_CLIP_WEIGHTS
        else:
            repo = config.model_name[len("hf-hub:"):]
            folder = _hub_file(repo, OPEN_CLIP_CONFIG).parent
            weights = _hub_file(repo, OPEN_CLIP_WEIGHTS)
        model, preprocess = load_open_clip_folder(folder, weights)
        return model, preprocess, folder if config.path is not None else None

    model = open_clip.create_model(config.model_name, pretrained=None)
    preprocess = {}
    if config.pretrained:
        tag = open_clip.get_pretrained_cfg(config.model_name, config.pretrained)
        hub = (tag or {}).get("hf_hub", "")
        if not hub:
            raise ValueError(
                f"open_clip has no Hub copy of {config.model_name}/{config.pretrained}; zeroft only loads "
                "safetensors from the Hub. Convert the weights and use a local encoder folder."
            )
        repo_id, _ = os.path.split(hub)  # open_clip writes "org/name/" or "org/name/<file>"
        _load_safetensors_into(model, _hub_file(repo_id, OPEN_CLIP_WEIGHTS))
        preprocess = {k: tag[k] for k in ("mean", "std") if k in tag}
    return model, preprocess, None


def object_view(image: Image.Image, mask: np.ndarray, config: EncoderConfig) -> Image.Image:
    """What the encoder looks at, before resizing: x ⊗ m, cropped to the object, padded to a square.

    The app shows this as its preview of the masked object.
    """
    masked = apply_mask(image, mask, config.background_fill)
    if config.crop_to_object:
        masked = masked.crop(mask_bbox(mask, config.crop_margin))
    side = max(masked.size)
    fill = BACKGROUND_FILLS.get(config.background_fill, (128, 128, 128))
    square = Image.new("RGB", (side, side), fill)
    square.paste(masked, ((side - masked.width) // 2, (side - masked.height) // 2))
    return square


def prepare_object_image(image: Image.Image, mask: np.ndarray, config: EncoderConfig, image_size: int,
                         mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The encoder's input: :func:`object_view`, resized to S×S and normalised: (3, S, S) float32."""
    square = object_view(image, mask, config).resize((image_size, image_size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - mean) / std


# Views of the encoder's input whose embeddings are averaged (EncoderConfig.views). Averaging
# over flips and quarter turns makes the embedding blind to the photo's orientation, which the
# generation should not copy (measured effect on the toy world: docs/masks.md). Quarter turns
# suit objects without an upright (toys, logos, top-down shots); for everyday photos "flip" is
# the safe one.
VIEWS = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "rot4": ((0, False), (1, False), (2, False), (3, False)),
    "dihedral": tuple((turns, flip) for flip in (False, True) for turns in range(4)),
}


def check_views(views: str) -> str:
    if views not in VIEWS:
        raise ValueError(f"unknown encoder views {views!r}: use one of {sorted(VIEWS)}")
    return views


def view_batch(pixel_values: torch.Tensor, views: str) -> torch.Tensor:
    """(B, 3, S, S) → (V·B, 3, S, S): every view of every image, view-major."""
    out = []
    for turns, flip in VIEWS[check_views(views)]:
        view = torch.flip(pixel_values, dims=(-1,)) if flip else pixel_values
        out.append(torch.rot90(view, turns, dims=(-2, -1)) if turns else view)
    return torch.cat(out)


class ObjectEncoder(nn.Module):
    """Frozen open_clip image tower plus the masking and resizing that feed it.

    Example:
        >>> from zeroft.tiny import tiny_encoder
        >>> encoder = tiny_encoder()
        >>> from PIL import Image
        >>> import numpy as np
        >>> photo = Image.new("RGB", (40, 30), (200, 30, 30))
        >>> pixels = encoder.preprocess(photo, np.ones((30, 40), np.float32))
        >>> encoder(pixels[None]).shape[-1] == encoder.embed_dim
        True
    """

    def __init__(self, visual: nn.Module, config: EncoderConfig, mean, std, source: Path | None = None):
        super().__init__()
        self.visual = visual
        self.config = config
        size = getattr(visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        # Plain CPU tensors, not buffers: preprocessing runs on the CPU (also in DataLoader workers) wherever .to()
        # moves the network; as buffers they followed it to the GPU and met CPU pixels there (found on an H200).
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.source = source  # local folder the weights came from, copied by save()
        check_views(config.views)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_config(cls, config: EncoderConfig, root: str | Path | None = None) -> "ObjectEncoder":
        """Build the encoder a checkpoint names; ``root`` resolves ``config.path``."""
        model, preprocess, source = _build_open_clip(config, Path(root) if root is not None else None)
        import open_clip

        mean = preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = preprocess.get("std", open_clip.OPENAI_DATASET_STD)
        return cls(model.visual, config, mean, std, source)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.visual.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.visual.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.visual.output_dim)

    @property
    def identity(self) -> str:
        """What the embedding cache keys on: the weights' origin and the preprocessing."""
        origin = str(self.source) if self.source is not None else f"{self.config.model_name}/{self.config.pretrained}"
        c = self.config
        return f"{origin}|{c.background_fill}|{c.crop_to_object}|{c.crop_margin}|{self.image_size}|{c.views}"

    def preprocess(self, image: Image.Image, mask: np.ndarray) -> torch.Tensor:
        """x ⊗ m, crop to the object, pad to a square, resize, normalise: (3, S, S) float32."""
        return prepare_object_image(image, mask, self.config, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels → (B, D) image embeddings, averaged over ``config.views``."""
        pixels = pixel_values.to(device=self.device, dtype=self.dtype)
        if self.config.views == "none":
            return self.visual(pixels)
        embeddings = self.visual(view_batch(pixels, self.config.views))
        return embeddings.view(-1, pixels.shape[0], embeddings.shape[-1]).mean(0)

    def save(self, folder: str | Path) -> None:
        """Copy the local weights folder (open_clip layout) into ``folder``."""
        if self.source is None:
            raise ValueError("This encoder was loaded from the Hub by name; its config refers to it, nothing to copy.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS):
            if self.source.resolve() != folder.resolve():
                shutil.copyfile(self.source / name, folder / name)


def save_open_clip_folder(model: nn.Module, model_cfg: dict, folder: str | Path, mean=None, std=None) -> None:
    """Write a whole open_clip model in the local layout ``ObjectEncoder`` reads (safetensors only)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(mean), "std": list(std)} if mean is not None else {}
    (folder / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / OPEN_CLIP_WEIGHTS))
