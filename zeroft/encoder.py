"""The frozen object encoder f_o: an open_clip image tower applied to the masked photo.

Implements the paper's object embedding o = f_o(x ⊗ m) (Jia et al., 2023, sec. 3.2): the
background is replaced by a flat colour, the photo is optionally cropped to the object, padded
to a square, resized to the encoder's input size and normalised; the output is the
unnormalised image embedding (B, D), the same quantity IP-Adapter feeds its projection.

Only the image tower is built, and its weights are only ever read from safetensors: from a
local folder in open_clip's layout (``open_clip_config.json`` + ``open_clip_model.safetensors``),
from a Hub repo in that layout (``hf-hub:org/name``), from an open_clip pretrained tag whose Hub
repo carries safetensors, or from one Hub file (``pretrained="hf-hub:org/name/path.safetensors"``)
holding an open_clip tower or a transformers CLIP vision model. :func:`locate_encoder` finds
every file before anything is built, so a missing one fails in seconds, not after the build.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .config import EncoderConfig
from .errors import HubUnavailableError, ModelUnavailableError
from .masking import BACKGROUND_FILLS, apply_mask, mask_bbox

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class EncoderSource:
    """What an encoder is built from, resolved (files found, downloaded if need be) before anything is built."""

    model_cfg: dict  # open_clip model config (embed_dim, vision_cfg, quick_gelu); only the image tower is built
    weights: Path | None  # safetensors file (see visual_state_dict); None: random weights
    mean: tuple[float, float, float]  # normalisation the tower was trained with
    std: tuple[float, float, float]
    folder: Path | None = None  # local open_clip folder the weights came from, copied by ObjectEncoder.save


def _hub_file(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as error:
        raise HubUnavailableError(
            f"Could not get {filename} from the Hugging Face Hub repo {repo_id!r} ({type(error).__name__}). "
            "It is downloaded once on first use; check the network, or use a local encoder folder."
        ) from error


def _split_hub_file(spec: str) -> tuple[str, str]:
    """``hf-hub:org/name/sub/file.safetensors`` → (``org/name``, ``sub/file.safetensors``)."""
    parts = spec[len(HUB_PREFIX):].split("/")
    if len(parts) < 3 or not parts[-1].endswith(".safetensors"):
        raise ValueError(f"encoder weights {spec!r}: write hf-hub:org/name/path/to/file.safetensors")
    return "/".join(parts[:2]), "/".join(parts[2:])


def _open_clip_folder_source(config_file: Path, weights: Path, folder: Path | None) -> EncoderSource:
    import open_clip

    data = json.loads(config_file.read_text())
    preprocess = data.get("preprocess_cfg", {})
    return EncoderSource(data["model_cfg"], weights, tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                         tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)), folder)


def locate_encoder(config: EncoderConfig, root: str | Path | None = None) -> EncoderSource:
    """Find every file the encoder ``config`` needs, without building it; ``root`` resolves ``config.path``.

    Raises:
        ModelUnavailableError: a local encoder folder lacks its config or safetensors weights.
        HubUnavailableError: a file is neither in the Hugging Face cache nor downloadable.
    """
    import open_clip

    if config.path is not None:
        folder = Path(config.path) if root is None else Path(root) / config.path
        for name in (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS):
            if not (folder / name).is_file():
                raise ModelUnavailableError(f"The encoder folder {folder} has no {name} (only safetensors are loaded).")
        return _open_clip_folder_source(folder / OPEN_CLIP_CONFIG, folder / OPEN_CLIP_WEIGHTS, folder)
    if config.model_name.startswith(HUB_PREFIX):
        repo = config.model_name[len(HUB_PREFIX):]
        return _open_clip_folder_source(_hub_file(repo, OPEN_CLIP_CONFIG), _hub_file(repo, OPEN_CLIP_WEIGHTS), None)

    model_cfg = open_clip.get_model_config(config.model_name)
    if model_cfg is None:
        raise ValueError(f"open_clip knows no architecture {config.model_name!r}")
    mean, std = tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD)
    if not config.pretrained:
        return EncoderSource(model_cfg, None, mean, std)
    if config.pretrained.startswith(HUB_PREFIX):
        return EncoderSource(model_cfg, _hub_file(*_split_hub_file(config.pretrained)), mean, std)
    tag = open_clip.get_pretrained_cfg(config.model_name, config.pretrained) or {}
    if not tag.get("hf_hub"):
        raise ValueError(
            f"open_clip has no Hub copy of {config.model_name}/{config.pretrained}; zeroft only loads "
            "safetensors from the Hub. Convert the weights and use a local encoder folder."
        )
    repo_id = "/".join(tag["hf_hub"].split("/")[:2])  # open_clip writes "org/name/" or "org/name/<file>"
    # A tag trained with QuickGELU needs it in the tower, as open_clip's create_model would warn.
    model_cfg = {**model_cfg, "quick_gelu": model_cfg.get("quick_gelu", False) or tag.get("quick_gelu", False)}
    return EncoderSource(model_cfg, _hub_file(repo_id, OPEN_CLIP_WEIGHTS), tuple(tag.get("mean", mean)),
                         tuple(tag.get("std", std)))


def build_visual(model_cfg: dict) -> nn.Module:
    """open_clip's image tower alone, random weights, without the text tower or create_model's warnings.

    ``open_clip.create_model`` would build the whole CLIP (ViT-H/14's text tower is 354M parameters,
    1.4 GB in fp32, thrown away at once here) and log "No pretrained weights loaded ... initialized
    randomly" before zeroft loads the weights. zeroft.fence.open_clip_vision_tower builds it with the
    function open_clip's CLIP uses for its ``visual``, so the tower is exactly the same module.
    """
    from .fence import open_clip_vision_tower

    return open_clip_vision_tower(model_cfg)


def _transformers_to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPVisionModelWithProjection`` keys → open_clip ``VisionTransformer`` keys.

    The two compute the same function (pre-LN ViT, class token, projection without bias); open_clip
    fuses q, k, v into one ``in_proj`` and stores the projection transposed. Nothing here depends on
    the widths: h94's ViT-H/14 file (``models/image_encoder``) and its ViT-bigG/14 file
    (``sdxl_models/image_encoder``: width 1664, 48 layers, head width 104, MLP 8192, stored in fp16,
    cast on loading) both convert tensor for tensor (tests/test_fullsize_paths.py, tests/test_presets.py).
    """
    p = "vision_model."
    out = {
        "class_embedding": state[f"{p}embeddings.class_embedding"],
        "conv1.weight": state[f"{p}embeddings.patch_embedding.weight"],
        "positional_embedding": state[f"{p}embeddings.position_embedding.weight"],
        "proj": state["visual_projection.weight"].t().contiguous(),  # (width, embed_dim)
    }
    pairs = {"ln_pre": f"{p}pre_layrnorm", "ln_post": f"{p}post_layernorm"}
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith(f"{p}encoder.layers.")})
    for i in layers:
        ours, theirs = f"transformer.resblocks.{i}.", f"{p}encoder.layers.{i}."
        pairs.update({f"{ours}ln_1": f"{theirs}layer_norm1", f"{ours}ln_2": f"{theirs}layer_norm2",
                      f"{ours}attn.out_proj": f"{theirs}self_attn.out_proj", f"{ours}mlp.c_fc": f"{theirs}mlp.fc1",
                      f"{ours}mlp.c_proj": f"{theirs}mlp.fc2"})
        for part in ("weight", "bias"):
            out[f"{ours}attn.in_proj_{part}"] = torch.cat([state[f"{theirs}self_attn.{x}_proj.{part}"] for x in "qkv"])
    for ours, theirs in pairs.items():
        for part in ("weight", "bias"):
            out[f"{ours}.{part}"] = state[f"{theirs}.{part}"]
    return out


def visual_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    """The image tower's weights from a safetensors file, reading only the tensors the tower needs.

    Accepted key layouts: a whole open_clip CLIP (``visual.*``; the text tower is not read), an
    open_clip image tower on its own, or a transformers ``CLIPVisionModelWithProjection``
    (``vision_model.*`` + ``visual_projection.weight``, e.g. h94/IP-Adapter's models/image_encoder).
    """
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())
        if any(k.startswith("vision_model.") for k in keys):
            wanted = {k: k for k in keys if (k.startswith("vision_model.") or k == "visual_projection.weight")
                      and not k.endswith("position_ids")}
        elif any(k.startswith("visual.") for k in keys):
            wanted = {k: k[len("visual."):] for k in keys if k.startswith("visual.")}
        else:
            wanted = {k: k for k in keys}
        state = {ours: f.get_tensor(theirs) for theirs, ours in wanted.items()}
    if any(k.startswith("vision_model.") for k in state):
        try:
            state = _transformers_to_open_clip(state)
        except KeyError as error:
            raise ValueError(f"{weights} is not a whole CLIP vision model: {error} is missing") from error
    return state


def load_visual_weights(visual: nn.Module, weights: Path) -> None:
    """Load ``weights`` (see :func:`visual_state_dict`) into an open_clip image tower; every tensor must fit."""
    try:
        visual.load_state_dict(visual_state_dict(weights), strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights} does not fit the encoder config: {error}") from error


def load_open_clip_folder(folder: str | Path) -> tuple[nn.Module, dict]:
    """A whole open_clip model (both towers) from the local layout (config + safetensors): (model, preprocess cfg)."""
    import open_clip

    folder = Path(folder)
    if not (folder / OPEN_CLIP_WEIGHTS).is_file():
        raise FileNotFoundError(f"encoder folder {folder} has no {OPEN_CLIP_WEIGHTS} (only safetensors are loaded)")
    # open_clip loads the folder's weights itself (it prefers open_clip_model.safetensors), so it does not warn.
    model = open_clip.create_model(f"local-dir:{folder}")
    return model, json.loads((folder / OPEN_CLIP_CONFIG).read_text()).get("preprocess_cfg", {})


def config_token_width(vision_cfg: dict) -> int:
    """The width of :meth:`ObjectEncoder.tokens` from an open_clip ``vision_cfg`` alone: a ViT's width; for a ResNet
    (``layers`` a list of four stage depths), its next-to-last stage's channels (4 x width planes, 4x expansion)."""
    if isinstance(vision_cfg.get("layers"), (list, tuple)):
        return 16 * int(vision_cfg["width"])
    return int(vision_cfg["width"])


def _is_resnet(visual: nn.Module) -> bool:
    """Whether ``visual`` is open_clip's ModifiedResNet (an attention-pooled ResNet) rather than a ViT."""
    return hasattr(visual, "attnpool") and hasattr(visual, "layer3")


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
        self._null_objects: dict[tuple, torch.Tensor] = {}  # (kind, views, dtype, device) -> null_tokens(), black_embedding()
        check_views(config.views)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_config(cls, config: EncoderConfig, root: str | Path | None = None) -> "ObjectEncoder":
        """Build the encoder a checkpoint names; ``root`` resolves ``config.path``."""
        return cls.from_source(locate_encoder(config, root), config)

    @classmethod
    def from_source(cls, source: EncoderSource, config: EncoderConfig) -> "ObjectEncoder":
        """Build the encoder from files :func:`locate_encoder` found."""
        visual = build_visual(source.model_cfg)
        if source.weights is not None:
            load_visual_weights(visual, source.weights)
        return cls(visual, config, source.mean, source.std, source.folder)

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

    @property
    def token_width(self) -> int:
        """Width of the tokens :meth:`tokens` returns: the tower's own width (1280 for ViT-H/14); for a ResNet tower,
        the channels of its next-to-last stage."""
        if _is_resnet(self.visual):
            return int(self.visual.layer3[-1].conv3.out_channels)
        return int(self.visual.transformer.width)

    @torch.no_grad()
    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels → (B, V·(1 + P), W): the tower's hidden states before its last block.

        The class token and the P patch tokens after every block but the last, before ``ln_post``: what
        IP-Adapter Plus resamples, the same tensor as transformers' ``CLIPVisionModelWithProjection(...,
        output_hidden_states=True).hidden_states[-2]`` (257 x 1280 for ViT-H/14 at 224 px; tested against it).
        With several ``config.views`` (V > 1) each view's tokens follow the last's along the token axis.

        A ResNet tower (open_clip's ModifiedResNet, the toy world's encoder) has no class token: its tokens are the
        grid of its next-to-last stage (stem, layer1..3: all stages but the last), one token per cell, with the
        grid's mean in front, as the tower's attention pool puts it (4 x 4 + 1 = 17 for the toy's 64 px encoder).
        Uses open_clip's public ``forward_intermediates`` of either tower.
        """
        resnet = _is_resnet(self.visual)
        depth = 5 if resnet else len(self.visual.transformer.resblocks)  # a ResNet's stages: stem, layer1..layer4
        if depth < 2:
            raise ValueError("patch tokens come from the block before the last: this tower has only one block")
        pixels = pixel_values.to(device=self.device, dtype=self.dtype)
        batch = pixels.shape[0]
        views = pixels if self.config.views == "none" else view_batch(pixels, self.config.views)  # (V·B, 3, S, S)
        if resnet:
            out = self.visual.forward_intermediates(views, indices=[depth - 2], stop_early=True, intermediates_only=True)
            grid = out["image_intermediates"][0].flatten(2).transpose(1, 2)  # (V·B, H·W, C)
            tokens = torch.cat([grid.mean(1, keepdim=True), grid], dim=1)
        else:
            out = self.visual.forward_intermediates(views, indices=[depth - 2], stop_early=True,
                                                    intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
            tokens = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        count = tokens.shape[0] // batch
        return tokens.view(count, batch, *tokens.shape[1:]).transpose(0, 1).reshape(batch, -1, tokens.shape[-1])

    def null_tokens(self) -> torch.Tensor:
        """(1, V·(1 + P), W): the tokens of an all-zero *normalised* image, IP-Adapter Plus's null object ϕ (what
        Plus was trained to drop to, and what diffusers feeds its unconditional branch). The encoder is frozen, so
        they are computed once per views, dtype and device (the pipeline and the trainer ask at every call/step)."""
        return self._null_object("tokens", lambda: self.tokens(torch.zeros(1, 3, self.image_size, self.image_size)))

    def black_embedding(self) -> torch.Tensor:
        """(1, D): the pooled embedding of a black image (every pixel 0 before normalisation), the null object ϕ of
        FLUX pipelines: what diffusers' FluxPipeline encodes for the negative branch when no negative IP image is
        given (a black ``np.zeros`` image). Computed once per views, dtype and device, like :meth:`null_tokens`."""
        pixels = ((torch.zeros(3, 1, 1) - self.mean) / self.std).expand(3, self.image_size, self.image_size)
        return self._null_object("black", lambda: self(pixels[None]))

    @torch.no_grad()
    def _null_object(self, kind: str, compute) -> torch.Tensor:
        """``compute()`` once per ``kind`` and the encoder's views, dtype and device, then kept."""
        key = (kind, self.config.views, self.dtype, self.device)
        if key not in self._null_objects:
            self._null_objects[key] = compute()
        return self._null_objects[key]

    def width(self, projection: str) -> int:
        """The width of what ``projection`` reads from this encoder: the patch tokens' for "plus", the pooled
        embedding's otherwise (zeroft.config.ZeroFTConfig.image_embed_dim)."""
        return self.token_width if projection == "plus" else self.embed_dim

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
