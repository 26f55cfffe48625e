"""What the app does differently on a ZeroGPU Space (Hugging Face Spaces with dynamic GPUs), and nothing elsewhere.

The Spaces documentation for ZeroGPU (https://huggingface.co/docs/hub/spaces-zerogpu) asks for:
``spaces`` imported before anything initialises CUDA (app.py and the webapp package import this module first); models
loaded and moved to ``cuda`` at start-up, outside the ``@spaces.GPU`` function (moving them
inside it, on each call, is much slower); a ``duration`` per call, which may be a function of the
call's inputs (shorter requests queue sooner); no CUDA tensors returned; and arguments that
pickle, since they cross into the GPU worker process.

Off ZeroGPU ``spaces.GPU(f)`` is ``f``, and the app loads its model lazily on the first request,
so a CPU machine starts in seconds.
"""

from __future__ import annotations

try:  # before torch: on ZeroGPU, spaces patches CUDA initialisation
    import spaces
except ImportError:  # spaces is optional off Spaces
    spaces = None

import math
import os
from collections.abc import Callable

# Assumed seconds of one unit of zeroft.validation.estimate_seconds (one UNet call, one image at the
# backbone's native size) on ZeroGPU's slice of an H200 (70 GB, "NVIDIA H200 MIG 3g.71gb" as spaces names
# it: 60 of the H200's 132 SMs) in fp16. Not measured on that slice: scaled from the usual fp16 figures
# of the stock pipelines on a whole A100 (SD1.5 at 512 px about 25 steps/s with classifier-free
# guidance, i.e. ~0.02 s per image per call; SDXL at 1024 px about 7 steps/s, ~0.07 s), x1.5 for a
# slice with under half the SMs but a faster memory. Too long costs only queue priority; too short
# ends the call, so SAFETY adds room.
# FLUX.1 [dev] at 1024 px: an assumption, 6x SDXL's unit (its transformer has 11.9B parameters to the SDXL UNet's
# 2.6B, and attends jointly over 4096 image and 512 text tokens); not measured on any GPU yet.
UNIT_SECONDS = {"sd": 0.03, "sdxl": 0.10, "flux": 0.6}
OVERHEAD_SECONDS = 15  # encoding the photo, decoding the images, moving them off the GPU, the first call's warm-up
SAFETY = 1.5
# ZeroGPU's GPUs are H200 slices (compute capability 9.0), where zeroft.quantization.pick_dtype picks bf16;
# named here because the main process has no GPU until a call, so it must not ask CUDA for its capability.
ZEROGPU_DTYPE = "bf16"
MAX_DURATION = 300  # s: the most one ZeroGPU call asks for


def on_zerogpu() -> bool:
    """Whether this process runs on a ZeroGPU Space: the environment variable spaces itself reads."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu_seconds(*, steps: int, num_images: int, size: int, backbone: str, native_size: int,
                branches: int = 3) -> int:
    """Seconds of GPU to ask ZeroGPU for: steps x images x guidance branches x pixels, at the backbone's unit.

    Args:
        steps, num_images, size: the request's sampler steps, images and output side.
        backbone: zeroft.backbones name (``"sd"``, ``"sdxl"``); an unknown one counts as ``"sdxl"``.
        native_size: the backbone's native side in pixels.
        branches: guidance branches per step (3, the worst case, unless known).
    """
    from zeroft.validation import estimate_seconds

    unit = UNIT_SECONDS.get(backbone, UNIT_SECONDS["sdxl"])
    work = estimate_seconds(steps=steps + 1, num_images=num_images, height=size, width=size,  # +1: PNDM's extra call
                            native_size=native_size, unit_seconds=unit, branches=branches)
    return int(min(MAX_DURATION, math.ceil(OVERHEAD_SECONDS + SAFETY * work)))


def gpu(function: Callable, duration: Callable | None = None) -> Callable:
    """``function`` run on a ZeroGPU worker for ``duration(*args, **kwargs)`` seconds; ``function`` itself elsewhere."""
    if spaces is None:
        return function
    return spaces.GPU(function, duration=duration) if duration else spaces.GPU(function)


def preload_device() -> str:
    """Where the start-up load puts the model: ``cuda`` (on ZeroGPU the main process reports CUDA as available,
    spaces patches torch for it; app.py's real default rests on the same answer), else the CPU, so that a
    ZeroGPU stand-in on a machine without CUDA starts too."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def preload(load: Callable[[], object]) -> object | None:
    """Load the default model now, to ``cuda``, where ZeroGPU needs it at start-up; elsewhere nothing (lazy)."""
    return load() if on_zerogpu() else None
