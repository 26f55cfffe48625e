"""Streamed loading of the object encoder: an open_clip image tower filled tensor by tensor.

zeroft.encoder builds the tower (``build_visual``) and knows the weight layouts it reads
(``visual_state_dict``); this module fills an *empty* tower from such a file the way
zeroft.streaming fills diffusers and transformers models (see there for why), so that neither
the random initialisation nor the whole file's tensors are ever resident, and int8 quantizes each
Linear as soon as it is in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .streaming import (STREAMING_QUANTIZATION, TensorEntry, TensorReader, check_keys, fill_, int8_skipped,
                        read_header, release_freed_memory)


def _visual_tensors(entries: dict[str, TensorEntry], reader: TensorReader) -> tuple[dict, Iterator]:
    """(open_clip key -> shape, lazy (open_clip key, tensor) pairs) for the layouts ``visual_state_dict`` reads.

    A transformers ``CLIPVisionModelWithProjection`` file needs q, k and v fused into ``in_proj``, so it
    is converted one encoder layer at a time with zeroft.encoder's own conversion (resident: the
    model so far plus one layer and the few small non-layer tensors, which the conversion needs each time).
    """
    from .encoder import _transformers_to_open_clip

    if not any(k.startswith("vision_model.") for k in entries):
        prefix = "visual." if any(k.startswith("visual.") for k in entries) else ""
        chosen = {k[len(prefix):]: e for k, e in entries.items() if k.startswith(prefix)}  # a whole CLIP: skip text
        return {k: e.shape for k, e in chosen.items()}, ((k, reader.read(e)) for k, e in chosen.items())
    wanted = {k: e for k, e in entries.items()
              if (k.startswith("vision_model.") or k == "visual_projection.weight") and not k.endswith("position_ids")}
    try:
        shapes = {k: tuple(t.shape) for k, t in _transformers_to_open_clip({k: e.meta() for k, e in wanted.items()}).items()}
    except KeyError as error:
        raise ValueError(f"{next(iter(entries.values())).file} is not a whole CLIP vision model: {error} is missing") from None

    def layer_of(key: str) -> int | None:
        return int(key.split(".")[3]) if key.startswith("vision_model.encoder.layers.") else None

    def pairs():
        shared = {k: reader.read(e) for k, e in wanted.items() if layer_of(k) is None}
        layers = sorted({layer_of(k) for k in wanted} - {None})
        for number, i in enumerate(layers or [None]):
            part = {**shared, **{k: reader.read(e) for k, e in wanted.items() if i is not None and layer_of(k) == i}}
            for key, tensor in _transformers_to_open_clip(part).items():
                if key.startswith(f"transformer.resblocks.{i}.") or (number == 0 and not key.startswith("transformer.")):
                    yield key, tensor

    return shapes, pairs()


def load_visual_streaming(model_cfg: dict, weights: str | Path, *, dtype: torch.dtype | None,
                          quantization: str = "none", device: str | torch.device = "cpu") -> nn.Module:
    """An open_clip image tower (``zeroft.encoder.build_visual``) with its weights read tensor by tensor.

    Equal to ``build_visual(model_cfg)`` + ``load_visual_weights(visual, weights)`` (then ``.to(dtype)``)
    for "none", and to that followed by ``quantize_(visual, Int8WeightOnlyConfig())`` for "int8"; the
    tower is built with empty weights, so its random initialisation (2.5 GB for ViT-H/14) never exists,
    and only the image tower's tensors of a whole-CLIP file are read.

    Args:
        model_cfg: open_clip model config (``embed_dim``, ``vision_cfg``, ...), as ``EncoderSource.model_cfg``.
        weights: safetensors file in one of the layouts :func:`zeroft.encoder.visual_state_dict` accepts.
        dtype: compute dtype of the tower; None keeps the file's.
        quantization: "none" or "int8" (the MLP Linears; torchao leaves MultiheadAttention's out_proj).
        device: where the weights go.

    Raises:
        ValueError: the file does not fit ``model_cfg`` (found from the header, before reading weights).

    Example:
        >>> import tempfile, pathlib
        >>> from safetensors.torch import save_file
        >>> from zeroft.tiny import TINY_OPEN_CLIP, tiny_open_clip
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "visual.safetensors"
        >>> save_file(tiny_open_clip().visual.state_dict(), str(path))
        >>> visual = load_visual_streaming(TINY_OPEN_CLIP, path, dtype=torch.float32, quantization="int8")
        >>> type(visual.transformer.resblocks[0].mlp.c_fc.weight).__name__
        'Int8Tensor'
    """
    from accelerate import init_empty_weights

    from .encoder import build_visual

    with init_empty_weights(include_buffers=False):
        visual = build_visual(model_cfg)
    entries = read_header(weights)
    with TensorReader() as reader:
        shapes, tensors = _visual_tensors(entries, reader)
        check_keys(visual, shapes, str(weights))
        fill_(visual, tensors, dtype=dtype, quantization=quantization, device=device)
    return visual


def quantize_linears_(module: nn.Module, quantization: str = "int8") -> nn.Module:
    """Quantize an already-built module's Linear weights in place (int8: torchao weight-only).

    For a module that was loaded whole (an open_clip image tower built by open_clip itself); the
    memory saving comes after its peak. "none" leaves it as it is.
    """
    if quantization not in STREAMING_QUANTIZATION:
        raise ValueError(f"in-place quantization does {STREAMING_QUANTIZATION}, not {quantization!r}")
    if quantization == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        config, skipped = Int8WeightOnlyConfig(), int8_skipped(module)
        for linear in [m for m in module.modules() if isinstance(m, nn.Linear) and id(m) not in skipped]:
            quantize_(linear, config)  # one Linear at a time, as streaming does: torchao's own filter still applies
        release_freed_memory()
    return module
