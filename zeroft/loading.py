"""Which pipeline class serves a checkpoint, and the process-wide cache of loaded pipelines.

``load_pipeline`` is the entry point for code that holds a checkpoint name and no class:
the CLI, the app, the evaluator. It reads the checkpoint's config and calls the matching
class's ``from_pretrained`` (which goes through zeroft.assemble). ``get_pipeline`` adds
a cache, so an app's first concurrent requests load one copy.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from .cache import LRUCache
from .locate import resolve_checkpoint
from .config import ZeroFTConfig
from .generation import ZeroFTMixin
from .pipeline import ZeroFTPipeline
from .pipeline_flux import ZeroFTFluxPipeline
from .pipeline_xl import ZeroFTXLPipeline
from .memory import check_fits
from .quantization import pick_device, pick_dtype

PIPELINE_CLASSES = {cls.backbone: cls for cls in (ZeroFTPipeline, ZeroFTXLPipeline, ZeroFTFluxPipeline)}  # zeroft.backbones names


def pipeline_class_for(config: ZeroFTConfig) -> type[ZeroFTMixin]:
    """The pipeline class that serves a checkpoint's backbone (``config.backbone``)."""
    return PIPELINE_CLASSES[config.backbone]


def load_pipeline(checkpoint: str | os.PathLike, revision: str | None = None, **kwargs) -> ZeroFTMixin:
    """Load a checkpoint folder, Hub repo id or preset name into the pipeline class it needs
    (:class:`~zeroft.ZeroFTPipeline` for Stable Diffusion 1.x, :class:`~zeroft.ZeroFTXLPipeline` for SDXL,
    :class:`~zeroft.ZeroFTFluxPipeline` for FLUX.1).

    Args:
        checkpoint: local checkpoint folder, Hub repo id (``org/name``) or preset name.
        revision: Hub revision of the checkpoint.
        **kwargs: device, dtype, quantization, offload, masker: see
            :func:`zeroft.assemble.assemble_pipeline`.
    """
    device = pick_device(kwargs.pop("device", None))
    dtype = pick_dtype(device, kwargs.pop("dtype", None))
    check_fits(checkpoint, device, dtype, kwargs.get("quantization", "none"))  # before a preset downloads anything
    folder = resolve_checkpoint(checkpoint, revision)
    return pipeline_class_for(ZeroFTConfig.load(folder)).from_pretrained(folder, device=device, dtype=dtype, **kwargs)


# Loaded pipelines, keyed by (checkpoint, quantization, device, dtype); two fit a 24 GB machine at SD scale.
pipeline_cache = LRUCache(maxsize=int(os.environ.get("ZEROFT_PIPELINE_CACHE", "2")))
_loading = threading.Lock()


def get_pipeline(checkpoint: str | os.PathLike, quantization: str = "none", device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, **kwargs) -> ZeroFTMixin:
    """:func:`load_pipeline`, cached: the same (checkpoint, quantization, device, dtype) loads once.

    Loading is serialised, so that concurrent first requests (an app's queue) load one copy.
    """
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    path = Path(checkpoint)
    name = str(path.resolve()) if path.exists() else str(checkpoint)
    key = (name, quantization, str(device), str(dtype), tuple(sorted(kwargs.items())))
    with _loading:
        return pipeline_cache.get_or_create(
            key, lambda: load_pipeline(checkpoint, device=device, dtype=dtype, quantization=quantization, **kwargs))
