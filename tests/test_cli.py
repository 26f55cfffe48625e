"""python -m zeroft: generate, mask, errors as plain messages with exit codes, no overwrites."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from zeroft.cli import main

from conftest import square_photo

ROOT = Path(__file__).resolve().parent.parent


def test_generate_end_to_end_in_a_subprocess(tiny_checkpoint, tmp_path):
    photo = tmp_path / "photo.png"
    square_photo().save(photo)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "zeroft", "generate", "--checkpoint", str(tiny_checkpoint), "--image", str(photo),
         "--prompt", "a red square", "--num-images", "2", "--steps", "2", "--seed", "7",
         "--text-guidance", "4", "--object-guidance", "2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads((out / "zeroft_001.json").read_text())
    assert settings["seeds"] == [7, 8] and settings["text_guidance"] == 4.0 and settings["object_guidance"] == 2.0
    assert len(settings["outputs"]) == 2
    for name in settings["outputs"]:
        assert Image.open(out / name).size == (64, 64)
    assert (out / "zeroft_001_mask0.png").is_file()


def test_second_run_does_not_overwrite(tiny_checkpoint, tmp_path):
    photo = tmp_path / "photo.png"
    square_photo().save(photo)
    argv = ["generate", "--checkpoint", str(tiny_checkpoint), "--image", str(photo), "--prompt", "x",
            "--steps", "1", "--seed", "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0 and main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["zeroft_001.json", "zeroft_002.json"]


def test_user_mask_and_several_photos(tiny_checkpoint, tmp_path):
    paths = []
    for index, colour in enumerate([(200, 20, 20), (210, 30, 10)]):
        square_photo(colour=colour).save(tmp_path / f"p{index}.png")
        paths.append(str(tmp_path / f"p{index}.png"))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    argv = ["generate", "--checkpoint", str(tiny_checkpoint), "--image", *paths, "--mask", str(tmp_path / "m.png"),
            str(tmp_path / "m.png"), "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0


def test_mask_command(tiny_checkpoint, tmp_path):
    square_photo().save(tmp_path / "photo.png")
    assert main(["mask", str(tmp_path / "photo.png"), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "mask.png")]) == 0
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    assert mask[32, 32] == 255 and mask[0, 0] == 0


def test_bad_input_is_one_plain_line(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    code = main(["generate", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "junk.png"),
                 "--prompt", "x", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "error: The reference photo is not an image file zeroft can read (PNG, JPEG, WebP, ...)."


def test_out_of_range_setting(tiny_checkpoint, tmp_path, capsys):
    square_photo().save(tmp_path / "photo.png")
    code = main(["generate", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "photo.png"),
                 "--prompt", "x", "--object-guidance", "45", "--out", str(tmp_path / "out")])
    assert code == 2 and "object guidance must be between 0 and 30" in capsys.readouterr().err


def test_mismatched_mask_count(tiny_checkpoint, tmp_path, capsys):
    square_photo().save(tmp_path / "photo.png")
    code = main(["generate", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "photo.png"),
                 str(tmp_path / "photo.png"), "--mask", str(tmp_path / "photo.png"), "--prompt", "x",
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "one mask per photo" in capsys.readouterr().err


def test_unreachable_hub_exits_3(tmp_path, capsys):
    square_photo().save(tmp_path / "photo.png")
    code = main(["generate", "--checkpoint", "nobody/nothing", "--image", str(tmp_path / "photo.png"),
                 "--prompt", "x", "--out", str(tmp_path / "out")])
    assert code == 3 and "Hugging Face Hub" in capsys.readouterr().err
