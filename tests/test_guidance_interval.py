"""Guidance on an interval of noise levels: the pure rule, σ from the scheduler, the loop's branches, the settings,
the checkpoint default, the CLI flag and the budget's accounting."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler
from zeroft import InputError, ZeroFTConfig
from zeroft.cli import main
from zeroft.guidance import PAPER_SDXL_INTERVAL, check_interval, noise_levels, step_branches
from zeroft.timing import BudgetWatch, StepWork

from conftest import FakeClock, square_photo

SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_check_interval_accepts_two_ordered_finite_levels_and_names_every_fault():
    assert check_interval((0.28, 5.42)) == PAPER_SDXL_INTERVAL
    assert check_interval([0, 1]) == (0.0, 1.0)
    for off in (None, False, "off", " OFF "):
        assert check_interval(off) is None
    faults = {(1, 1): "must be below", (3, 2): "must be below", (-0.1, 2): "0 or more",
              (float("nan"), 2): "finite", (0, math.inf): "finite", (True, 2): "finite", (3,): "two noise levels",
              "0.3 5": "two noise levels", 5: "two noise levels"}
    for interval, words in faults.items():
        with pytest.raises(InputError, match=words):
            check_interval(interval)


def test_step_branches_runs_everything_inside_and_one_conditional_branch_outside():
    three = ["uncond", "text", "object"]
    assert step_branches(three, 3.0, None) == three
    assert step_branches(three, 3.0, (0.28, 5.42)) == three
    assert step_branches(three, 5.42, (0.28, 5.42)) == three  # (lo, hi]: the high end is in
    assert step_branches(three, 0.28, (0.28, 5.42)) == ["object"]  # the low end is out
    assert step_branches(three, 14.6, (0.28, 5.42)) == ["object"]
    assert step_branches(["uncond", "text"], 9.0, (0.28, 5.42)) == ["text"]  # no object: (c,ϕ)
    assert step_branches(["uncond", "object"], 9.0, (0.28, 5.42)) == ["object"]  # equal weights


def test_noise_levels_are_the_schedulers_own_sigmas():
    """σ = √((1 − ᾱ_t)/ᾱ_t): what Euler keeps as its sigmas, for DDIM and PNDM too; fractional (Karras) timesteps
    are interpolated."""
    euler = EulerDiscreteScheduler(**SD_SCHEDULE)
    euler.set_timesteps(20)
    assert np.allclose(noise_levels(euler, euler.timesteps), euler.sigmas[:-1].numpy(), rtol=1e-4)
    karras = EulerDiscreteScheduler(**SD_SCHEDULE, use_karras_sigmas=True)
    karras.set_timesteps(20)
    assert np.allclose(noise_levels(karras, karras.timesteps), karras.sigmas[:-1].numpy(), rtol=0.02)
    for kind in (DDIMScheduler, PNDMScheduler):
        scheduler = kind(**SD_SCHEDULE)
        scheduler.set_timesteps(20)
        levels = noise_levels(scheduler, scheduler.timesteps)
        assert len(levels) == len(scheduler.timesteps) and levels[0] > 10 and levels[-1] < 0.3
        assert all(a >= b for a, b in zip(levels, levels[1:]))


def _count_unet_batches(pipe):
    """Record the UNet's batch size at every call; returns (list, remove-hook)."""
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes, handle.remove


@pytest.mark.parametrize("pipe_name", ["tiny_pipe", "tiny_sdxl_pipe"])
def test_outside_the_interval_one_branch_runs_and_inside_all_three(request, pipe_name, photo):
    pipe = request.getfixturevalue(pipe_name)
    pipe.scheduler.set_timesteps(6)
    levels = noise_levels(pipe.scheduler, pipe.scheduler.timesteps)
    interval = ((levels[4] + levels[3]) / 2, (levels[1] + levels[2]) / 2)  # steps 2 and 3 inside
    sizes, remove = _count_unet_batches(pipe)
    try:
        out = pipe("a red square", object_image=photo, num_images=2, text_guidance=5.0, object_guidance=3.0,
                   num_inference_steps=6, seed=0, guidance_interval=interval, output_type="latent")
    finally:
        remove()
    assert sizes == [2, 2, 6, 6, 2, 2]  # N = 2 images; 3 branches at steps 2 and 3, inside
    assert out.settings.guidance_interval == list(interval)
    json.dumps(out.settings.to_dict())  # the settings stay JSON


@pytest.mark.parametrize("pipe_name", ["tiny_pipe", "tiny_sdxl_pipe"])
def test_off_and_a_full_interval_are_bit_identical_to_no_interval(request, pipe_name, photo):
    pipe = request.getfixturevalue(pipe_name)
    common = dict(object_image=photo, num_images=2, text_guidance=5.0, object_guidance=3.0, num_inference_steps=3,
                  seed=4, output_type="np")
    plain = pipe("a red square", **common)
    assert plain.settings.guidance_interval is None
    for interval in ("off", False, (0.0, 1e6)):
        assert np.array_equal(pipe("a red square", guidance_interval=interval, **common).images, plain.images)
    narrow = pipe("a red square", guidance_interval=(0.5, 2.0), **common)
    assert not np.array_equal(narrow.images, plain.images)


def test_no_object_outside_the_interval_is_the_text_branch(tiny_pipe):
    """No photo: outside the interval the (c,ϕ) branch, which equals guidance weight 1 there."""
    common = dict(num_inference_steps=3, seed=2, output_type="np")
    nowhere = tiny_pipe("a red square", text_guidance=5.0, guidance_interval=(1e5, 1e6), **common)
    weight_one = tiny_pipe("a red square", text_guidance=1.0, **common)
    assert np.allclose(nowhere.images, weight_one.images, atol=1e-6)


def test_a_checkpoint_default_interval_is_used_saved_and_turned_off(tiny_checkpoint, tmp_path, photo):
    from zeroft import ZeroFTPipeline

    config = ZeroFTConfig.load(tiny_checkpoint)
    assert "guidance_interval" not in json.loads(config.to_json())["defaults"]  # unset: not written at all
    with_interval = config.replace(defaults=config.defaults.__class__(**{**config.defaults.__dict__,
                                                                         "guidance_interval": (0.5, 2.0)}))
    assert ZeroFTConfig.from_dict(json.loads(with_interval.to_json())).defaults.guidance_interval == (0.5, 2.0)
    pipe = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.zeroft_config = with_interval
    common = dict(object_image=photo, num_inference_steps=2, seed=0, output_type="latent")
    assert pipe("x", **common).settings.guidance_interval == [0.5, 2.0]
    assert pipe("x", guidance_interval="off", **common).settings.guidance_interval is None
    assert pipe("x", guidance_interval=(0.1, 0.2), **common).settings.guidance_interval == [0.1, 0.2]


def test_the_cli_flag_takes_two_levels_or_off_and_refuses_the_rest(tiny_checkpoint, tmp_path, capsys):
    square_photo().save(tmp_path / "photo.png")
    base = ["generate", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "photo.png"), "--prompt", "x",
            "--steps", "2", "--seed", "1"]
    assert main(base + ["--guidance-interval", "0.28", "5.42", "--out", str(tmp_path / "out")]) == 0
    settings = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert settings["guidance_interval"] == [0.28, 5.42]
    assert main(base + ["--guidance-interval", "off", "--out", str(tmp_path / "off")]) == 0
    assert json.loads(next((tmp_path / "off").glob("*.json")).read_text())["guidance_interval"] is None
    capsys.readouterr()
    for words, message in ((["5", "1"], "must be below"), (["3"], "two noise levels"), (["a", "b"], "two noise levels"),
                           (["-1", "2"], "0 or more")):
        code = main(base + ["--guidance-interval", *words, "--out", str(tmp_path / "bad")])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_budget_probes_outside_the_interval_count_as_mean_steps():
    """A one-branch probe step is recorded at what a mean step would cost, so a request is not let through on
    cheap probes: 3 s for a 1-branch step with a mean of 2 branches is a 6 s step."""
    clock = FakeClock(3.0)
    work = StepWork(steps=10, num_images=1, height=64, width=64, native_size=64, branches=2.0)
    watch = BudgetWatch(budget=40.0, work=work, seconds_per_step=5.0, remeasure=lambda: 5.0, clock=clock)
    assert watch.probing  # 10 x 5 s > 40 s
    with pytest.raises(InputError, match="over the 40 s limit"):
        for _ in range(2):
            watch.begin_step()
            watch.end_step(1 / 2.0)  # 3 s measured, one branch of a mean 2: 6 s a mean step, 60 s in all
