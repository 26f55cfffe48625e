"""The embedded checkpoint shipped in assets/: self-contained, the default, and it follows its reference photo."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zeroft
from zeroft.presets import EMBEDDED_CHECKPOINT

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "assets" / "examples"
JUDGE = REPO_ROOT / "assets" / "toyworld-judge" / "judge.safetensors"


@pytest.fixture(scope="module")
def pipe():
    return zeroft.load_pipeline(str(EMBEDDED_CHECKPOINT), device="cpu")


def test_the_embedded_checkpoint_is_self_contained():
    files = [p for p in EMBEDDED_CHECKPOINT.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".safetensors"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    config = json.loads((EMBEDDED_CHECKPOINT / "zeroft_config.json").read_text())
    assert config["licenses"]["spdx"] == "apache-2.0"
    assert (EMBEDDED_CHECKPOINT / "README.md").is_file()


def test_the_cli_and_the_app_default_to_it():
    from webapp.catalogue import allowed_checkpoints
    from zeroft.cli import _checkpoint

    assert allowed_checkpoints()[0] == str(EMBEDDED_CHECKPOINT)
    assert _checkpoint(None) == str(EMBEDDED_CHECKPOINT)


def test_it_generates_on_cpu_with_its_own_defaults(pipe):
    example = json.loads((EXAMPLES / "examples.json").read_text())[0]
    photo = Image.open(EXAMPLES / example["image"])
    first = pipe(example["prompt"], object_image=photo, num_images=2, seed=5)
    again = pipe(example["prompt"], object_image=photo, num_images=2, seed=5)
    assert [im.size for im in first.images] == [(64, 64)] * 2
    defaults = pipe.zeroft_config.defaults
    assert first.seeds == again.seeds
    for a, b in zip(first.images, again.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert defaults.steps > 0 and defaults.object_guidance > 0


def test_it_draws_the_held_out_reference_not_just_the_text(pipe):
    """The judge reads the generations for the six held-out examples: the reference's colour and the prompt's
    background come through far above chance (1/6 and 1/4), and object guidance 0 loses the colour."""
    from toyworld.evaluate import judge_images, load_judge
    from toyworld.world import BACKGROUNDS, COLOURS

    judge = load_judge(JUDGE)
    examples = json.loads((EXAMPLES / "examples.json").read_text())
    colours, backgrounds, without_object = [], [], []
    for example in examples:
        photo = Image.open(EXAMPLES / example["image"])
        embeds = pipe.encode_object(photo)[0]
        with_object = pipe(example["prompt"], image_embeds=embeds, num_images=2, seed=11).images
        text_only = pipe(example["prompt"], image_embeds=embeds, num_images=2, seed=11, object_guidance=0.0).images
        read = judge_images(judge, with_object)
        read_text_only = judge_images(judge, text_only)
        colour = list(COLOURS).index(example["identity"].split()[0])
        background = list(BACKGROUNDS).index(example["prompt"].split()[-2])
        colours += list(read["colour"] == colour)
        backgrounds += list(read["background"] == background)
        without_object += list(read_text_only["colour"] == colour)
    assert np.mean(colours) >= 0.6, np.mean(colours)
    assert np.mean(backgrounds) >= 0.6, np.mean(backgrounds)
    assert np.mean(without_object) < np.mean(colours)
