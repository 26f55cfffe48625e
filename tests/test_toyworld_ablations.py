"""``python -m toyworld ablations``: a run of some variants keeps the rows of the others."""

import json

from toyworld.ablations import run_ablations


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
    assert written["r=1"]["overrides"] == ["--mix_ratio", "1"] and written["r=1"]["train_seconds"] == 500.0
