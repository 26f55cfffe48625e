"""python -m zeroft.eval dreambench on a fabricated DreamBench layout with tiny models."""

import csv
import json
import math
import shutil
import sys

import pytest
import torch
from hubcache import hub  # noqa: F401 (a fixture, used by name)

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


# ---------------------------------------------------------------- failures: one line, exit 2 or 3, early

@pytest.fixture(scope="module")
def metric_folders(tmp_path_factory):
    """Tiny local CLIP and DINO folders: the metric models that load offline."""
    root = tmp_path_factory.mktemp("metric-models")
    return write_tiny_zero_shot_clip(root / "clip"), write_tiny_dino(root / "dino")


@pytest.fixture
def no_pipeline(monkeypatch):
    """Loading the diffusion pipeline is a test failure: these errors must come before any generation."""
    import zeroft.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the error was found")

    monkeypatch.setattr(zeroft.loading, "load_pipeline", refuse)


@pytest.fixture
def no_models(monkeypatch, no_pipeline):
    """Loading any model is a test failure: these errors need none."""
    import zeroft.eval

    def refuse(*args, **kwargs):
        raise AssertionError("a metric model was loaded before the error was found")

    for name in ("CLIPScorer", "DINOScorer", "KIDScorer"):
        monkeypatch.setattr(zeroft.eval, name, refuse)


def _argv(data, checkpoint, out, metric_folders=None, *extra):
    argv = ["dreambench", "--data", str(data), "--checkpoint", str(checkpoint), "--out", str(out), "--samples", "1",
            "--prompts", "1", "--steps", "1", "--device", "cpu"]
    if metric_folders is not None:
        argv += ["--clip", str(metric_folders[0]), "--dino", str(metric_folders[1]), "--kid-features", "dino"]
    return argv + list(extra)


def _fails(argv, capsys, after_loading=False) -> tuple[int, str]:
    """Run main(argv), which must exit; its status and its one error line.

    ``after_loading``: models loaded before the error, and their loading bars came first.
    """
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and lines[-1] == errors[0], err
    assert after_loading or len(lines) == 1, err
    return exit_info.value.code, lines[-1]


def test_main_hands_the_evaluation_a_typed_frozen_config(tmp_path, monkeypatch):
    import dataclasses

    import zeroft.eval
    from zeroft.eval import DreamBenchConfig
    from zeroft.metrics import MetricModels

    seen = []
    monkeypatch.setattr(zeroft.eval, "evaluate_dreambench", lambda config: seen.append(config) or {"ok": True})
    assert main(["dreambench", "--data", str(tmp_path / "d"), "--ip-adapter-file", str(tmp_path / "a.safetensors"),
                 "--out", str(tmp_path / "o"), "--subjects", "dog", "cat", "--size", "64", "--kid-features", "dino"]) \
        == {"ok": True}
    config = seen[0]
    assert isinstance(config, DreamBenchConfig)
    assert config.data == tmp_path / "d" and config.ip_adapter_file == tmp_path / "a.safetensors"
    assert config.checkpoint is None and config.subjects == ("dog", "cat") and config.size == 64
    assert config.metric_models == MetricModels(kid_features="dino")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.samples = 2


@pytest.mark.parametrize("extra, message", [
    (["--samples", "0"], "--samples: number of images must be between 1 and 8, not 0"),
    (["--size", "60"], "--size must be a multiple of 8, not 60"),
    (["--size", "0"], "--size must be between"),
    (["--prompts", "0"], "--prompts must be a whole number of at least 1, not 0"),
    (["--steps", "0"], "--steps: steps must be between 1 and 150, not 0"),
    (["--seed", "-1"], "--seed: seed must be between 0"),
    (["--object-guidance", "45"], "--object-guidance must be between 0 and 30"),
    (["--subjects", "unicorn"], "Unknown subject(s) unicorn"),
])
def test_bad_settings_are_refused_before_any_model_loads(extra, message, tmp_path, tiny_checkpoint, capsys,
                                                         no_models):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    code, err = _fails(_argv(data, tiny_checkpoint, tmp_path / "out", None, *extra), capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def _no_prompts_file(data):
    (data / "prompts_and_classes.txt").unlink()


def _malformed_prompts_file(data):
    (data / "prompts_and_classes.txt").write_text("subject_name,class\nbackpack,backpack\n")


def _empty_subject(data):
    for image in (data / "dog").iterdir():
        image.unlink()


def _broken_photo(data):
    (data / "teapot" / "01.jpg").write_bytes(b"not a jpeg")


@pytest.mark.parametrize("spoil, message", [
    (lambda data: shutil.rmtree(data), "does not exist or is not a folder"),
    (_no_prompts_file, "prompts_and_classes.txt is missing"),
    (_malformed_prompts_file, "is not in DreamBench's prompts_and_classes.txt format"),
    (_empty_subject, "has no images"),
    (_broken_photo, "01.jpg is not an image file zeroft can read"),
])
def test_bad_data_is_one_line_before_any_model_loads(spoil, message, tmp_path, tiny_checkpoint, capsys, no_models):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    spoil(data)
    code, err = _fails(_argv(data, tiny_checkpoint, tmp_path / "out"), capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_out_naming_an_existing_file_is_refused(tmp_path, tiny_checkpoint, capsys, no_models):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    (tmp_path / "taken").write_text("keep me")
    code, err = _fails(_argv(data, tiny_checkpoint, tmp_path / "taken"), capsys)
    assert code == 2 and "is an existing file, not a folder" in err
    assert (tmp_path / "taken").read_text() == "keep me"


def _random_bytes(path):
    path.write_bytes(bytes(range(256)) * 8)


def _no_adapter_keys(path):
    from safetensors.torch import save_file

    save_file({"unet.conv_in.weight": torch.zeros(4, 4)}, str(path))


@pytest.mark.parametrize("write, message", [(_random_bytes, "is not a safetensors file zeroft can read"),
                                            (_no_adapter_keys, "is not a plain IP-Adapter weight file")])
def test_a_garbage_ip_adapter_file_is_one_line(write, message, tmp_path, capsys, no_models):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    write(tmp_path / "adapter.safetensors")
    argv = ["dreambench", "--data", str(data), "--ip-adapter-file", str(tmp_path / "adapter.safetensors"),
            "--out", str(tmp_path / "out")]
    code, err = _fails(argv, capsys)
    assert code == 2 and "adapter.safetensors" in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("checkpoint, status, message", [
    ("nobody/nothing", 3, "Could not download checkpoint 'nobody/nothing' from the Hugging Face Hub"),
    ("ip-adapter-sd15", 3, "zeroft import-ip-adapter --preset ip-adapter-sd15 --adapter-file"),
    ("no-such-folder", 2, "is neither a local folder nor a Hub repo id"),
])
def test_an_unavailable_checkpoint_is_one_line(checkpoint, status, message, hub, tmp_path, capsys, monkeypatch,
                                               no_models):
    monkeypatch.setenv("ZEROFT_HOME", str(tmp_path / "zeroft-home"))
    monkeypatch.chdir(tmp_path)
    data = write_tiny_dreambench(tmp_path / "dreambench")
    code, err = _fails(_argv(data, checkpoint, tmp_path / "new" / "out"), capsys)
    assert code == status and message in err
    assert not (tmp_path / "new").exists()


def _missing_inception(monkeypatch, metric_folders):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as where torch-fidelity is not installed
    return ["--clip", str(metric_folders[0]), "--dino", str(metric_folders[1]), "--kid-features", "inception"]


@pytest.mark.parametrize("flags, message", [
    (lambda mp, folders: ["--dino", str(folders[1]), "--kid-features", "dino"],
     "Could not load the CLIP model ViT-B-32 with openai weights"),
    (lambda mp, folders: ["--clip", str(folders[0]), "--kid-features", "dino"],
     "Could not load the DINO model facebook/dino-vits16"),
    (_missing_inception, "KID on Inception-v3 features needs the torch-fidelity package"),
])
def test_a_missing_metric_model_fails_before_the_pipeline_loads(flags, message, hub, metric_folders, tmp_path,
                                                                tiny_checkpoint, capsys, monkeypatch, no_pipeline):
    """Offline, with an empty Hub cache: the default CLIP and DINO, and Inception without its package."""
    data = write_tiny_dreambench(tmp_path / "dreambench")
    code, err = _fails(_argv(data, tiny_checkpoint, tmp_path / "new" / "out", None, *flags(monkeypatch, metric_folders)),
                       capsys, after_loading=True)
    assert code == 3 and message in err
    assert not (tmp_path / "new").exists()  # the failed run left no empty --out behind


def test_an_unknown_clip_name_is_bad_input(tmp_path, tiny_checkpoint, metric_folders, capsys, no_pipeline):
    data = write_tiny_dreambench(tmp_path / "dreambench")
    code, err = _fails(_argv(data, tiny_checkpoint, tmp_path / "out", None, "--clip", "ViT-Nonsense",
                             "--dino", str(metric_folders[1]), "--kid-features", "dino"), capsys, after_loading=True)
    assert code == 2 and "'ViT-Nonsense' is neither an open_clip model name" in err


def test_kid_features_load_when_the_scorer_is_made(monkeypatch):
    """The Inception network is loaded with the scorer, not when the images are scored at the end of a run."""
    from zeroft.errors import ModelUnavailableError
    from zeroft.metrics import KIDScorer

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(ModelUnavailableError, match="pip install torch-fidelity, or compute KID on DINO features"):
        KIDScorer("inception", None)
