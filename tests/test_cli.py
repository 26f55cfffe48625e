"""python -m zeroft: generate, mask, errors as plain messages with exit codes, no overwrites."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeroft.cli import main

from conftest import square_photo
from hubcache import hub  # noqa: F401 (a fixture, used by name)

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
    assert settings["masks"] == ["automatic:border"] and settings["mask_files"] is None and "masker" not in settings


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


@pytest.fixture
def no_loading(monkeypatch):
    """Make loading the model a test failure: these errors must come before it."""
    import zeroft.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(zeroft.loading, "load_pipeline", refuse)


def _generate_argv(checkpoint, tmp_path, *extra, out=None):
    square_photo().save(tmp_path / "photo.png")
    return ["generate", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "photo.png"), "--prompt", "x",
            "--steps", "1", "--out", str(out if out is not None else tmp_path / "out"), *extra]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_out_naming_an_existing_file_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys, no_loading):
    (tmp_path / "taken.txt").write_text("keep me")
    assert main(_generate_argv(tiny_checkpoint, tmp_path, out=tmp_path / "taken.txt")) == 2
    assert "is an existing file, not a folder" in _one_error_line(capsys)
    assert (tmp_path / "taken.txt").read_text() == "keep me"


def test_out_under_a_file_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys, no_loading):
    (tmp_path / "file").write_text("")
    assert main(_generate_argv(tiny_checkpoint, tmp_path, out=tmp_path / "file" / "out")) == 2
    assert "Cannot write to the output folder" in _one_error_line(capsys)


def _read_only(monkeypatch, folder):
    """Writes into ``folder`` fail as in a read-only directory, also for root (whom chmod does not stop)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == Path(folder) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_read_only_out_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys, monkeypatch, no_loading):
    (tmp_path / "locked").mkdir()
    _read_only(monkeypatch, tmp_path / "locked")
    assert main(_generate_argv(tiny_checkpoint, tmp_path, out=tmp_path / "locked")) == 2
    assert "Cannot write to the output folder" in _one_error_line(capsys)


def test_mask_out_in_a_read_only_folder_is_one_plain_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    square_photo().save(tmp_path / "photo.png")
    (tmp_path / "locked").mkdir()
    _read_only(monkeypatch, tmp_path / "locked")
    mask_argv = ["mask", str(tmp_path / "photo.png"), "--masker", "border", "--out"]
    assert main(mask_argv + [str(tmp_path / "locked" / "m.png")]) == 2
    assert "Permission denied" in _one_error_line(capsys)
    (tmp_path / "file").write_text("")
    code = main(mask_argv + [str(tmp_path / "file" / "m.png")])
    assert code == 2 and "is an existing file, not a folder" in _one_error_line(capsys)


@pytest.mark.parametrize("command", ["generate", "mask"])
def test_unknown_masker_is_one_plain_line(command, tiny_checkpoint, tmp_path, capsys, no_loading):
    if command == "generate":
        argv = _generate_argv(tiny_checkpoint, tmp_path, "--masker", "bogus")
    else:
        square_photo().save(tmp_path / "photo.png")
        argv = ["mask", str(tmp_path / "photo.png"), "--masker", "bogus", "--out", str(tmp_path / "m.png")]
    assert main(argv) == 2
    assert "unknown masker 'bogus'" in _one_error_line(capsys)


@pytest.mark.parametrize("device, message", [
    ("cuda", "needs an NVIDIA GPU with CUDA, and this machine has none"),
    ("cuda:0", "needs an NVIDIA GPU with CUDA"),
    ("nonsense", "Unknown device 'nonsense'; use cpu, cuda, cuda:<index> or mps"),
])
def test_unusable_device_is_one_plain_line(device, message, tiny_checkpoint, tmp_path, capsys, monkeypatch,
                                           no_loading):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with a GPU
    assert main(_generate_argv(tiny_checkpoint, tmp_path, "--device", device)) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_size_over_the_models_limit_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys, no_loading):
    assert main(_generate_argv(tiny_checkpoint, tmp_path, "--height", "2048", "--device", "cpu")) == 2
    assert "height must be between 32 and 96 pixels for this model on a CPU" in _one_error_line(capsys)


def test_time_budget_flag_refuses_a_long_request(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from zeroft.pipeline import ZeroFTPipeline

    def slow_machine(self, clock=None, warm_up=True):  # one UNet call of one image takes 30 s, every time
        self.unit_seconds = 30.0
        return 30.0

    monkeypatch.setattr(ZeroFTPipeline, "measure_unit_seconds", slow_machine)
    assert main(_generate_argv(tiny_checkpoint, tmp_path, "--time-budget", "5")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the loading bars: the budget needs the model
    assert last.startswith("error: This request would take about 90 s") and "over the 5 s limit" in last
    assert not (tmp_path / "out").exists()  # refused after loading: no empty output folder is left behind
    assert main(_generate_argv(tiny_checkpoint, tmp_path, "--time-budget", "-1")) == 2
    assert "--time-budget must be a positive number" in _one_error_line(capsys)


def test_checkpoint_folder_with_only_its_config_is_one_plain_line(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "bare").mkdir()
    shutil.copy(tiny_checkpoint / "zeroft_config.json", tmp_path / "bare")
    assert main(_generate_argv(tmp_path / "bare", tmp_path)) in (2, 3)
    _one_error_line(capsys)


def test_progress_bar_follows_the_schedulers_total(tiny_checkpoint, tmp_path, capsys):
    """PNDM (SD1.5's default) calls the UNet steps + 1 times, then the VAE decodes: the bar must end at 4/4 (3 UNet
    calls and the decode), not 3/2, and not sit at its end during the decode."""
    from diffusers import PNDMScheduler

    checkpoint = tmp_path / "pndm"
    shutil.copytree(tiny_checkpoint, checkpoint)
    scheduler_dir = checkpoint / "base" / "scheduler"
    config = json.loads((scheduler_dir / "scheduler_config.json").read_text())
    PNDMScheduler.from_config(config, skip_prk_steps=True).save_config(scheduler_dir)  # as SD1.5 has it
    index = json.loads((checkpoint / "base" / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "PNDMScheduler"]
    (checkpoint / "base" / "model_index.json").write_text(json.dumps(index))
    argv = _generate_argv(checkpoint, tmp_path, "--seed", "1")
    argv[argv.index("--steps") + 1] = "2"
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "4/4" in err and not re.search(r"\b\d+/[23]\b", err), err


def test_import_ip_adapter_names_the_encoder_a_mismatched_file_needs(tmp_path, capsys):
    """A 1024-d (ViT-H/14) adapter file given as the bigG preset: one line saying which encoder it needs."""
    from safetensors.torch import save_file

    cross = 2048
    state = {"image_proj.proj.weight": torch.zeros(4 * cross, 1024), "image_proj.proj.bias": torch.zeros(4 * cross),
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross),
             "ip_adapter.1.to_k_ip.weight": torch.zeros(8, cross), "ip_adapter.1.to_v_ip.weight": torch.zeros(8, cross)}
    save_file(state, str(tmp_path / "ip-adapter_sdxl_vit-h.safetensors"))
    code = main(["import-ip-adapter", "--preset", "ip-adapter-sdxl", "--out", str(tmp_path / "out"),
                 "--adapter-file", str(tmp_path / "ip-adapter_sdxl_vit-h.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ViT-H/14" in err and "1024-d" in err
    assert not (tmp_path / "out").exists()


def _plain_ip_adapter(path, embed_dim=1024, cross=8):
    """A plain IP-Adapter file of the SD1.5 preset's widths (ViT-H/14: 1024-d), zeros."""
    from safetensors.torch import save_file

    save_file({"image_proj.proj.weight": torch.zeros(4 * cross, embed_dim), "image_proj.proj.bias": torch.zeros(4 * cross),
               "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross),
               "ip_adapter.1.to_k_ip.weight": torch.zeros(8, cross)}, str(path))
    return path


def _no_image_proj(path):
    from safetensors.torch import save_file

    save_file({"ip_adapter.1.to_k_ip.weight": torch.zeros(8, 8)}, str(path))


@pytest.mark.parametrize("write, message", [
    (lambda path: path.write_bytes(os.urandom(1000)), "is not a safetensors file zeroft can read"),
    (_no_image_proj, "is not a plain IP-Adapter weight file"),
])
def test_import_ip_adapter_refuses_a_garbage_file_in_one_line(write, message, tmp_path, capsys):
    write(tmp_path / "x.safetensors")
    code = main(["import-ip-adapter", "--out", str(tmp_path / "out"), "--adapter-file", str(tmp_path / "x.safetensors")])
    assert code == 2 and message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_import_ip_adapter_out_naming_an_existing_file_is_one_line(tmp_path, capsys):
    adapter = _plain_ip_adapter(tmp_path / "ip-adapter_sd15.safetensors")
    (tmp_path / "taken").write_text("keep me")
    code = main(["import-ip-adapter", "--out", str(tmp_path / "taken"), "--adapter-file", str(adapter)])
    assert code == 2 and "is an existing file, not a folder" in _one_error_line(capsys)
    assert (tmp_path / "taken").read_text() == "keep me"
    assert main(["import-ip-adapter", "--out", str(tmp_path / "ok"), "--adapter-file", str(adapter)]) == 0
    assert (tmp_path / "ok" / "adapter.safetensors").is_file()


def test_import_ip_adapter_offline_names_its_own_option(hub, tmp_path, capsys):
    code = main(["import-ip-adapter", "--preset", "ip-adapter-sdxl", "--out", str(tmp_path / "out")])
    err = _one_error_line(capsys)
    assert code == 3 and "Could not download sdxl_models/ip-adapter_sdxl.safetensors" in err
    assert (f"zeroft import-ip-adapter --preset ip-adapter-sdxl --adapter-file <path to ip-adapter_sdxl.safetensors> "
            f"--out {tmp_path / 'out'}") in err


def test_a_preset_offline_advises_a_command_that_makes_it_work(hub, tmp_path, capsys, monkeypatch, no_loading):
    """generate --checkpoint ip-adapter-sd15 cannot take a file: its advice is a command, and that command works."""
    monkeypatch.setenv("ZEROFT_HOME", str(tmp_path / "home"))
    assert main(_generate_argv("ip-adapter-sd15", tmp_path)) == 3
    err = _one_error_line(capsys)
    advice = err.partition("import it with: ")[2]
    assert advice.startswith("zeroft import-ip-adapter --preset ip-adapter-sd15 --adapter-file") and "local copy" not in err
    adapter = _plain_ip_adapter(tmp_path / "ip-adapter_sd15.safetensors")
    argv = shlex.split(advice.replace("<path to ip-adapter_sd15.safetensors>", shlex.quote(str(adapter))))
    assert main(argv[1:]) == 0  # followed to the letter
    from zeroft.presets import preset_folder

    monkeypatch.setattr("zeroft.presets.import_ip_adapter", lambda *a, **k: pytest.fail("downloaded again"))
    assert (preset_folder("ip-adapter-sd15") / "adapter.safetensors").is_file()


def test_mask_offline_without_the_rembg_model_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    square_photo().save(tmp_path / "photo.png")
    code = main(["mask", "--masker", "rembg:u2net", str(tmp_path / "photo.png"), "--out", str(tmp_path / "m.png")])
    err = _one_error_line(capsys)
    assert code == 3 and "u2net.onnx" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "m.png").exists()


def test_mask_of_a_photo_with_no_object_advises_what_this_command_takes(tmp_path, capsys):
    Image.new("RGB", (64, 64), (30, 30, 220)).save(tmp_path / "plain.png")
    code = main(["mask", "--masker", "border", str(tmp_path / "plain.png"), "--out", str(tmp_path / "m.png")])
    err = _one_error_line(capsys)
    assert code == 2 and "the border masker found no object in this photo" in err
    assert "(--mask on the command line)" not in err and "--masker rembg:u2net" in err
    assert "zeroft generate with --mask" in err
