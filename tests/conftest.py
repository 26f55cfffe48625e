"""Shared fixtures: tiny real models built from configs, sample photos; never any download."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped elsewhere)")
    config.addinivalue_line("markers", "browser: drives Debian's chromium through Playwright")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def square_photo(colour=(220, 30, 30), background=(30, 30, 220), size=64, box=(16, 16, 48, 48)) -> Image.Image:
    """A coloured square on a plain background: an 'object' the border masker finds exactly."""
    photo = Image.new("RGB", (size, size), background)
    photo.paste(colour, box)
    return photo


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from zeroft.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_pipe(tiny_checkpoint):
    from zeroft import ZeroFTPipeline

    pipe = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def photo():
    return square_photo()


@pytest.fixture
def other_photo():
    return square_photo(colour=(30, 200, 30), box=(8, 20, 40, 52))


def image_array(images) -> np.ndarray:
    return np.stack([np.asarray(i, dtype=np.float32) for i in images])
