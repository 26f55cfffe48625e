"""The pretraining stages: the same weights with rendering workers, and a stage of another configuration never reused."""

import json

import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from toyworld.models import make_text_encoder, make_unet, make_vae
from toyworld.runtime import Stage
from toyworld.stages import train_base, train_vae
from toyworld.world import split_identities
from zeroft.errors import InputError


def test_a_stage_trains_the_same_with_rendering_workers(tmp_path):
    train_ids, _ = split_identities()
    for workers in (0, 2):
        train_vae(tmp_path / f"w{workers}", train_ids, steps=3, seed=0, workers=workers)
    first, second = (load_file(str(tmp_path / f"w{w}" / "vae" / "diffusion_pytorch_model.safetensors")) for w in (0, 2))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_vae_of_another_latent_size_is_not_reused(tmp_path):
    train, _ = split_identities()
    (tmp_path / "done.json").write_text(json.dumps({"steps": 3, "seconds": 1.0}))  # older builds: 16×16, unsaid
    assert train_vae(tmp_path, train, 3, 0)["steps"] == 3
    with pytest.raises(InputError, match="VAE onto 16² latents, not 32²"):
        train_vae(tmp_path, train, 3, 0, latent_size=32)
    # A half-trained 32² VAE, resumed as 16²: a plain message naming the clash.
    (tmp_path / "done.json").unlink()
    vae = make_vae(0, 32)
    stage = Stage(tmp_path, {"vae": vae}, torch.optim.AdamW(vae.parameters()), 3, config={"latent_size": 32})
    stage.maybe_save(force=True)
    with pytest.raises(InputError, match="latent_size 32, not 16"):
        train_vae(tmp_path, train, 3, 0)


def test_a_base_built_with_another_unet_is_not_reused(tmp_path):
    (tmp_path / "done.json").write_text(json.dumps({"steps": 3, "seconds": 1.0}))  # a v1 base (older builds say nothing)
    train, _ = split_identities()
    assert train_base(tmp_path, train, make_vae(0), 3, 0)["steps"] == 3
    with pytest.raises(InputError, match="'v1' UNet, not 'attn16'"):
        train_base(tmp_path, train, make_vae(0), 3, 0, unet_variant="attn16")


def test_a_half_trained_base_of_another_unet_is_a_clear_error(tmp_path):
    """A killed attn16 base stage, resumed as v1 (or the other way round): a plain message, not a shape traceback."""
    unet, text_encoder = make_unet(0, "attn16"), make_text_encoder(0)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    stage = Stage(tmp_path, {"unet": unet, "text_encoder": text_encoder, "ema": EMAModel(parameters)},
                  torch.optim.AdamW(parameters), 10, config={"unet": "attn16"})
    stage.step = 4
    stage.maybe_save(force=True)
    train, _ = split_identities()
    with pytest.raises(InputError, match="half-trained state made with unet 'attn16', not 'v1'"):
        train_base(tmp_path, train, make_vae(0), 10, 0)
    # a state saved before the config was recorded: its weights do not fit, which says the same plainly
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    del state["config"]
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(InputError, match="does not fit this stage's models .*another --work folder"):
        train_base(tmp_path, train, make_vae(0), 10, 0)
    # the same variant resumes where it stopped
    unet, text_encoder = make_unet(0, "attn16"), make_text_encoder(0)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    resumed = Stage(tmp_path, {"unet": unet, "text_encoder": text_encoder, "ema": EMAModel(parameters)},
                    torch.optim.AdamW(parameters), 10, config={"unet": "attn16"})
    assert resumed.step == 4
