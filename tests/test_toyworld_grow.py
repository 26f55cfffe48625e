"""Growing a lat32 model out of a trained v1 one: the level mapping, a quick grown build, and its refusals."""

import shutil
from pathlib import Path

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file

from toyworld.__main__ import run
from toyworld.grow import graft, merged_frequencies, source_name
from toyworld.models import make_unet
from zeroft import ZeroFTPipeline
from zeroft.config import ZeroFTConfig
from zeroft.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_graft_maps_each_v1_level_one_level_down():
    """lat32 = v1's levels under a new 32×32 level: v1 level i is lat32 level i + 1, the middle block and the time
    embedding carry over, and everything taken has the source's values."""
    assert source_name("down_blocks.2.attentions.0.proj_in.weight") == "down_blocks.1.attentions.0.proj_in.weight"
    assert source_name("up_blocks.1.resnets.0.conv1.weight") == "up_blocks.1.resnets.0.conv1.weight"
    assert source_name("mid_block.resnets.0.conv1.bias") == "mid_block.resnets.0.conv1.bias"
    assert source_name("down_blocks.0.resnets.0.conv1.weight") is None  # the new 32×32 level
    assert source_name("up_blocks.3.resnets.0.conv1.weight") is None and source_name("conv_in.weight") is None
    v1, lat32 = make_unet(1, "v1"), make_unet(2, "lat32", 256)  # as grow.py makes it
    assert lat32.config.sample_size == 32 and lat32.time_embedding.linear_2.out_features == 256
    fresh = {k: v.clone() for k, v in lat32.state_dict().items()}
    report = graft(lat32, v1.state_dict())
    after, source = lat32.state_dict(), v1.state_dict()
    assert report["parameters_taken"] > 20 * report["parameters_new"]  # most of the model carries over
    attn = "transformer_blocks.0.attn2.to_k.weight"
    assert torch.equal(after[f"down_blocks.3.attentions.0.{attn}"], source[f"down_blocks.2.attentions.0.{attn}"])
    # The timestep embedding carries over, so every grafted resnet keeps its time input.
    assert torch.equal(after["time_embedding.linear_2.weight"], source["time_embedding.linear_2.weight"])
    assert torch.equal(after["down_blocks.2.resnets.0.time_emb_proj.weight"],
                       source["down_blocks.1.resnets.0.time_emb_proj.weight"])
    # lat32's 32-dimensional sinusoid is v1's 64-dimensional one at the even frequencies (cos half, then sin half)...
    t = torch.tensor([0.0, 17.0, 500.0, 999.0])
    even = [*range(0, 32, 2), *range(32, 64, 2)]
    assert torch.allclose(get_timestep_embedding(t, 32, True, 0), get_timestep_embedding(t, 64, True, 0)[:, even],
                          atol=1e-5)
    # ...so linear_1 takes v1's columns there, each with the next odd frequency's column added.
    w = source["time_embedding.linear_1.weight"]
    assert torch.equal(after["time_embedding.linear_1.weight"], merged_frequencies(w, 32))
    assert torch.equal(merged_frequencies(w, 32)[:, 0], w[:, 0] + w[:, 1])
    assert torch.equal(merged_frequencies(w, 32)[:, 16], w[:, 32] + w[:, 33])
    with pytest.raises(ValueError, match="cannot map"):
        merged_frequencies(w, 16)
    assert torch.equal(after["conv_in.weight"], fresh["conv_in.weight"])  # new: 4 latent channels, not 8
    assert torch.equal(after["down_blocks.0.resnets.0.conv1.weight"], fresh["down_blocks.0.resnets.0.conv1.weight"])
    # The first 16×16 resnet now takes 32 channels from the new level, not 64 from conv_in: it stays new.
    assert torch.equal(after["down_blocks.1.resnets.0.conv1.weight"], fresh["down_blocks.1.resnets.0.conv1.weight"])
    assert report["tensors_taken"] + report["tensors_new"] == len(after)


def test_quick_build_grown_from_the_shipped_checkpoint(tmp_path):
    """--grow-from: no encoder or base training; the zeroft stage starts from the grown model (the shipped adapter
    and object encoder, v1's inner levels) and the export takes --defaults-from's views and guidance, no sweeps."""
    shipped = ROOT / "assets" / "zeroft-toy"
    (tmp_path / "assets" / "toyworld-judge").mkdir(parents=True)
    for name in ("judge.safetensors", "judge.json"):
        shutil.copyfile(ROOT / "assets" / "toyworld-judge" / name, tmp_path / "assets" / "toyworld-judge" / name)
    argv = ["build", "--quick", "--unet", "lat32", "--grow-from", str(shipped), "--defaults-from", str(shipped),
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--assets", str(tmp_path / "assets"),
            "--device", "cpu", "--workers", "0"]
    report = run(argv)
    assert set(report["stages"]) >= {"vae", "grow", "judge", "zeroft"} and "base" not in report["stages"]
    assert report["stages"]["grow"]["adapter_layers"] == 7 and report["stages"]["judge"]["copied_from"]
    assert "guidance_sweep_on_training_identities" not in report
    encoder = load_file(str(tmp_path / "work" / "encoder" / "encoder" / "open_clip_model.safetensors"))
    assert all(torch.equal(v, load_file(str(shipped / "encoder" / "open_clip_model.safetensors"))[k])
               for k, v in encoder.items())
    config, source = ZeroFTConfig.load(tmp_path / "out"), ZeroFTConfig.load(shipped)
    assert config.encoder.views == source.encoder.views
    assert (config.defaults.text_guidance, config.defaults.object_guidance) == (
        source.defaults.text_guidance, source.defaults.object_guidance)
    assert config.training["init_checkpoint"].endswith("init")
    pipe = ZeroFTPipeline.from_pretrained(tmp_path / "out", device="cpu")
    assert pipe.unet.config.sample_size == 32 and pipe.vae.config.latent_channels == 4
    image = tmp_path / "assets" / "examples" / "object-01.png"
    assert pipe("one object on a white background", object_image=image, num_inference_steps=2, seed=0).images[0].size == (64, 64)
    # Its evaluation has no fine-tuning row: a grown build has no trained base model to fine-tune.
    result = run(["eval", "--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--references", "1",
                  "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"),
                  "--out", str(tmp_path / "eval"), "--device", "cpu", "--identities", "1"])
    assert "grown from" in result["finetune_skipped"] and not any("fine-tuning" in row for row in result["rows"])
    assert result["rows"]["zeroft"]["pairs"] == 8  # one held-out identity x 8 contexts
    # The same work folder cannot grow from another checkpoint.
    with pytest.raises(InputError, match="not one grown from"):
        run([*argv[:5], str(tmp_path / "out"), *argv[6:]])


def test_grow_needs_the_lat32_unet_and_a_checkpoint(tmp_path):
    shipped = str(ROOT / "assets" / "zeroft-toy")
    with pytest.raises(InputError, match="add --unet lat32"):
        run(["build", "--quick", "--grow-from", shipped, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
             "--assets", str(tmp_path / "a"), "--device", "cpu", "--workers", "0", "--vae-steps", "1"])
    with pytest.raises(InputError, match="no zeroft checkpoint there"):
        run(["build", "--quick", "--unet", "lat32", "--grow-from", str(tmp_path), "--work", str(tmp_path / "w")])
