"""``python -m toyworld ablations``: each variant is the recipe with its overrides, and a run of some variants keeps
the rows of the others."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toyworld.budget import Budget, train_config, with_overrides
from toyworld.experiments import recipes
from toyworld.experiments.ablations import VARIANTS, run_ablations
from toyworld.stages import train_vae
from toyworld.world import split_identities


@pytest.mark.parametrize("variants", [VARIANTS, recipes.VARIANTS], ids=["ablations", "recipes"])
def test_every_variant_is_the_recipe_with_its_overrides(tmp_path, variants):
    """Each variant changes only its overrides: same base, streams, steps, batch and seed as the recipe."""
    recipe = train_config(tmp_path, Budget(zeroft=500), 0, [], tmp_path / "ablations" / "recipe")
    for name, overrides in variants.items():
        config = with_overrides(recipe, overrides)
        for setting, value in overrides.items():
            holder = config.regularization if hasattr(config.regularization, setting) else config
            assert getattr(holder, setting) == value, name
        undone = {s: getattr(recipe.regularization if hasattr(recipe.regularization, s) else recipe, s) for s in overrides}
        assert with_overrides(config, undone) == recipe and (config == recipe) == (not overrides), name


def test_ablations_only_adds_rows_and_keeps_earlier_ones(tmp_path):
    """``ablations --only X`` must not erase the rows of variants trained in earlier runs."""
    folder = tmp_path / "ablations"
    folder.mkdir()
    earlier = {"recipe": {"overrides": [], "steps": 500, "checkpoint": "x", "samples_per_second": 40.0}}
    (folder / "ablations.json").write_text(json.dumps(earlier))
    final = folder / "r=1" / "final"  # already trained: the run only records it
    final.mkdir(parents=True)
    (final / "zeroft_config.json").write_text(json.dumps({"training": {"samples_per_second": 32.0, "batch_size": 32}}))
    report = run_ablations(tmp_path, steps=500, only=["r=1"])
    written = json.loads((folder / "ablations.json").read_text())
    assert set(written) == set(report) == {"recipe", "r=1"}
    assert written["recipe"] == earlier["recipe"]
    assert written["r=1"]["overrides"] == {"mix_ratio": 1.0} and written["r=1"]["train_seconds"] == 500.0


def test_the_ip_adapter_variant_is_ip_adapters_trainer(tmp_path):
    """Issue 29's variant 1: the target itself as condition (ω = 0), unmasked, general images conditioned on their
    own photo, adapter only; the others are the paper's recipe with one change each."""
    config = with_overrides(train_config(tmp_path, Budget(), 0, [], tmp_path / "out"),
                            recipes.VARIANTS["ip_adapter_recipe"])
    reg = config.regularization
    assert (reg.cross_reference, reg.mask_condition, reg.drop_general_object, config.train) == (0.0, False, False, "adapter")
    assert recipes.VARIANTS["paper_recipe"] == {}
    assert [len(v) for k, v in recipes.VARIANTS.items() if k.startswith("paper_")] == [0, 1, 1, 1]


def test_the_recipes_share_the_shipped_vae_encoder_and_judge(tmp_path):
    """Stages 1-3 of the recipes' work folder come from the shipped files, in float32, and the build keeps them."""
    recipes.shared_parts(Path("assets/zeroft-toy"), tmp_path, Path("assets/toyworld-judge"))
    shipped = load_file("assets/zeroft-toy/encoder/open_clip_model.safetensors")
    copied = load_file(str(tmp_path / "encoder" / "encoder" / "open_clip_model.safetensors"))
    assert shipped.keys() == copied.keys() and all(v.dtype == torch.float32 for v in copied.values())
    assert all(torch.equal(shipped[k].float(), copied[k]) for k in shipped)
    assert (tmp_path / "judge" / "judge.safetensors").read_bytes() == Path("assets/toyworld-judge/judge.safetensors").read_bytes()
    info = train_vae(tmp_path / "vae", split_identities()[0], 5000, 0)  # finished: kept, not retrained
    assert info["copied_from"].endswith("vae") and not (tmp_path / "vae" / "state.pt").exists()
