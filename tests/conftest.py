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


@pytest.fixture(autouse=True)
def no_memory_check_for_tiny_stand_ins(monkeypatch):
    """The presets' measured CPU peaks (zeroft.memory) are those of the real models; the tests load tiny stand-ins
    under the presets' names, so the check is off unless a test sets the memory it wants to see."""
    from zeroft import memory

    monkeypatch.setattr(memory, "available_gib", lambda: None)


def square_photo(colour=(220, 30, 30), background=(30, 30, 220), size=64, box=(16, 16, 48, 48)) -> Image.Image:
    """A coloured square on a plain background: an 'object' the border masker finds exactly."""
    photo = Image.new("RGB", (size, size), background)
    photo.paste(colour, box)
    return photo


class FakeClock:
    """A clock each of whose readings is ``dt`` seconds after the last: every timed interval takes ``dt``
    (change ``dt`` to make the machine slower or faster from then on)."""

    def __init__(self, dt: float):
        self.now, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.now += self.dt
        return self.now


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


@pytest.fixture(scope="session")
def tiny_sdxl_checkpoint(tmp_path_factory):
    from zeroft.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-sdxl-checkpoint"), backbone="sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_pipe(tiny_sdxl_checkpoint):
    from zeroft import load_pipeline

    pipe = load_pipeline(tiny_sdxl_checkpoint, device="cpu")
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


def write_tiny_u2net(folder) -> None:
    """A u2net-shaped ONNX model (input 1x3x320x320 → 1x1x320x320) that rembg loads offline.

    It scores red minus blue, one 1x1 convolution, so a red object on a blue background gets
    a clean mask; the code path through rembg and onnxruntime is the real one.
    """
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [4.0, 0.0, -4.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w"], ["score"]), helper.make_node("Sigmoid", ["score"], ["mask"])],
        "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "u2net.onnx"))


@pytest.fixture
def u2net_home(tmp_path, monkeypatch):
    folder = tmp_path / "u2net"
    write_tiny_u2net(folder)
    monkeypatch.setenv("U2NET_HOME", str(folder))
    return folder
