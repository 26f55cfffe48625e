"""Pooled against patch tokens in the toy world (toyworld.experiments.tokens): the toy's ResNet encoder gives patch
tokens, the Plus variant is the paper's recipe with only the projection changed, and a short real run of it trains
a Plus checkpoint that loads and generates."""

from dataclasses import asdict, replace
from pathlib import Path

import torch

from toyworld.budget import QUICK, Budget, train_config, with_overrides
from toyworld.experiments import copying, tokens
from train.train import run as train_run
from zeroft import ZeroFTConfig, ZeroFTPipeline
from zeroft.encoder import ObjectEncoder

SHIPPED = Path("assets/zeroft-toy")
JUDGE = Path("assets/toyworld-judge/judge.safetensors")


def test_the_toy_resnet_encoder_gives_its_grid_with_the_mean_in_front(photo):
    pipe = ZeroFTPipeline.from_pretrained(SHIPPED, device="cpu")
    encoder: ObjectEncoder = pipe.object_encoder
    pixels = encoder.preprocess(photo, torch.ones(64, 64, dtype=torch.bool).numpy()).unsqueeze(0)
    visual = encoder.visual
    with torch.no_grad():
        grid = visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels.to(encoder.dtype))))).flatten(2).transpose(1, 2)
    views = {"none": 1, "flip": 2}[encoder.config.views]
    out = encoder.tokens(pixels)
    assert encoder.token_width == 256 and out.shape == (1, views * 17, 256)
    assert torch.allclose(out[0, 1:17], grid[0], atol=1e-5) and torch.allclose(out[0, 0], grid[0].mean(0), atol=1e-5)
    assert encoder.null_tokens().shape == (1, views * 17, 256)


def test_the_plus_variant_is_the_recipe_with_only_the_projection_changed(tmp_path):
    recipe = train_config(tmp_path, Budget(zeroft=1000), 0, [], tmp_path / "out")
    assert tokens.VARIANTS["paper_recipe"] == {}
    plus = asdict(with_overrides(recipe, tokens.VARIANTS["paper_recipe_plus"]))
    assert {k for k, v in asdict(recipe).items() if plus[k] != v} == {"projection", "num_tokens", "resampler_width"}
    assert (plus["projection"], plus["num_tokens"]) == ("plus", 16)


def test_a_short_real_plus_run_trains_a_checkpoint_that_loads_and_generates(tmp_path, photo):
    small = replace(QUICK, zeroft_batch=4, zeroft=2, checkpoint_every=2)
    copying.prepare(SHIPPED, tmp_path, JUDGE.parent, small, 0)
    output = tmp_path / "plus"
    train_run(with_overrides(train_config(tmp_path, small, 0, [], output), tokens.PLUS))
    config = ZeroFTConfig.load(output / "final")
    assert (config.projection, config.num_tokens, config.image_embed_dim) == ("plus", 16, 256)
    pipe = ZeroFTPipeline.from_pretrained(output / "final", device="cpu")
    image = pipe("one object on a white background", photo, num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)
