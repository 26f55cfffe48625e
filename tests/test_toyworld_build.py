"""``python -m toyworld build``: a smoke build of the whole recipe (then its evaluation and diagnostics), lat32, a GPU."""

import json
from dataclasses import replace

import pytest

from toyworld.__main__ import run
from toyworld.budget import QUICK
from toyworld.build import build, trained_steps, zeroft_resume
from zeroft import ZeroFTPipeline
from zeroft.config import ZeroFTConfig
from zeroft.errors import InputError


def test_smoke_build(tmp_path):
    """The whole recipe at a few steps per stage: every stage runs and the export loads and generates."""
    argv = ["build", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--assets", str(tmp_path / "assets"), "--device", "cpu", "--workers", "1"]
    # --until zeroft trains every stage and stops before the sweeps and the export (a GPU trains, the rest later)
    report = run(argv + ["--until", "zeroft"])
    assert set(report["stages"]) == {"vae", "encoder", "judge", "base", "zeroft"}
    assert not (tmp_path / "out").exists() and "guidance_sweep_on_training_identities" not in report
    report = run(argv)  # picks up the trained stages: sweeps and export only
    assert set(report["stages"]) == {"vae", "encoder", "judge", "base", "zeroft"}
    assert report["stages"]["zeroft"]["wall_seconds_this_run"] < 60 and report["guidance_sweep_on_training_identities"]
    assert (report["device"], report["workers"]) == ("cpu", 1)
    assert report["checkpoint_bytes"] < 25 * 2**20
    # the training run's validation grid comes along, and the model card shows it
    assert (tmp_path / "out" / "validation.png").is_file()
    assert "![validation grid](validation.png)" in (tmp_path / "out" / "README.md").read_text()
    pipe = ZeroFTPipeline.from_pretrained(tmp_path / "out", device="cpu")
    examples = json.loads((tmp_path / "assets" / "examples" / "examples.json").read_text())
    out = pipe(examples[0]["prompt"], object_image=tmp_path / "assets" / "examples" / examples[0]["image"],
               num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    assert (tmp_path / "assets" / "toyworld-judge" / "judge.safetensors").is_file()

    # The pattern diagnostic runs on the build: one confusion matrix per source and split, over every pair.
    result = run(["patterns", "--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--steps", "2",
                  "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"),
                  "--out", str(tmp_path / "patterns"), "--identities", "2"])
    for split in ("held-out", "training"):
        rows = result["results"][split]
        for source in ("base, full caption", "zeroft, full caption", "zeroft, object photo"):
            assert sum(map(sum, rows[source]["matrix"])) == rows["pairs"] == 16  # 2 identities x 8 contexts
            assert 0.0 <= rows[source]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "patterns" / "patterns.json").read_text())["results"] == result["results"]

    # The evaluation runs on the build: every row over its pairs, the fine-tuning baseline timed, curve and grid drawn.
    run(["eval", "--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "eval"),
         "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"), "--references", "1",
         "--finetune-objects", "1", "--finetune-steps", "1", "--curve", "--curve-points", "2", "--device", "cpu",
         "--identities", "2"])
    report = json.loads((tmp_path / "eval" / "toyworld_eval.json").read_text())
    rows = report["rows"]
    assert rows["zeroft"]["pairs"] == 16 and rows["text only (w_obj = 0)"]["pairs"] == 16  # 2 identities x 8
    assert rows["per-object fine-tuning (1 objects)"]["pairs"] == 8
    assert rows["per-object fine-tuning (1 objects)"]["seconds_per_object"] > 0
    assert all(0.0 <= row[m] <= 1.0 for row in rows.values() for m in ("identity", "text", "both"))
    assert report["device"] == "cpu" and 1 <= len(report["curve"]) <= 2
    assert (tmp_path / "eval" / "samples.png").is_file() and (tmp_path / "eval" / "curve.png").is_file()

    # The efficiency benchmark runs on the build: zeroft's encoder pass timed, the same baseline fine-tuned and scored.
    result = run(["personalization", "--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                  "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"), "--objects", "1",
                  "--every", "1", "--max-steps", "1"])
    (tuned,) = result["objects"]
    assert tuned["zeroft_seconds"] > 0 and tuned["finetune"]["steps"] == 1 and len(tuned["finetune"]["history"]) == 1

    # A build stopped part way is scored at another checkpoint's defaults: its saved states only, no table rows.
    config = ZeroFTConfig.load(tmp_path / "out")
    (tmp_path / "defaults").mkdir()
    config.replace(defaults=replace(config.defaults, text_guidance=7.5, object_guidance=5.0, steps=1),
                   encoder=replace(config.encoder, views="rot4")).save(tmp_path / "defaults")
    curve_only = ["eval", "--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--curve-only",
                  "--curve-points", "1", "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"),
                  "--out", str(tmp_path / "curve"), "--device", "cpu", "--identities", "2"]
    report = run(curve_only + ["--defaults-from", str(tmp_path / "defaults")])
    assert "rows" not in report and report["views"] == "rot4" and report["pairs"] == 16
    assert report["guidance"] == {"text": 7.5, "object": 5.0} and report["sampler_steps"] == 1
    assert len(report["curve"]) == 1 and 0.0 <= report["curve"][0]["pattern_acc"] <= 1.0
    assert json.loads((tmp_path / "curve" / "toyworld_eval.json").read_text())["curve"] == report["curve"]
    with pytest.raises(InputError, match="--defaults-from .*zeroft_config.json is missing"):
        run(curve_only + ["--defaults-from", str(tmp_path / "nothing")])

    # A larger zeroft budget trains on from the last state instead of reusing the stale export.
    runs = tmp_path / "work" / "zeroft"
    final = runs / "final"
    assert trained_steps(final) == QUICK.zeroft
    # (defaults taken from a checkpoint: the sweeps already ran above, and cost most of this test's time)
    report = build(tmp_path / "work", tmp_path / "out", tmp_path / "assets", replace(QUICK, zeroft=QUICK.zeroft + 1),
                   defaults_from=tmp_path / "defaults")
    assert trained_steps(final) == report["stages"]["zeroft"]["steps"] == QUICK.zeroft + 1
    assert report["defaults_from"]["views"] == "rot4" and "guidance_sweep_on_training_identities" not in report
    assert trained_steps(tmp_path / "nothing") is None
    # Back to the smaller budget, the build resumes the state saved at exactly that step (train.train refuses to
    # resume a later one: tests/test_train.py); an unseen budget resumes the newest.
    assert zeroft_resume(runs, QUICK.zeroft) == str(runs / f"checkpoint-{QUICK.zeroft}")
    assert zeroft_resume(runs, QUICK.zeroft + 5) == "latest"
    # A run stopped early (a time-limited GPU): --zeroft-steps N re-exports the state saved at step N.
    report = run(argv + ["--until", "zeroft", "--zeroft-steps", "1"])
    assert trained_steps(final) == report["stages"]["zeroft"]["steps"] == 1


def test_quick_build_with_the_lat32_unet(tmp_path):
    """--unet lat32 trains its own 2×-down VAE and a base on 32×32 latents; zeroft trains and exports on them.
    (The sweeps and the fp16 export after zeroft do not depend on the variant: test_smoke_build runs them.)"""
    # Only the sweeps read the judge, and its training does not depend on the variant: mark it finished to save time.
    (tmp_path / "work" / "judge").mkdir(parents=True)
    (tmp_path / "work" / "judge" / "done.json").write_text(json.dumps({"steps": 3, "seconds": 0.0}))
    report = run(["build", "--quick", "--unet", "lat32", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                  "--assets", str(tmp_path / "assets"), "--device", "cpu", "--workers", "0", "--until", "zeroft"])
    assert report["stages"]["vae"]["latent_size"] == 32 and report["stages"]["base"]["unet"] == "lat32"
    pipe = ZeroFTPipeline.from_pretrained(tmp_path / "work" / "zeroft" / "final", device="cpu")
    assert pipe.unet.config.sample_size == 32 and pipe.vae.config.latent_channels == 4
    examples = json.loads((tmp_path / "assets" / "examples" / "examples.json").read_text())
    out = pipe(examples[0]["prompt"], object_image=tmp_path / "assets" / "examples" / examples[0]["image"],
               num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    # The same work folder cannot turn into a v1 build: its VAE is the wrong one.
    with pytest.raises(InputError, match="VAE onto 32² latents, not 16²"):
        run(["build", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out2"),
             "--assets", str(tmp_path / "assets"), "--device", "cpu", "--workers", "0"])


@pytest.mark.gpu
def test_quick_build_on_a_gpu(tmp_path):
    report = run(["build", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                  "--assets", str(tmp_path / "assets"), "--device", "cuda"])
    assert report["device"] != "cpu" and report["stages"]["zeroft"]["steps"] > 0
