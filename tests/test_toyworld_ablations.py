"""``python -m toyworld ablations``: each variant is the recipe with its overrides, and a run of some variants keeps
the rows of the others."""

import json

from toyworld.ablations import VARIANTS, run_ablations
from toyworld.recipe import Budget, train_config, with_overrides


def test_every_variant_is_the_recipe_with_its_overrides(tmp_path):
    recipe = train_config(tmp_path, Budget(zeroft=500), 0, [], tmp_path / "ablations" / "recipe")
    for name, overrides in VARIANTS.items():
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
