"""Quality metrics of subject-driven generation, as the DreamBench literature defines them.

- CLIP-I: cosine similarity of CLIP image embeddings, generated vs real images of the subject;
- CLIP-T: cosine similarity of the CLIP image embedding and the prompt's text embedding;
- DINO: cosine similarity of DINO ViT-S/16 CLS embeddings, generated vs real (Ruiz et al., 2023,
  DreamBooth, sec. 4.1: DINO separates subjects of the same class better than CLIP);
- KID: kernel inception distance between the generated and the real image sets (torchmetrics).

Defaults follow DreamBooth's protocol: CLIP ViT-B/32 (OpenAI weights, through open_clip) and
``facebook/dino-vits16``; KID on Inception-v3 pool features. Every model is configurable and
recorded with the numbers, because papers differ in which CLIP they use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import HubUnavailableError, InputError, ModelUnavailableError

DEFAULT_CLIP = ("ViT-B-32", "openai")
DEFAULT_DINO = "facebook/dino-vits16"


@dataclass(frozen=True)
class MetricModels:
    """Which models compute the metrics (recorded in every report)."""

    clip: str = DEFAULT_CLIP[0]  # open_clip name, or a local open_clip folder
    clip_pretrained: str | None = DEFAULT_CLIP[1]
    dino: str = DEFAULT_DINO  # transformers ViT model id or folder; the CLS token is the embedding
    kid_features: str = "inception"  # "inception" (torchmetrics with torch-fidelity, standard) or "dino"


class CLIPScorer:
    """CLIP image and text embeddings (L2-normalised).

    Raises:
        InputError: ``name`` is neither an open_clip model name nor a folder.
        ModelUnavailableError: the model could not be loaded (HubUnavailableError: not downloadable).
    """

    def __init__(self, name: str, pretrained: str | None, device: torch.device):
        import open_clip

        try:
            if Path(name).is_dir():
                from .encoder import load_open_clip_folder

                self.model, _ = load_open_clip_folder(name)
                self.tokenizer = open_clip.get_tokenizer(f"local-dir:{name}")
                self.transform = open_clip.image_transform(self.model.visual.image_size, is_train=False)
            elif ":" not in name and open_clip.get_model_config(name) is None:  # not hf-hub:, local-dir:
                raise InputError(f"The CLIP model {name!r} is neither an open_clip model name "
                                 f"(e.g. {DEFAULT_CLIP[0]}) nor an existing open_clip folder.")
            else:
                with _root_errors_dropped():
                    self.model, _, self.transform = open_clip.create_model_and_transforms(name, pretrained=pretrained)
                self.tokenizer = open_clip.get_tokenizer(name)
        except (InputError, ModelUnavailableError):
            raise
        except Exception as error:
            raise _unloadable("CLIP", name, error, f" with {pretrained} weights", "open_clip downloads it once on first "
                              "use; without network access give a local open_clip folder instead.") from error
        self.model = self.model.to(device).eval()
        self.device = device

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.transform(i.convert("RGB")) for i in images]).to(self.device)
        return self.model.encode_image(pixels, normalize=True).float().cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True).float().cpu()


def _unloadable(kind: str, name: str, error: Exception, weights: str, download: str) -> ModelUnavailableError:
    """The error for a metric model that did not load: a local folder's (ModelUnavailableError), or one to be
    downloaded (HubUnavailableError, with ``download`` saying how it is fetched)."""
    if Path(name).is_dir():
        return ModelUnavailableError(f"Could not load the {kind} model folder {name} ({_reason(error)}).")
    return HubUnavailableError(f"Could not load the {kind} model {name}{weights} ({_reason(error)}). {download}")


class DINOScorer:
    """DINO CLS embeddings (L2-normalised) through transformers.

    Raises:
        ModelUnavailableError: the model could not be loaded (HubUnavailableError: not downloadable).
    """

    def __init__(self, name: str, device: torch.device):
        from transformers import AutoImageProcessor, AutoModel

        try:
            self.processor = AutoImageProcessor.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name).to(device).eval()
        except Exception as error:
            raise _unloadable("DINO", name, error, "", "transformers downloads it once on first use from the Hugging "
                              "Face Hub; without network access give a local model folder instead.") from error
        self.device = device

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt").to(self.device)
        cls = self.model(**inputs).last_hidden_state[:, 0]
        return F.normalize(cls.float(), dim=-1).cpu()


def mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over all pairs of rows of two normalised embedding sets."""
    return float((a @ b.T).mean())


class KIDScorer:
    """Kernel inception distance (Bińkowski et al., 2018) between two image sets.

    The feature network is loaded here, not when the sets are scored: Inception's weights are
    downloaded on first use, and a machine without them must fail before hours of generation.

    Raises:
        InputError: ``features`` is neither "inception" nor "dino".
        ModelUnavailableError: Inception's package or weights are missing.
    """

    def __init__(self, features: str, dino: DINOScorer | None):
        from torchmetrics.image.kid import KernelInceptionDistance

        if features == "dino":
            if dino is None:
                raise ValueError("KID on DINO features needs a DINOScorer")
            self.kid = KernelInceptionDistance(feature=_Embedder(dino), normalize=True)
        elif features == "inception":
            self.kid = _inception_kid()
        else:
            raise InputError(f"KID features must be 'inception' or 'dino', not {features!r}.")
        self.features, self.dino = features, dino

    def __call__(self, generated: list[Image.Image], real: list[Image.Image]) -> tuple[float, float]:
        self.kid.reset()
        self.kid.subset_size = max(2, min(50, len(generated), len(real)))
        for images, real_flag in ((real, True), (generated, False)):
            self.kid.update(torch.stack([_unit_pixels(i) for i in images]), real=real_flag)
        mean, std = self.kid.compute()
        return float(mean), float(std)


def _inception_kid():
    """torchmetrics' KID on Inception-v3 pool features (2048-d), its weights loaded now."""
    from torchmetrics.image.kid import KernelInceptionDistance

    instead = "or compute KID on DINO features (--kid-features dino)"
    try:
        import torch_fidelity  # noqa: F401 (torchmetrics' Inception comes from it)
    except ImportError as error:
        raise ModelUnavailableError(
            f"KID on Inception-v3 features needs the torch-fidelity package: pip install torch-fidelity, {instead}."
        ) from error
    try:
        return KernelInceptionDistance(feature=2048, normalize=True)
    except Exception as error:
        raise ModelUnavailableError(
            f"Could not load the Inception-v3 weights for KID ({_reason(error)}). torch-fidelity downloads them "
            f"once on first use into {Path(torch.hub.get_dir()) / 'checkpoints'}; without network access place "
            f"them there, {instead}."
        ) from error


def _reason(error: Exception) -> str:
    """An exception as one short line, for a message that must fit one line of a terminal."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}" if text else type(error).__name__


@contextmanager
def _root_errors_dropped() -> Iterator[None]:
    """Drop open_clip's ``logging.error`` lines, each of which it raises as an exception right after.

    open_clip logs to the root logger (which installs a stderr handler) before raising, so a missing
    model printed its message twice; the raised one reaches the person, reworded, once.
    """
    root = logging.getLogger()

    def drop(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _unit_pixels(image: Image.Image, size: int = 299) -> torch.Tensor:
    """(3, size, size) float in [0, 1], Inception's input size."""
    array = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


class _Embedder(torch.nn.Module):
    """Adapts DINO to torchmetrics' feature-extractor interface: (N, 3, H, W) in [0, 1] → (N, D)."""

    def __init__(self, dino: DINOScorer):
        super().__init__()
        self.dino = dino
        self.num_features = dino.model.config.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        images = [Image.fromarray((p.permute(1, 2, 0).clamp(0, 1) * 255).byte().numpy()) for p in pixels]
        return self.dino.images(images)
