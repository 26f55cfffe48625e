"""python -m zeroft.eval dreambench on a fabricated DreamBench layout with tiny models."""

import csv
import math
import json

import pytest
import torch

from train.tiny_data import DREAMBENCH_PROMPTS, write_tiny_dino, write_tiny_dreambench, write_tiny_zero_shot_clip
from zeroft.eval import format_prompt, main, parse_prompts_and_classes
from zeroft.metrics import mean_pairwise_cosine


def test_prompt_file_parses_like_the_official_one(tmp_path):
    path = tmp_path / "prompts_and_classes.txt"
    path.write_text(DREAMBENCH_PROMPTS)
    classes, object_prompts, live_prompts = parse_prompts_and_classes(path)
    assert classes == {"backpack": "backpack", "dog": "dog", "teapot": "teapot"}
    assert object_prompts[0] == "a {0} {1} in the jungle" and live_prompts[1] == "a {0} {1} wearing a red hat"
    assert format_prompt("a {0} {1} in the snow", "stuffed animal") == "a stuffed animal in the snow"


def test_mean_pairwise_cosine():
    a = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    assert mean_pairwise_cosine(a[:1], a[:1]) == pytest.approx(1.0)
    assert mean_pairwise_cosine(a, a) == pytest.approx(float((a @ a.T).mean()))


def test_dreambench_end_to_end(tmp_path, tiny_checkpoint):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    clip, dino = write_tiny_zero_shot_clip(tmp_path / "clip"), write_tiny_dino(tmp_path / "dino")
    report = main(["dreambench", "--data", str(data), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                   "--samples", "2", "--steps", "2", "--clip", str(clip), "--dino", str(dino), "--kid-features", "dino",
                   "--device", "cpu"])
    assert report["subjects"] == 3 and report["images"] == 3 * 3 * 2
    for metric in ("dino", "clip_i", "clip_t", "dino_reference", "clip_i_reference"):
        assert -1.0 <= report["overall"][metric] <= 1.0
    assert report["metric_models"]["dino"] == str(dino) and report["settings"]["samples"] == 2
    assert math.isfinite(report["kid"]["mean"])
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_subject.csv")))
    assert [r["subject"] for r in rows] == ["backpack", "dog", "teapot"] and rows[0]["reference"] == "00.jpg"
    assert (tmp_path / "out" / "samples.png").is_file()
    assert json.loads((tmp_path / "out" / "overall.json").read_text())["reference_rule"].startswith("first image")


def test_dreambench_runs_on_an_sdxl_checkpoint(tmp_path, tiny_sdxl_checkpoint):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    clip, dino = write_tiny_zero_shot_clip(tmp_path / "clip"), write_tiny_dino(tmp_path / "dino")
    report = main(["dreambench", "--data", str(data), "--checkpoint", str(tiny_sdxl_checkpoint), "--out",
                   str(tmp_path / "out"), "--subjects", "dog", "teapot", "--prompts", "1", "--samples", "2",
                   "--steps", "2", "--clip", str(clip), "--dino", str(dino), "--kid-features", "dino", "--device", "cpu"])
    assert report["subjects"] == 2 and report["images"] == 2 * 1 * 2
    assert all(-1.0 <= report["overall"][m] <= 1.0 for m in ("dino", "clip_i", "clip_t"))
