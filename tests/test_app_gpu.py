"""The app's GPU face on this CPU: CUDA availability simulated, a stand-in ``spaces`` module, a tiny checkpoint
standing in for the real preset, and "moving to cuda" simulated by loading on the CPU.

What is checked: the default model on a GPU; ZeroGPU's load-once-at-start path; the duration asked of
``@spaces.GPU``; that what crosses into the GPU worker pickles and what comes back holds PIL images and no
tensors; the real example photos and their committed masks.
"""

import functools
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zeroft
from webapp import handlers as app_handlers
from webapp import zerogpu as app_zerogpu
from webapp.catalogue import CHECKPOINT_ENV, GPU_PRESETS, REAL_DEFAULT, Checkpoints, default_checkpoint
from webapp.editor import latest
from webapp.examples import load_examples
from webapp.handlers import Handlers
from webapp.launch import create_app
from webapp.paths import APP_DIR, REAL_EXAMPLES

from conftest import square_photo


def _props(demo, elem_id: str) -> dict:
    return next(c["props"] for c in demo.config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def _column_visibility(demo) -> list[bool]:
    """Visibility of the columns that hold the two example sets, in layout order (toy, real)."""
    parents = {}

    def walk(node, parent):
        parents[node["id"]] = parent
        for child in node.get("children", []):
            walk(child, node["id"])

    walk(demo.config["layout"], None)
    components = {c["id"]: c for c in demo.config["components"]}
    datasets = [c["id"] for c in demo.config["components"] if c["type"] == "dataset"]
    return [components[parents[d]]["props"].get("visible", True) for d in datasets]


@pytest.fixture
def gpu_machine(monkeypatch):
    """CUDA present (simulated) and the Hub reachable, as on a GPU machine; no default set by the operator."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)


def test_the_default_model_follows_the_machine(monkeypatch):
    """--checkpoint, else $ZEROFT_CHECKPOINT, else the real preset on a GPU, else the toy model."""
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    assert default_checkpoint() is None  # this CPU: the embedded toy model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_checkpoint() is None  # a GPU with the Hub switched off (HF_HUB_OFFLINE=1) offers no preset
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert default_checkpoint() == REAL_DEFAULT == "ip-adapter-plus-sdxl-vit-h"
    monkeypatch.setenv(CHECKPOINT_ENV, "ip-adapter-sd15")
    assert default_checkpoint() == "ip-adapter-sd15"
    assert default_checkpoint("zeroft-toy") == "zeroft-toy"


def test_a_gpu_machine_opens_on_the_real_model_with_real_photos(gpu_machine):
    """The page a first-time visitor gets on a GPU: SDXL selected (its size and guidance), the real photos as
    examples, no toy note; nothing is loaded off ZeroGPU (the model loads on the first request)."""
    zeroft.pipeline_cache.clear()
    demo = create_app()
    assert len(zeroft.pipeline_cache) == 0
    model = _props(demo, "checkpoint")
    assert model["value"] == REAL_DEFAULT
    assert [c[0] for c in model["choices"]] == [REAL_DEFAULT, "zeroft-toy", "ip-adapter-sd15", "ip-adapter-sdxl-vit-h",
                                                "ip-adapter-sdxl", "ip-adapter-plus-sd15", "ip-adapter-flux-dev"]
    assert _props(demo, "toy-note")["visible"] is False
    assert _column_visibility(demo) == [False, True]
    assert _props(demo, "size")["value"] == 1024 and _props(demo, "text-guidance")["value"] == 5.0
    assert _props(demo, "prompt")["value"] == load_examples(REAL_EXAMPLES)[0].prompt
    handlers = Handlers(Checkpoints(default_checkpoint()))
    shown = [update["visible"] for update in handlers.model_view("zeroft-toy")]
    assert shown == [True, True, False, False, False]  # the toy model brings its note and examples back (no FLUX slider)


def test_the_readmes_way_to_the_toy_demo_on_a_gpu_machine(gpu_machine):
    """README's quick start: on a CUDA machine `bash run.sh app --checkpoint zeroft-toy` opens the embedded model."""
    import re

    readme = (APP_DIR / "README.md").read_text()
    assert re.search(r"`bash run.sh app\s+--checkpoint zeroft-toy`", readme)
    from webapp.launch import parse_args

    demo = create_app(parse_args(["--checkpoint", "zeroft-toy"]).checkpoint)
    assert _props(demo, "checkpoint")["value"] == "zeroft-toy" and _props(demo, "toy-note")["visible"] is True
    assert _column_visibility(demo) == [True, False]


def test_a_cpu_machine_says_it_is_the_toy_demo(monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    demo = create_app()
    note = _props(demo, "toy-note")
    assert note["visible"] is True and "CPU demo" in note["value"] and "coloured shapes" in note["value"]
    assert all(name in note["value"] for name in GPU_PRESETS)
    assert _column_visibility(demo) == [True, False]


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for item in value for t in _tensors(item)] if isinstance(value, (list, tuple)) else []


class StandInSpaces(types.ModuleType):
    """Records how ``spaces.GPU`` is applied and called; each call pickles what ZeroGPU would send to its worker."""

    def __init__(self):
        super().__init__("spaces")
        self.decorated, self.durations = [], []

    def GPU(self, function=None, *, duration=None, size=None):  # noqa: N802 (spaces' own name)
        self.decorated.append((function, duration))

        @functools.wraps(function)
        def on_worker(*args, **kwargs):
            self.durations.append(duration(*args, **kwargs) if callable(duration) else duration)
            pickle.loads(pickle.dumps((args, {k: v for k, v in kwargs.items() if k != "progress"})))
            result = function(*args, **kwargs)
            assert not _tensors(result)  # a CUDA tensor returned from the worker hangs ZeroGPU
            pickle.loads(pickle.dumps(result))
            return result

        return on_worker


def test_zerogpu_loads_at_start_once_and_generates_pil_images(monkeypatch, tiny_checkpoint):
    """On ZeroGPU (simulated): the default model loads to cuda when the app is built, not in the GPU call;
    generation asks for its computed duration, sends picklable arguments and returns PIL images."""
    stand_in = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", stand_in)
    monkeypatch.setattr(app_zerogpu, "spaces", stand_in)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv(CHECKPOINT_ENV, str(tiny_checkpoint))  # the tiny model stands in for the preset
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    loads = []
    load = zeroft.loading.load_pipeline

    def load_to_cuda(checkpoint, **kwargs):  # "moving to cuda": recorded, then done on the CPU
        loads.append((str(kwargs["device"]), kwargs["dtype"]))
        return load(checkpoint, **{**kwargs, "device": torch.device("cpu"), "dtype": torch.float32})

    monkeypatch.setattr(zeroft.loading, "load_pipeline", load_to_cuda)
    zeroft.pipeline_cache.clear()
    try:
        demo = create_app()
        assert loads == [("cuda", torch.bfloat16)]  # at start-up, before any request
        (function, duration), = stand_in.decorated
        assert function.__name__ == "generate" and callable(duration)
        generate = next(f.fn for f in demo.fns.values() if f.api_name == "generate")
        name = tiny_checkpoint.name
        handlers = Handlers(Checkpoints(str(tiny_checkpoint)))
        session = handlers.on_upload(zeroft.load_image(square_photo()), name)
        editor = {"background": latest(session).background, "layers": [], "composite": None}
        gallery, settings, seed = generate(editor, "a red square", "", 5.0, 3.0, 2, 2, 7, False, 64, "none", name,
                                           False, 0.28, 5.42, None, session, progress=lambda *args, **kwargs: None)
        assert loads == [("cuda", torch.bfloat16)]  # the GPU call used the model loaded at start-up
        assert stand_in.durations == [app_zerogpu.gpu_seconds(steps=2, num_images=2, size=64, backbone="sd",
                                                               native_size=64)]
        assert len(gallery) == 2 and all(isinstance(image, Image.Image) for image, _ in gallery)
        assert settings["seeds"] == [7, 8] and seed == 7
    finally:
        zeroft.pipeline_cache.clear()


def test_off_zerogpu_spaces_changes_nothing():
    def f():
        return 1

    assert not app_zerogpu.on_zerogpu() and app_zerogpu.gpu(f, lambda: 5) is f  # the real spaces package
    assert app_zerogpu.preload(lambda: pytest.fail("loaded off ZeroGPU")) is None


def test_gpu_duration_grows_with_steps_images_and_backbone():
    offered = Checkpoints(REAL_DEFAULT)
    offered._add("ip-adapter-sd15")
    seconds = Handlers(offered).gpu_seconds

    def ask(name, steps=30, n=1, size=None):
        return seconds(None, "", "", 5.0, 5.0, steps, n, 0, False, size or offered.native_size(name), "none", name)

    sdxl, sd15 = ask(REAL_DEFAULT), ask("ip-adapter-sd15")
    assert app_zerogpu.OVERHEAD_SECONDS < sd15 < sdxl < ask(REAL_DEFAULT, n=2) < ask(REAL_DEFAULT, n=4)
    assert ask(REAL_DEFAULT, steps=10) < sdxl and ask(REAL_DEFAULT, size=512) < sdxl
    assert ask(REAL_DEFAULT, steps=100, n=8) == app_zerogpu.MAX_DURATION
    assert seconds(None, "", "", 5.0, 5.0, None, 1, 0, False, 1024, "none", REAL_DEFAULT) == app_zerogpu.OVERHEAD_SECONDS


def test_real_examples_use_their_committed_masks(monkeypatch):
    """Each real photo (licence recorded) gets its committed mask, even where the masker's model is missing."""
    examples = load_examples(REAL_EXAMPLES)
    licences = (REAL_EXAMPLES / "LICENSES.md").read_text()
    assert len(examples) >= 3
    monkeypatch.setattr(app_handlers, "masker_for", lambda spec: pytest.fail("the masker ran on an example photo"))
    preset = Checkpoints(REAL_DEFAULT).config(REAL_DEFAULT)
    for example in examples:
        photo = zeroft.load_image(example.image)
        assert max(photo.rgb.size) <= 768 and Image.open(example.image).format == "PNG"
        assert Path(example.image).name in licences and " it" in example.prompt  # the paper's style of prompt
        mask = app_handlers.automatic(photo, preset).mask
        committed = np.asarray(Image.open(example.mask).convert("L"), np.float32) / 255
        assert mask.shape == committed.shape == (photo.rgb.height, photo.rgb.width)
        assert np.array_equal(mask >= 0.5, committed >= 0.5) and 0.01 < (mask >= 0.5).mean() < 0.9
    assert sum(p.stat().st_size for p in REAL_EXAMPLES.iterdir()) < 2 * 2**20


def test_space_front_matter_names_the_presets_weights(tmp_path_factory):
    """README's front matter: every preset's Hub repositories under models:, and preload_from_hub exactly the files
    that loading the app's GPU default fetches (IPAdapterPreset.hub_files), expanded over a copy of the public
    repositories' layout that also holds files zeroft never reads (SDXL's vae_1_0/, fp16 copies, the single file)."""
    import fnmatch

    import yaml
    from hubcache import write_public_repos

    readme = (APP_DIR / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["app_file"] == "app.py" and front["python_version"] == "3.10.13"  # the one ZeroGPU runs
    assert front["suggested_hardware"] == "a10g-large"  # a flavour the Spaces config reference lists (24 GB)
    presets = zeroft.presets.IP_ADAPTER_PRESETS
    assert set(front["models"]) == {repo for p in presets.values() for repo in p.hub_files()}  # bases, adapters, encoders
    preload = {line.split()[0]: sorted(line.split()[1].split(",")) for line in front["preload_from_hub"]}
    repos = write_public_repos(tmp_path_factory.mktemp("public-repos"))
    fetched = {}
    for repo, patterns in presets[REAL_DEFAULT].hub_files().items():
        listing = [p.relative_to(repos[repo]).as_posix() for p in repos[repo].rglob("*") if p.is_file()]
        fetched[repo] = sorted(name for name in listing if any(fnmatch.fnmatch(name, pattern) for pattern in patterns))
    assert preload == fetched
    assert not any("vae_1_0" in name or "fp16" in name for names in fetched.values() for name in names)


def test_a_real_example_generates_with_its_committed_mask(tiny_checkpoint, monkeypatch):
    """Clicked (no session, nothing painted), a real example is encoded with its committed mask: no masker runs."""
    monkeypatch.setattr(app_handlers, "masker_for", lambda spec: pytest.fail("the masker ran on an example photo"))
    handlers = Handlers(Checkpoints(str(tiny_checkpoint)))
    example = load_examples(REAL_EXAMPLES)[0]
    editor = {"background": zeroft.load_image(example.image), "layers": [], "composite": None}
    gallery, settings, _ = handlers.generate(editor, example.prompt, "", 5.0, 3.0, 2, 1, 0, False, 64, "none",
                                             tiny_checkpoint.name, progress=lambda *args, **kwargs: None)
    assert len(gallery) == 1 and settings["masks"] == ["given"]
